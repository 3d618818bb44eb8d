"""How a job's own run ends: FINISHED, KILLED on Ctrl-C, FAILED with its error; the fluent stack left empty."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from xraycnn.errors import InterruptedByUserError
from xraycnn.tracking.lifecycle import INTERRUPTED, closed_run
from xraycnn.tracking.runs import RunLogger
from xraycnn.tracking.tags import ERROR_TAG


@pytest.fixture
def client(store_uri: str):
    """A client of a fresh store, which is also the fluent API's store for the test."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store_uri)
    yield MlflowClient(store_uri)
    mlflow.set_tracking_uri(before)


def _artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id)}


@pytest.mark.parametrize("fluent", [False, True])
def test_a_block_that_ends_well_finishes_its_run(client: MlflowClient, fluent: bool) -> None:
    experiment_id = client.create_experiment("lifecycle")
    if fluent:
        run_id = mlflow.start_run(experiment_id=experiment_id).info.run_id
    else:
        run_id = client.create_run(experiment_id).info.run_id
    with closed_run(RunLogger(client), run_id, fluent=fluent) as inside:
        assert inside == run_id
        assert client.get_run(run_id).info.status == "RUNNING"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert ERROR_TAG not in run.data.tags
    assert mlflow.active_run() is None


@pytest.mark.parametrize("fluent", [False, True])
@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (ValueError("the disk is full"), "FAILED"),
        (KeyboardInterrupt(), "KILLED"),
        (InterruptedByUserError("stopped"), "KILLED"),
    ],
)
def test_a_block_that_raises_ends_its_run_by_why_and_the_error_goes_on(
    client: MlflowClient, fluent: bool, raised: BaseException, status: str
) -> None:
    experiment_id = client.create_experiment("lifecycle")
    if fluent:
        run_id = mlflow.start_run(experiment_id=experiment_id).info.run_id
    else:
        run_id = client.create_run(experiment_id).info.run_id
    with pytest.raises(type(raised)), closed_run(RunLogger(client), run_id, fluent=fluent):
        raise raised
    run = client.get_run(run_id)
    assert run.info.status == status
    assert run.info.end_time is not None
    assert mlflow.active_run() is None
    error = run.data.tags[ERROR_TAG]
    if status == "FAILED":
        assert error == "ValueError: the disk is full"
    else:
        assert error == INTERRUPTED
    assert "error.txt" in _artifacts(client, run_id)


def test_a_store_that_refuses_the_error_note_still_gets_the_run_ended_and_the_first_error_raised(
    client: MlflowClient,
) -> None:
    """The store may be what failed: the note is best effort, the status is still set, the cause surfaces."""
    run_id = client.create_run(client.create_experiment("lifecycle")).info.run_id

    class RefusingNotes(RunLogger):
        def note_error(self, run_id: str, error: str) -> None:
            raise OSError("No space left on device")

    with pytest.raises(RuntimeError, match="the cause"), closed_run(RefusingNotes(client), run_id):
        raise RuntimeError("the cause")
    assert client.get_run(run_id).info.status == "FAILED"
