"""What a search's earlier processes left in their spools: sent to the store each was written for, without
moving this process's own runs to that store; a spool held by a live process is left to it."""

from __future__ import annotations

from pathlib import Path

import mlflow
from rich.console import Console

from xraycnn.jobs.spooling import send_leftovers, spool_dir
from xraycnn.tracking.sender import SpoolSender
from xraycnn.tracking.spool import Spool
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.store import ensure_experiment, resolve_store


def test_leftovers_go_to_their_own_store_and_leave_the_current_one(tmp_path: Path) -> None:
    other = resolve_store(f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}")
    experiment_id = ensure_experiment(other, "left")
    project = tmp_path / "tuner" / "left"
    spool = Spool(spool_dir(project, "worker-1"), other.uri)
    runs = SpooledRuns(SpoolSender(spool, other.client(), notice=lambda m: None, start=False))
    key = runs.create_child(experiment_id, None, "left behind", {})
    runs.log_metrics(key, {"m": 1.0}, step=1)
    runs.end(key, "FINISHED")
    spool.release()  # the process that wrote them is gone

    held = Spool(spool_dir(project, "worker-2"), other.uri)  # a live worker's: not ours to send
    held.append("set_tags", {"run": "x", "tags": {}})

    current = resolve_store(f"sqlite:///{tmp_path / 'current' / 'mlflow.db'}")
    console = Console(quiet=True)
    assert send_leftovers(project, console, wait=60) == []
    assert mlflow.get_tracking_uri() == current.uri
    (run,) = other.client().search_runs([experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics == {"m": 1.0}
    assert not spool_dir(project, "worker-1").exists()  # sent and removed
    assert held.count() == 1
    held.release()
