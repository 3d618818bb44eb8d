"""`xraycnn search --workers 2` for real: an MLflow tracking server on a PostgreSQL database started for
the test, Keras Tuner's chief oracle over gRPC and two worker processes, one of them SIGKILLed in the middle
of a trial, and the tracking server with it (the launcher starts both again)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.postgres import postgres_server
from tests.tiny_search import XRAYCNN, random_search

pytestmark = [pytest.mark.slow, pytest.mark.chaos]  # kills, outages, full disks: run first, beside the rest


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as server:
        yield server.uri


def worker_process(launcher: subprocess.Popen, worker_id: str) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if worker_id in child.cmdline() and "--worker-id" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def tracking_server_process(launcher: subprocess.Popen) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children():
        if "mlflow" in " ".join(child.cmdline()) and "server" in child.cmdline():
            return child
    return None


def test_two_workers_one_killed_on_postgres(small_dataset: Path, tmp_path: Path, postgres: str) -> None:
    (tmp_path / "dist.toml").write_text(
        random_search(small_dataset, seed=13, trials=2, epochs=10, model="xraycnn-dist")
    )
    launcher = subprocess.Popen(
        [
            XRAYCNN,
            "search",
            str(tmp_path / "dist.toml"),
            "--workers",
            "2",
            "--backend-store-uri",
            postgres,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--tuner-dir",
            str(tmp_path / "tuner"),
            "--reports-dir",
            str(tmp_path / "reports"),
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = MlflowClient(postgres, registry_uri=postgres)  # the database itself, not through the server
    killed_run = None
    try:
        deadline = time.monotonic() + 400
        while killed_run is None and time.monotonic() < deadline and launcher.poll() is None:
            experiment = client.get_experiment_by_name("xraycnn-dist")
            runs = (
                client.search_runs(
                    [experiment.experiment_id],
                    "tags.`xraycnn.worker` = 'worker-1' and attributes.status = 'RUNNING'",
                )
                if experiment
                else []
            )
            if runs and len(client.get_metric_history(runs[0].info.run_id, "val_auc")) >= 2:
                process = worker_process(launcher, "worker-1")
                if process is not None:
                    process.send_signal(signal.SIGKILL)
                    killed_run = runs[0]
                    server = tracking_server_process(launcher)
                    assert server is not None
                    os.killpg(server.pid, signal.SIGKILL)  # and the tracking server with its own workers
            time.sleep(0.3)
        output, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    print(output[-6000:])
    assert killed_run is not None, "worker-1 was never seen in the middle of a trial"
    assert launcher.returncode == 0
    assert "worker-1 exited with status -9; starting it again" in output
    assert "the MLflow tracking server exited with status -9; starting it again" in output

    experiment = client.get_experiment_by_name("xraycnn-dist")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert all(r.info.status != "RUNNING" for r in trials)
    by_id = {r.info.run_id: r for r in trials}
    assert by_id[killed_run.info.run_id].info.status == "FAILED"
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["xraycnn.trial_id"] for r in finished) == ["0", "1"]  # each once
    retried = [r for r in finished if r.data.tags["xraycnn.trial_id"] == killed_run.data.tags["xraycnn.trial_id"]]
    assert retried[0].data.tags["xraycnn.attempt"] == "2" and retried[0].data.tags["xraycnn.worker"] == "worker-1"
    assert {r.data.tags["xraycnn.worker"] for r in finished} == {"worker-1", "worker-2"}
    assert [str(v.version) for v in client.search_model_versions("name = 'xraycnn-dist'")] == ["1"]
    champion = client.get_model_version_by_alias("xraycnn-dist", "champion")
    assert champion.tags["xraycnn.search_run_id"] == parents[0].info.run_id
