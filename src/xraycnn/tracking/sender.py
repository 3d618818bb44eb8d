"""The thread that sends a spool's writes to the store, in order, through outages of any length.

A write that fails is retried; whether it is the store that is away or the write that is wrong is asked of
the store itself (one cheap query): when the store does not answer, it is an outage and every write waits,
retried with backoff, one console line when it starts and one when it ends; when the store answers, the
write itself is refused and after a few tries it is set aside under `rejected/` and reported, never lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from xraycnn.errors import DiskFullError
from xraycnn.runtime.disk import disk_full_error, is_disk_full
from xraycnn.tracking.replay import Replayer, UnknownRunError
from xraycnn.tracking.runs import RunLogger
from xraycnn.tracking.spool import Record, Spool
from xraycnn.tracking.store import FIRST_BACKOFF_S, MAX_BACKOFF_S, first_line, sqlite_file, store_answers

REFUSED_TRIES = 3  # a write the store refuses while it answers other queries: tried this often, then set aside


class SpoolSender:
    """Sends `spool`'s writes with `client`; `notice` gets the outage's console lines."""

    def __init__(
        self,
        spool: Spool,
        client: MlflowClient,
        notice: Callable[[str], None] = print,
        name: str = "xraycnn-tracking",
        start: bool = True,
    ) -> None:
        """`start=False`: journal only, until `start()` (what a process that dies before sending leaves)."""
        self.spool = spool
        self.client = client
        self.replayer = Replayer(RunLogger(client), spool)
        self.notice = notice
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self.cpu_seconds = 0.0  # the sending thread's CPU time: what tracking costs the machine
        self.outages: list[float] = []  # seconds of each outage that ended
        self.outage_since: float | None = None
        self.disk_full: DiskFullError | None = None  # set when the store's disk is full: sending stops there
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        self._thread.start()

    # -- the caller's side ------------------------------------------------------------------------------
    def submit(self, op: str, args: dict[str, Any], files: dict[str, Path] | None = None) -> None:
        """Journal the write (durable when this returns), then let the sending thread have it. Raises
        DiskFullError only when the spool's own disk is full; a full store does not refuse the write here (see
        `raise_if_store_full`)."""
        self.spool.append(op, args, files)
        self._wake.set()

    def raise_if_store_full(self) -> None:
        """Raise DiskFullError once the store's disk is full. Called where the job can stop consistently (before
        a trial starts), never from inside a write: refusing the writes that end a trial the tuner has already
        recorded as done would leave its run open for good, while the spool can still keep them."""
        if self.disk_full is not None:
            raise self.disk_full

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every write so far is in the store (True) or `timeout` seconds have passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.spool.count():
            if self.disk_full is not None or not self._thread.is_alive():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def settle(self, timeout: float) -> bool:
        """`drain(timeout)`, unless the store is known to be away: then no waiting (the writes stay spooled)."""
        return self.drain(0 if self.outage_since is not None else timeout)

    def take_failures(self) -> list[str]:
        """The writes set aside since the last call, with why."""
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def close(self, timeout: float | None = None, *, unless_away: bool = False) -> bool:
        """Send what is spooled for up to `timeout` seconds (none if `unless_away` and the store is away),
        then stop; False if writes are left on disk."""
        drained = self.settle(timeout or 0) if unless_away else self.drain(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.spool.release()
        return drained

    # -- the sending thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            for record in self.spool.pending():
                if self._stop.is_set():
                    return
                started = time.thread_time()
                try:
                    self._deliver(record)
                finally:
                    self.cpu_seconds += time.thread_time() - started

    def _deliver(self, record: Record) -> None:
        refused, backoff = 0, FIRST_BACKOFF_S
        while not self._stop.is_set():
            try:
                self.replayer.apply(record)
            except Exception as exc:
                if is_disk_full(exc):  # kept in the spool: sent by the next run, once space is freed
                    # Said once, by the search as it stops (the next write it journals, or its wait at the end).
                    self.disk_full = disk_full_error(exc, "to the tracking store", sqlite_file(self.spool.tracking_uri))
                    self._stop.wait()
                    return
                if isinstance(exc, UnknownRunError | TypeError | ValueError | KeyError):
                    self._set_aside(record, exc)  # malformed: no store will ever take it
                    return
                if self._store_answers():
                    self._back()
                    refused += 1
                    if refused >= REFUSED_TRIES:
                        self._set_aside(record, exc)
                        return
                    self._stop.wait(FIRST_BACKOFF_S * refused)
                    continue
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    self.notice(
                        f"Tracking store {self.spool.tracking_uri} unreachable ({first_line(exc)}); training goes "
                        f"on, its MLflow writes wait in {self.spool.directory} and are sent when the store is back."
                    )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self.spool.ack(record)
            self._back()
            return

    def _back(self) -> None:
        if self.outage_since is None:
            return
        seconds = time.monotonic() - self.outage_since
        self.outage_since = None
        self.outages.append(seconds)
        self.notice(
            f"Tracking store {self.spool.tracking_uri} is back after {seconds:.0f} s; sending the "
            f"{self.spool.count()} write(s) that waited."
        )

    def _store_answers(self) -> bool:
        return store_answers(self.client)

    def _set_aside(self, record: Record, exc: BaseException) -> None:
        kept = self.spool.reject(record, first_line(exc))
        with self._lock:
            self._failures.append(f"{record.op} (kept in {kept}):\n{first_line(exc)}")
