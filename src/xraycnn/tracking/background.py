"""MLflow writes off the training thread: one worker, in submission order.

A trial's tracking (creating its run, params, per-epoch metrics, plots, artifacts, closing it) costs a few
hundred milliseconds of database and file work, and rendering PNGs; done inline it would add to every
trial's wall time. Submitted here it overlaps with training. One worker keeps every run's writes in order;
`flush()` waits for all of them and reports the ones that failed instead of losing them silently.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class BackgroundWriter:
    def __init__(self, name: str = "xraycnn-tracking") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: list[Future[Any]] = []
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self.cpu_seconds = 0.0  # CPU time the writer thread has spent: what tracking costs the machine

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        def guarded() -> Any:
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            except Exception:
                self._failures.append(f"{getattr(fn, '__name__', fn)}: {traceback.format_exc(limit=3)}")
                raise
            finally:
                with self._lock:
                    self.cpu_seconds += time.thread_time() - started

        future = self._pool.submit(guarded)
        self._pending.append(future)
        return future

    def flush(self) -> list[str]:
        """Wait for every submitted write; the failures so far (and forget them)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()  # waits; the failure itself is recorded by `guarded`
        failures, self._failures = self._failures, []
        return failures

    def close(self) -> list[str]:
        failures = self.flush()
        self._pool.shutdown(wait=True)
        return failures
