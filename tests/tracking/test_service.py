"""A job's tracking service: one lifecycle for its own runs, system metrics through its writer (direct or
spooled, resumed where they stopped), MLflow's source tags on the runs it makes, the spool sent on leaving."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from xraycnn.errors import InterruptedByUserError
from xraycnn.tracking.lifecycle import INTERRUPTED
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.store import TrackingStore, ensure_experiment, resolve_store
from xraycnn.tracking.system_metrics import PREFIX, next_step
from xraycnn.tracking.tags import ERROR_TAG

CPU = f"{PREFIX}cpu_utilization_percentage"


@pytest.fixture
def store(store_uri: str, monkeypatch: pytest.MonkeyPatch) -> TrackingStore:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    return resolve_store(store_uri)


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, CPU))


def _wait_for_steps(tracking: Tracking, run_id: str, count: int) -> None:
    """Wait (bounded) until `count` system-metric steps are in the store, however busy the machine."""
    deadline = time.monotonic() + 30
    while len(_steps(tracking.client, run_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} system-metric steps within 30 s"
        if tracking.sender is not None:
            tracking.sender.drain(5)
        time.sleep(0.05)


def test_a_direct_job_run_has_source_tags_system_metrics_and_ends_finished(store: TrackingStore) -> None:
    experiment_id = ensure_experiment(store, "service")
    with Tracking(store, notice=print) as tracking:
        assert not isinstance(tracking.runs, SpooledRuns)
        run_id = tracking.new_run(experiment_id, "direct", {"xraycnn.kind": "train", "gone": None}, "why it ran")
        with tracking.job_run(run_id, active=True) as inside:
            assert inside == run_id
            assert mlflow.active_run().info.run_id == run_id  # models are logged to it
            _wait_for_steps(tracking, run_id, 3)
        assert mlflow.active_run() is None
    run = store.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["xraycnn.kind"] == "train" and "gone" not in run.data.tags
    assert run.data.tags["mlflow.note.content"] == "why it ran"
    assert {"mlflow.source.type", "mlflow.user"} <= set(run.data.tags)  # as the fluent API sets them
    steps = _steps(store.client(), run_id)
    assert steps == list(range(len(steps))) and len(steps) >= 3


def test_a_failed_or_interrupted_block_ends_its_run_so(store: TrackingStore) -> None:
    experiment_id = ensure_experiment(store, "service")
    tracking = Tracking(store, notice=print)
    failed = tracking.new_run(experiment_id, "failed", {})
    with pytest.raises(ValueError, match="broken"), tracking.job_run(failed, system_metrics=False):
        raise ValueError("broken")
    killed = tracking.new_run(experiment_id, "killed", {})
    with pytest.raises(InterruptedByUserError), tracking.job_run(killed, active=True, system_metrics=False):
        raise InterruptedByUserError("stop")
    client = store.client()
    assert client.get_run(failed).info.status == "FAILED"
    assert "ValueError: broken" in client.get_run(failed).data.tags[ERROR_TAG]
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(killed).data.tags[ERROR_TAG] == INTERRUPTED
    assert mlflow.active_run() is None


def test_a_spooled_job_run_sends_its_writes_and_resumes_its_metrics(store: TrackingStore, tmp_path: Path) -> None:
    experiment_id = ensure_experiment(store, "service")
    spool = tmp_path / "tuner" / "spool" / "main"
    with Tracking(store, notice=print, spool=spool) as tracking:
        run_id = tracking.new_run(experiment_id, "spooled", {})
        with tracking.job_run(run_id):
            tracking.runs.log_metrics(run_id, {"score": 0.5}, step=1)
            _wait_for_steps(tracking, run_id, 3)
        first = _steps(store.client(), run_id)
        assert store.client().get_run(run_id).info.status == "FINISHED"
        assert store.client().get_run(run_id).data.metrics["score"] == 0.5
        assert next_step(store.client(), run_id) == first[-1] + 1

        with tracking.job_run(run_id, resume=True):  # a resumed search's parent run
            _wait_for_steps(tracking, run_id, len(first) + 2)
    steps = _steps(store.client(), run_id)
    assert steps == list(range(len(steps))) and len(steps) > len(first)  # no step written twice
    assert not spool.exists()  # sent, then removed on leaving
    assert tracking.take_failures() == []
