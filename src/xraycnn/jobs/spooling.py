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

from rich.console import Console

from xraycnn.errors import XrayCnnError
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.spool import Spool, SpoolInUseError, remove_if_empty, spool_dirs
from xraycnn.tracking.store import TrackingStore

STORE_WAIT_ENV = "XRAYCNN_STORE_WAIT_S"
DEFAULT_STORE_WAIT_S = 600.0  # how long a search waits for an absent store, at its start and at its end


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


def spool_dir(project_dir: Path, process: str) -> Path:
    return project_dir / "spool" / process


def spooled_tracking(store: TrackingStore, project_dir: Path, process: str, console: Console) -> Tracking:
    """The tracking of one process of a search, through its own spool (what the spool holds is sent first)."""
    return Tracking(store, notice_to(console), spool=spool_dir(project_dir, process))


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
            with Tracking.left_in(spool, notice_to(console)) as tracking:
                tracking.await_store(wait, "sending what an earlier process of the search left")
                failures += tracking.take_failures()
        else:
            spool.release()
        remove_if_empty(directory)
    return failures
