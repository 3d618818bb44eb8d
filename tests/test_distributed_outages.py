"""A distributed search as it runs on several hosts (`--role chief|worker`, started by the test) against a real
`mlflow server` on a real PostgreSQL, all on 127.0.0.1: a chief killed stops its workers cleanly and the search
resumes; the server stopped and PostgreSQL restarted in the middle of the resumed search lose nothing."""

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

from tests.postgres import Postgres, postgres_server
from tests.test_reliability import wait_for
from tests.tiny_search import XRAYCNN, random_search
from xraycnn.runtime.local_http import free_port
from xraycnn.tracking.server import TrackingServer

pytestmark = [pytest.mark.slow, pytest.mark.chaos]  # kills, outages, full disks: run first, beside the rest

TRIALS, EPOCHS = 3, 6


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


class Cluster:
    """A tracking server, a chief and two workers, each process logging to its own file."""

    def __init__(self, tmp: Path, dataset: Path, name: str, postgres: Postgres) -> None:
        self.tmp, self.name = tmp, name
        self.model = f"xraycnn-{name}"
        self.experiment = tmp / f"{name}.toml"
        self.experiment.write_text(random_search(dataset, seed=17, trials=TRIALS, epochs=EPOCHS, model=self.model))
        self.server = TrackingServer(postgres.uri, tmp / "artifacts", tmp / "server.log", port=free_port())
        self.database = MlflowClient(postgres.uri, registry_uri=postgres.uri)
        self.oracle = f"127.0.0.1:{free_port()}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.round = 0

    def start(self) -> None:
        self.round += 1
        common = [
            XRAYCNN,
            "search",
            str(self.experiment),
            "--oracle",
            self.oracle,
            "--tracking-uri",
            self.server.url,
            "--tuner-dir",
            str(self.tmp / "tuner"),
        ]
        roles = {
            "chief": ["--role", "chief", "--reports-dir", str(self.tmp / "reports")],
            "worker-1": ["--role", "worker", "--worker-id", "worker-1"],
            "worker-2": ["--role", "worker", "--worker-id", "worker-2"],
        }
        for name, role in roles.items():
            with self.log(name).open("w") as log:
                self.processes[name] = subprocess.Popen(
                    [*common, *role], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
                )

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}-{self.round}.log"

    def output(self, name: str) -> str:
        return self.log(name).read_text(errors="replace")

    def wait(self, timeout: float = 600) -> dict[str, int]:
        codes = {name: p.wait(timeout=timeout) for name, p in self.processes.items()}
        for name in self.processes:
            print(f"--- {name}\n{self.output(name)[-3000:]}")
        return codes

    def kill_all(self) -> None:
        for p in self.processes.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        self.server.stop()

    def experiment_id(self) -> str | None:
        found = self.database.get_experiment_by_name(f"xraycnn-{self.name}")
        return found.experiment_id if found else None

    def trial_runs(self, client: MlflowClient | None = None) -> list:
        eid = self.experiment_id()
        runs = (client or self.database).search_runs([eid]) if eid else []
        return [r for r in runs if "mlflow.parentRunId" in r.data.tags]

    def epochs_logged(self) -> int:
        return sum(len(self.database.get_metric_history(r.info.run_id, "val_auc")) for r in self.trial_runs())

    def a_trial_is_training(self) -> bool:
        return any(
            r.info.status == "RUNNING" and len(self.database.get_metric_history(r.info.run_id, "val_auc")) >= 2
            for r in self.trial_runs()
        )


@pytest.fixture
def cluster(tmp_path: Path, small_dataset: Path, postgres: Postgres) -> Iterator[Cluster]:
    made = Cluster(tmp_path, small_dataset, "ha", postgres)
    yield made
    made.kill_all()


def assert_complete(cluster: Cluster) -> None:
    """Each trial finished once with all its epochs, params and plots; no run RUNNING; one champion."""
    client = MlflowClient(cluster.server.url, registry_uri=cluster.server.url)  # serves the artifacts
    eid = cluster.experiment_id()
    everything = client.search_runs([eid])
    assert [r.info.status for r in everything if r.info.status == "RUNNING"] == []
    finished = [r for r in cluster.trial_runs(client) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["xraycnn.trial_id"] for r in finished) == [str(t) for t in range(TRIALS)]
    for run in finished:
        for metric in ("loss", "val_loss", "val_auc"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert steps == list(range(1, EPOCHS + 1)), (run.data.tags["xraycnn.trial_id"], metric, steps)
        assert "learning_rate" in run.data.params and "test_auc" in run.data.metrics
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert plots == {"plots/confusion_matrix.png", "plots/learning_curves.png"}
    (parent,) = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    (version,) = client.search_model_versions(f"name = '{cluster.model}'")
    assert str(client.get_model_version_by_alias(cluster.model, "champion").version) == str(version.version)


def test_a_dead_chief_stops_its_workers_and_the_resumed_search_loses_nothing_to_outages(
    cluster: Cluster, postgres: Postgres
) -> None:
    """Two lives of one distributed search (one cluster: its processes are what a test of it costs). In the
    first, the chief is SIGKILLed in the middle of the trials: its workers stop cleanly within 30 s, their runs
    closed, no process left behind. The same commands resume it; in the middle of its trials PostgreSQL
    restarts (every connection the server held is gone), then the tracking server stops and starts again on
    the same port: the search finishes with every trial once, nothing lost, one champion."""
    cluster.server.start()
    cluster.start()
    wait_for(cluster.a_trial_is_training, 400, "a trial in the middle of its epochs")
    killed = time.monotonic()
    cluster.processes["chief"].send_signal(signal.SIGKILL)
    codes = {n: p.wait(timeout=60) for n, p in cluster.processes.items()}
    assert time.monotonic() - killed < 30, "the workers outlived their chief by 30 s"
    assert codes["chief"] == -signal.SIGKILL and codes["worker-1"] == codes["worker-2"] == 75
    for name in ("worker-1", "worker-2"):
        assert f"the chief's oracle at {cluster.oracle} stopped answering" in cluster.output(name)
    orphans = [p for p in psutil.process_iter(["cmdline"]) if cluster.oracle in " ".join(p.info["cmdline"] or [])]
    assert orphans == []
    assert [r for r in cluster.trial_runs() if r.info.status == "RUNNING"] == []  # the workers closed theirs

    cluster.start()  # the same commands: the chief reloads the oracle's state
    wait_for(cluster.a_trial_is_training, 400, "a resumed trial in the middle of its epochs")
    postgres.restart()  # every connection the server held is gone
    before = cluster.epochs_logged()
    wait_for(lambda: cluster.epochs_logged() >= before + 2, 300, "epochs logged after PostgreSQL restarted")

    def noticed() -> int:
        return sum(cluster.output(n).count("unreachable") for n in ("worker-1", "worker-2"))

    already = noticed()  # PostgreSQL's restart may have been noticed too
    cluster.server.stop()
    assert any(p.poll() is None for n, p in cluster.processes.items() if n != "chief")
    wait_for(lambda: noticed() > already, 300, "a worker saying the store went away")
    time.sleep(3)
    cluster.server.start()  # the same port
    codes = cluster.wait()
    assert codes == {"chief": 0, "worker-1": 0, "worker-2": 0}
    outages = [cluster.output(n) for n in ("worker-1", "worker-2")]
    assert any("unreachable" in out and "is back after" in out for out in outages)
    assert_complete(cluster)
