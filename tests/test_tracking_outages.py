"""The real CLI against a real `mlflow server` (SQLite behind it, 127.0.0.1) that goes away: at the start, in
the middle of a trial, and past the end of the search. Nothing the search logs may be lost or written twice:
every trial's params, every metric step and every artifact once, no run left RUNNING, one champion."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_reliability import trial_runs, wait_for
from tests.tiny_search import XRAYCNN, random_search, seed_store, xraycnn
from xraycnn.runtime.local_http import free_port
from xraycnn.tracking.server import tracking_server

pytestmark = [pytest.mark.slow, pytest.mark.chaos]  # kills, outages, full disks: run first, beside the rest

MODEL = "xraycnn-outage"
EPOCHS = 5
# 2 trials trained all their epochs: an interrupted search can be compared with an uninterrupted one.
EPOCH_METRICS = ("loss", "auc", "val_loss", "val_auc")
ARTIFACTS = {"plots/confusion_matrix.png", "plots/learning_curves.png"}


class Server:
    """A real MLflow tracking server on a fixed port that the test stops and starts again."""

    def __init__(self, tmp: Path) -> None:
        self.backend = f"sqlite:///{tmp / 'db' / 'mlflow.db'}"
        seed_store(self.backend)  # an empty store as MLflow makes it, made once
        self.artifacts, self.log = tmp / "artifacts", tmp / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stack: contextlib.ExitStack | None = None

    def start(self) -> None:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(tracking_server(self.backend, self.artifacts, self.log, port=self.port))

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def client(self) -> MlflowClient:  # through the server: it serves the artifacts
        return MlflowClient(self.url, registry_uri=self.url)

    def database(self) -> MlflowClient:  # the database itself, readable while the server is down
        return MlflowClient(self.backend, registry_uri=self.backend)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "server")
    yield s
    s.stop()


def start_search(experiment: Path, tmp: Path, url: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [XRAYCNN, "search", str(experiment), "--tuner-dir", str(tmp / "tuner"), "--reports-dir", str(tmp / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": url, "PYTHONUNBUFFERED": "1", **env},
    )


class Output:
    """A process's output, read as it comes (a thread), so that a test waits on what it says, not a clock."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(process.stdout or []), daemon=True)
        self._thread.start()

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def text(self) -> str:
        self._thread.join(timeout=60)
        return "".join(self.lines)


def stop_mid_trial(search: subprocess.Popen, server: Server) -> None:
    """Stop the server as soon as the first trial's first epoch is in the store, the search held still meanwhile
    (SIGSTOP) so that it cannot finish first: the outage starts in the middle of that trial on any machine."""
    client = server.client()
    wait_for(lambda: first_epoch_logged(client), 300, "the first trial's first epoch in the store")
    search.send_signal(signal.SIGSTOP)
    try:
        server.stop()
    finally:
        search.send_signal(signal.SIGCONT)
    assert not all_epochs_logged(server.database()), "the outage did not come in the middle of the search"


def experiment_id(client: MlflowClient) -> str | None:
    found = client.get_experiment_by_name("xraycnn-outage")
    return found.experiment_id if found else None


def first_epoch_logged(client: MlflowClient) -> bool:
    eid = experiment_id(client)
    return bool(eid) and any("val_auc" in r.data.metrics for r in trial_runs(client, eid))


def all_epochs_logged(client: MlflowClient) -> bool:
    """Whether every trial has logged all its epochs already."""
    eid = experiment_id(client)
    runs = trial_runs(client, eid) if eid else []
    return len(runs) == 2 and all(len(client.get_metric_history(r.info.run_id, "val_auc")) == EPOCHS for r in runs)


def logged(client: MlflowClient) -> dict[str, dict]:
    """Per trial: its params, each epoch metric's steps and values, its artifacts, its status and attempts."""
    eid = experiment_id(client)
    assert eid is not None
    out: dict[str, dict] = {}
    for run in trial_runs(client, eid):
        trial = run.data.tags["xraycnn.trial_id"]
        assert trial not in out, f"trial {trial} has two runs"
        steps = {m: [(h.step, h.value) for h in client.get_metric_history(run.info.run_id, m)] for m in EPOCH_METRICS}
        out[trial] = {
            "params": run.data.params,
            "steps": steps,
            "artifacts": {a.path for a in client.list_artifacts(run.info.run_id, "plots")},
            "status": run.info.status,
            "test_auc": "test_auc" in run.data.metrics,
        }
    return out


def assert_complete(client: MlflowClient) -> dict[str, dict]:
    trials = logged(client)
    assert sorted(trials) == ["0", "1"]
    for trial in trials.values():
        assert trial["status"] == "FINISHED"
        assert {m: [s for s, _ in v] for m, v in trial["steps"].items()} == {
            m: list(range(1, EPOCHS + 1)) for m in EPOCH_METRICS
        }
        assert trial["artifacts"] == ARTIFACTS and trial["test_auc"]
    eid = experiment_id(client)
    assert eid is not None
    everything = client.search_runs([eid])
    assert [r.info.status for r in everything if r.info.status != "FINISHED"] == []
    assert len(everything) == 3  # the parent and two trials: nothing written twice
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == str(version.version)
    return trials


def test_a_server_away_at_the_start_and_mid_trial_loses_nothing(
    small_dataset: Path, tmp_path: Path, server: Server
) -> None:
    """Down at the start (the search waits for it), then stopped in the middle of the first trial (training
    goes on; the writes wait in the spool), each time until the search has said so and a little longer: one
    line when each outage starts and one when it ends, and the store holds everything once."""
    experiment = tmp_path / "outage.toml"
    experiment.write_text(random_search(small_dataset, seed=5, trials=2, epochs=EPOCHS, model=MODEL))
    search = start_search(experiment, tmp_path, server.url)
    out = Output(search)
    wait_for(lambda: out.count("unreachable") == 1, 300, "the search saying it waits for the store")
    time.sleep(2)
    assert search.poll() is None, "the search gave up on a store away"
    server.start()
    client = server.client()
    stop_mid_trial(search, server)
    wait_for(lambda: out.count("unreachable") == 2, 300, "the search saying the store went away mid-trial")
    time.sleep(3)
    server.start()
    search.wait(timeout=600)
    output = out.text()
    print(output[-6000:])
    assert search.returncode == 0
    assert output.count("unreachable") == 2 and output.count("answers after") == 1
    assert output.count("is back after") == 1
    assert_complete(client)
    assert not (tmp_path / "tuner" / "outage" / "spool").exists() or not any(
        (tmp_path / "tuner" / "outage" / "spool").iterdir()
    )


def test_a_store_away_past_the_end_then_sync_completes_it(
    small_dataset: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, server: Server
) -> None:
    """The server goes away mid-search and stays away: the search trains on, waits its limit, and exits 75
    saying so, its champion not registered; once the server is back, `xraycnn sync` sends the spool and
    finishes the search, and the store holds what an uninterrupted search of the same seed logs."""
    experiment = tmp_path / "outage.toml"
    experiment.write_text(random_search(small_dataset, seed=5, trials=2, epochs=EPOCHS, model=MODEL))
    server.start()
    client = server.client()
    search = start_search(experiment, tmp_path, server.url, XRAYCNN_STORE_WAIT_S="5")
    stop_mid_trial(search, server)
    output, _ = search.communicate(timeout=600)
    print(output[-6000:])
    assert search.returncode == 75
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert "stayed away for 5 s" in line and "xraycnn sync" in line
    assert list((tmp_path / "tuner" / "outage" / "spool" / "main" / "ops").glob("*.json"))
    assert server.database().search_model_versions(f"name = '{MODEL}'") == []

    server.start()
    env = {"MLFLOW_TRACKING_URI": server.url}
    sync = xraycnn("sync", "outage", "--tuner-dir", str(tmp_path / "tuner"), "--reports-dir", str(tmp_path), env=env)
    assert sync.returncode == 0, sync.stderr
    assert "finishing the search" in sync.stdout
    synced = assert_complete(client)
    again = xraycnn("sync", "--tuner-dir", str(tmp_path / "tuner"), env=env)
    assert again.returncode == 0 and "Nothing to sync" in again.stdout

    # The same search, never interrupted, on a store of its own.
    other = tmp_path_factory.mktemp("uninterrupted")
    uri = f"sqlite:///{other / 'mlflow.db'}"
    seed_store(uri)  # an empty store as MLflow makes it, made once
    result = xraycnn(
        "search",
        str(experiment),
        "--tuner-dir",
        str(other / "tuner"),
        "--reports-dir",
        str(other / "r"),
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr
    reference = assert_complete(MlflowClient(uri, registry_uri=uri))
    for trial, logged_run in synced.items():
        assert logged_run["params"] == reference[trial]["params"]
        for metric, steps in logged_run["steps"].items():
            assert [s for s, _ in steps] == [s for s, _ in reference[trial]["steps"][metric]]
            assert [v for _, v in steps] == pytest.approx([v for _, v in reference[trial]["steps"][metric]], abs=0.05)
