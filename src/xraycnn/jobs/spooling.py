"""A search process's tracking spool, and the writes earlier processes left in theirs.

Each process of a search journals its MLflow writes in `<tuner>/<experiment>/spool/<process>/` (`main` for a
single-process search, `chief`, or the worker's id) and sends them from there. A process that starts sends
what the search's earlier processes left first, in order, before it looks at the store's runs: a trial run
whose creation was still in a spool would otherwise be missed by the clean-up of runs left RUNNING.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console

from xraycnn.errors import TrackingStoreUnavailableError, XrayCnnError
from xraycnn.tracking.sender import SpoolSender
from xraycnn.tracking.spool import Spool, SpoolInUseError, remove_if_empty, spool_dirs
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.store import fail_fast_over_http

STORE_WAIT_ENV = "XRAYCNN_STORE_WAIT_S"
DEFAULT_STORE_WAIT_S = 600.0  # how long a search waits for an absent store, at its start and at its end
OWNER_WAIT_S = 300.0


def store_wait_seconds() -> float:
    value = os.environ.get(STORE_WAIT_ENV)
    if value is None:
        return DEFAULT_STORE_WAIT_S
    try:
        seconds = float(value)
    except ValueError:
        raise XrayCnnError(f"{STORE_WAIT_ENV}={value!r}: expected a number of seconds, e.g. 600") from None
    if seconds < 0:
        raise XrayCnnError(f"{STORE_WAIT_ENV}={value!r}: expected 0 or more seconds")
    return seconds


def notice_to(console: Console) -> Callable[[str], None]:
    return lambda message: console.print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)


def _client(tracking_uri: str) -> MlflowClient:
    """A client of the store a spool was written for, leaving MLflow's current store as it is (a spool left
    by a search on another store must not switch this process's runs there)."""
    if tracking_uri.startswith(("http://", "https://")):
        fail_fast_over_http()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def spool_dir(project_dir: Path, process: str) -> Path:
    return project_dir / "spool" / process


def open_spool(project_dir: Path, process: str, tracking_uri: str, console: Console) -> SpooledRuns:
    """This process's spool and the thread that sends it (what the directory holds is sent first)."""
    # A sync or a starting chief may be sending what this process's predecessor left: wait for it.
    spool = Spool(spool_dir(project_dir, process), tracking_uri, wait_for_owner=OWNER_WAIT_S)
    return SpooledRuns(SpoolSender(spool, _client(tracking_uri), notice_to(console)))


def send_leftovers(project_dir: Path, console: Console, wait: float) -> list[str]:
    """Send every write the search's spools hold, each to the store it was written for; the writes the stores
    refused (kept under `rejected/`). Raises TrackingStoreUnavailableError if a store stays away `wait` s."""
    failures: list[str] = []
    for directory in spool_dirs(project_dir):
        try:
            spool = Spool.open_existing(directory)
        except SpoolInUseError:
            continue  # a live process (a worker of the same search) sends its own
        count = spool.count()
        if count:
            console.print(f"Sending {count} MLflow write(s) left in {directory} to {spool.tracking_uri} ...")
            sender = SpoolSender(
                spool, _client(spool.tracking_uri), notice_to(console), name=f"xraycnn-sync-{directory.name}"
            )
            if not sender.close(wait):
                if sender.disk_full is not None:
                    raise sender.disk_full
                raise TrackingStoreUnavailableError(
                    f"the tracking store {spool.tracking_uri} did not take the {spool.count()} write(s) left in "
                    f"{directory} within {wait:.0f} s; they stay there: run `xraycnn sync` once it is back"
                )
            failures += sender.take_failures()
        else:
            spool.release()
        remove_if_empty(directory)
    return failures


def await_store(runs: SpooledRuns, wait: float, why: str) -> None:
    """Wait until this process's spooled writes are in the store; after `wait` s of an absent store, stop
    (they stay in the spool, for `xraycnn sync` or the next run of the same command)."""
    if runs.sender.spool.count() and runs.sender.outage_since is not None:
        runs.sender.notice(f"Waiting up to {wait:.0f} s for the tracking store: {why}.")
    if not runs.sender.drain(wait):
        if runs.sender.disk_full is not None:
            raise runs.sender.disk_full
        raise TrackingStoreUnavailableError(
            f"the tracking store {runs.sender.spool.tracking_uri} stayed away for {wait:.0f} s ({why}); "
            f"{runs.sender.spool.count()} write(s) wait in {runs.sender.spool.directory}. Once the store is back, "
            "`xraycnn sync` sends them and finishes the search (so does running the same command again)"
        )
