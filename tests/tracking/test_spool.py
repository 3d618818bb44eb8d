"""The tracking spool: a durable, ordered journal (tracking.spool), writes that change nothing when sent twice
(tracking.replay), and the thread that sends them, setting aside what the store refuses (tracking.sender).
Its outages of a real MLflow server are tested end to end in tests/test_tracking_outages.py."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from xraycnn.errors import DiskFullError, XrayCnnError
from xraycnn.tracking.sender import SpoolSender
from xraycnn.tracking.spool import Spool, SpoolInUseError, is_run_key, remove_if_empty
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.store import ensure_experiment, resolve_store
from xraycnn.tracking.tags import SPOOL_KEY_TAG


def test_writes_are_on_disk_in_order_before_they_are_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", "sqlite:///x.db")
    attachment = tmp_path / "table.csv"
    attachment.write_text("a,b\n1,2\n")
    for i in range(12):  # past 9: the order is numeric, not by the names' characters
        spool.append("log_metrics", {"i": i}, files={"table.csv": attachment} if i == 3 else None)
    spool.release()
    again = Spool(tmp_path / "s", "sqlite:///x.db")  # a new process finds them all, in order
    records = list(again.pending())
    assert [r.args["i"] for r in records] == list(range(12))
    assert (records[3].files / "table.csv").read_text() == "a,b\n1,2\n"
    again.ack(records[3])
    assert not records[3].path.exists() and not records[3].files.exists()
    kept = again.reject(records[0], "refused")
    assert json.loads(kept.read_text())["error"] == "refused"
    assert [r.args["i"] for r in again.pending()] == [1, 2, *range(4, 12)]
    assert again.count() == 10


def test_one_process_holds_a_spool(tmp_path: Path) -> None:
    held = Spool(tmp_path / "s", "sqlite:///x.db")
    with pytest.raises(SpoolInUseError):
        Spool(tmp_path / "s", "sqlite:///x.db")
    held.release()
    Spool(tmp_path / "s", "sqlite:///x.db").release()


def test_a_spool_is_only_sent_to_its_own_store(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", "sqlite:///a.db")
    spool.append("log_params", {})
    spool.release()
    with pytest.raises(XrayCnnError, match=r"holds writes for sqlite:///a\.db"):
        Spool(tmp_path / "s", "sqlite:///b.db")


def test_an_empty_spool_is_removed_a_rejected_write_keeps_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", "sqlite:///a.db")
    spool.release()
    remove_if_empty(tmp_path / "s")
    assert not (tmp_path / "s").exists()
    spool = Spool(tmp_path / "s", "sqlite:///a.db")
    spool.append("set_tags", {"run": "x", "tags": {}})
    spool.reject(next(spool.pending()), "no")
    spool.release()
    remove_if_empty(tmp_path / "s")
    assert (tmp_path / "s" / "rejected").is_dir()


def _write_a_run(runs: SpooledRuns, experiment_id: str) -> str:
    """Every kind of write a search makes, to one child run of a parent run."""
    import pandas as pd

    parent = runs.create_child(experiment_id, None, "parent", {})
    key = runs.create_child(experiment_id, parent, "trial-0000", {"xraycnn.trial_id": "0"}, trial_id="0")
    runs.log_params(key, {"lr": 0.001, "blocks": 3})
    runs.set_tags(key, {"note": "x"})
    for epoch in (1, 2, 3):
        runs.log_metrics(key, {"val_auc": 0.5 + epoch / 10, "loss": 1.0 / epoch}, step=epoch)
    runs.log_learning_curves(key, [1, 2, 3], {"loss": [1, 0.5, 0.3], "val_loss": [1, 0.6, 0.4]}, "t")
    runs.sender.submit(
        "log_confusion_matrix",
        {"run": key, "matrix": [[5, 1], [2, 7]], "title": "t", "artifact_file": "plots/confusion_matrix.png"},
    )
    runs.log_dataframe_csv(key, pd.DataFrame({"a": [1, 2]}), "tables/a.csv")
    runs.log_text(key, "hello", "notes/hello.txt")
    runs.end(key, "FINISHED")
    runs.end(parent, "FINISHED")
    return key


def _sqlite_store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    store = resolve_store(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    return store.uri, store.client(), ensure_experiment(store, "spool-test")


def test_every_write_sent_twice_is_stored_once(tmp_path: Path) -> None:
    """The process dies after the store took the writes but before it deleted them: sent again, nothing is
    duplicated (the run is found by its spool key; the metrics keep their timestamps)."""
    uri, client, experiment_id = _sqlite_store(tmp_path)
    spool = Spool(tmp_path / "s", uri)
    key = _write_a_run(SpooledRuns(SpoolSender(spool, client, notice=lambda m: None, start=False)), experiment_id)
    spool.release()
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "s", copy)

    # The same writes, twice, each time by a new process; the copy was taken before the store created the runs,
    # so it knows no run id: its runs are found by their keys.
    assert not (copy / "runs.json").exists()
    for directory in (tmp_path / "s", copy):
        sending = SpoolSender(Spool.open_existing(directory), client, notice=lambda m: None)
        assert sending.close(timeout=60)
        assert sending.take_failures() == []

    runs_in_store = client.search_runs([experiment_id])
    assert len(runs_in_store) == 2
    (child,) = [r for r in runs_in_store if "mlflow.parentRunId" in r.data.tags]
    assert is_run_key(child.data.tags[SPOOL_KEY_TAG]) and child.data.tags[SPOOL_KEY_TAG] == key
    assert child.data.tags["xraycnn.attempt"] == "1"
    assert child.info.status == "FINISHED"
    assert child.data.params == {"lr": "0.001", "blocks": "3"}
    history = client.get_metric_history(child.info.run_id, "val_auc")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"plots", "tables", "notes"} <= artifacts
    assert {a.path for a in client.list_artifacts(child.info.run_id, "plots")} == {
        "plots/confusion_matrix.png",
        "plots/learning_curves.png",
    }


def test_a_write_the_store_refuses_is_set_aside_and_the_rest_goes_on(tmp_path: Path) -> None:
    """MLflow refuses to change a param's value; the store answers, so it is the write that is wrong: tried a
    few times, kept under rejected/ with why, reported; the writes after it are sent."""
    uri, client, experiment_id = _sqlite_store(tmp_path)
    sender = SpoolSender(Spool(tmp_path / "s", uri), client, notice=lambda m: None)
    runs = SpooledRuns(sender)
    key = runs.create_child(experiment_id, None, "r", {})
    runs.log_params(key, {"lr": 0.1})
    runs.log_params(key, {"lr": 0.2})
    runs.log_metrics(key, {"after": 1.0})
    assert sender.close(timeout=60)
    (failure,) = sender.take_failures()
    assert failure.startswith("log_params (kept in ") and "lr" in failure
    (kept,) = (tmp_path / "s" / "rejected").glob("*.json")
    assert json.loads(kept.read_text())["args"]["params"] == {"lr": "0.2"}
    (run,) = client.search_runs([experiment_id])
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"after": 1.0}


def test_a_full_store_keeps_the_writes_in_the_spool_until_the_next_run(tmp_path: Path) -> None:
    """The store's disk fills (SQLite's own error, injected at the write): the writes after it are still
    journaled, since the spool's disk has room, and the job is told only when it asks (between trials), so a
    trial the tuner records as done always has its end in the spool; the next process sends them all."""
    uri, client, experiment_id = _sqlite_store(tmp_path)
    sender = SpoolSender(Spool(tmp_path / "s", uri), client, notice=lambda m: None, start=False)

    def full_store(record):  # this process's store stays full; the next process finds space freed
        raise sqlite3.OperationalError("database or disk is full")

    sender.replayer.apply = full_store
    sender.start()
    runs = SpooledRuns(sender)
    key = runs.create_child(experiment_id, None, "trial-0000", {})
    deadline = time.monotonic() + 30
    while sender.disk_full is None and time.monotonic() < deadline:
        time.sleep(0.02)
    runs.log_metrics(key, {"val_auc": 0.9}, step=1)
    runs.end(key, "FINISHED")
    with pytest.raises(DiskFullError, match=r"no space left on the file system of .*mlflow\.db"):
        sender.raise_if_store_full()
    assert not sender.close(timeout=5)
    left = Spool.open_existing(tmp_path / "s")
    assert left.count() == 3
    left.release()

    sending = SpoolSender(Spool.open_existing(tmp_path / "s"), client, notice=lambda m: None)
    assert sending.close(timeout=60)
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics == {"val_auc": 0.9}
