"""Resuming a search: only the store's "not found" means the parent run is gone; any other failure of the
store stops the resume with a message instead of opening a second parent run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from tests.tiny_search import EXPERIMENT, MODEL, seed_store, xraycnn
from xraycnn.errors import XrayCnnError
from xraycnn.jobs.parent import run_exists
from xraycnn.tracking.runs import RunLogger
from xraycnn.tracking.store import ensure_experiment, resolve_store


def session_on(client: object, experiment_id: str = "1") -> SimpleNamespace:
    return SimpleNamespace(
        store=SimpleNamespace(uri="http://tracking:5000", client=lambda: client),
        experiment_id=experiment_id,
    )


def test_a_run_the_store_does_not_have_is_not_there(store_uri: str) -> None:
    store = resolve_store(store_uri)
    experiment_id = ensure_experiment(store, "xraycnn-resume", {})
    client = store.client()
    assert not run_exists(session_on(client, experiment_id), "0" * 32)
    run_id = client.create_run(experiment_id).info.run_id
    assert run_exists(session_on(client, experiment_id), run_id)
    assert not run_exists(session_on(client, "other"), run_id)  # another experiment's run is not ours
    client.delete_run(run_id)
    assert not run_exists(session_on(client, experiment_id), run_id)


def test_a_store_that_fails_stops_the_resume() -> None:
    class Unreachable:
        def get_run(self, run_id: str) -> None:
            raise MlflowException("API request failed: connection refused", error_code=TEMPORARILY_UNAVAILABLE)

    with pytest.raises(XrayCnnError) as info:
        run_exists(session_on(Unreachable()), "a" * 32)
    message = str(info.value)
    assert "cannot tell whether the search's parent run aaaa" in message and "http://tracking:5000" in message
    assert "TEMPORARILY_UNAVAILABLE: API request failed" in message and "run the same command again" in message


@pytest.mark.slow
def test_failed_mlflow_writes_end_the_search_with_exit_status_3(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real CLI, with every trial's learning-curve PNG refused by the store (a permission error, injected
    where the runs are written; the store itself answers): the search finishes, registers its champion, and
    exits 3 saying why; the parent run carries the count; the refused writes are kept."""

    def broken(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied (injected)")

    monkeypatch.setattr(RunLogger, "log_learning_curves", broken)
    (tmp_path / "tiny.toml").write_text(EXPERIMENT.format(root=small_dataset))
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    seed_store(uri)  # an empty store as MLflow makes it, made once
    env = {"MLFLOW_TRACKING_URI": uri}
    result = xraycnn(
        "search",
        str(tmp_path / "tiny.toml"),
        "--tuner-dir",
        str(tmp_path / "tuner"),
        "--reports-dir",
        str(tmp_path / "reports"),
        env=env,
    )
    assert result.returncode == 3, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the search finished, but 3 MLflow write(s) failed")
    assert "Permission denied (injected). The trials and the champion are as printed" in line
    assert len(list((tmp_path / "tuner" / "tiny" / "spool" / "main" / "rejected").glob("*.json"))) == 3
    client = MlflowClient(uri, registry_uri=uri)
    (parent,) = [
        r
        for r in client.search_runs([client.get_experiment_by_name("xraycnn-tiny").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    assert parent.info.status == "FINISHED" and parent.data.tags["xraycnn.tracking_failures"] == "3"
    assert "Permission denied" in parent.data.tags["xraycnn.tracking_failures_first"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
