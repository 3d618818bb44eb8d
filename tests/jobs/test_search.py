"""Resuming a search: only the store's "not found" means the parent run is gone; any other failure of the
store stops the resume with a message instead of opening a second parent run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from xraycnn.errors import XrayCnnError
from xraycnn.jobs.search import _run_exists
from xraycnn.tracking.store import ensure_experiment, resolve_store


def session_on(client: object, experiment_id: str = "1") -> SimpleNamespace:
    return SimpleNamespace(
        runs=SimpleNamespace(client=client),
        store=SimpleNamespace(uri="http://tracking:5000"),
        experiment_id=experiment_id,
    )


def test_a_run_the_store_does_not_have_is_not_there(store_uri: str) -> None:
    store = resolve_store(store_uri)
    experiment_id = ensure_experiment(store, "xraycnn-resume", {})
    client = store.client()
    assert not _run_exists(session_on(client, experiment_id), "0" * 32)
    run_id = client.create_run(experiment_id).info.run_id
    assert _run_exists(session_on(client, experiment_id), run_id)
    assert not _run_exists(session_on(client, "other"), run_id)  # another experiment's run is not ours
    client.delete_run(run_id)
    assert not _run_exists(session_on(client, experiment_id), run_id)


def test_a_store_that_fails_stops_the_resume() -> None:
    class Unreachable:
        def get_run(self, run_id: str) -> None:
            raise MlflowException("API request failed: connection refused", error_code=TEMPORARILY_UNAVAILABLE)

    with pytest.raises(XrayCnnError) as info:
        _run_exists(session_on(Unreachable()), "a" * 32)
    message = str(info.value)
    assert "cannot tell whether the search's parent run aaaa" in message and "http://tracking:5000" in message
    assert "TEMPORARILY_UNAVAILABLE: API request failed" in message and "run the same command again" in message
