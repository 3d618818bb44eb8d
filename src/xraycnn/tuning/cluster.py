"""A process's place in a distributed search on Keras Tuner's own engine: the chief serves the oracle over
gRPC, workers ask it for trials (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`).

A worker restarted with the same id gets its unfinished trial back from the oracle, which is how a trial
interrupted by a dying worker runs again.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from keras_tuner.engine.trial import TrialStatus

from xraycnn.errors import XrayCnnError

CHIEF_ID = "chief"
IDLE_WAIT_S = 1.0  # Keras Tuner's workers re-ask an IDLE oracle in a tight loop; this spares the 2 cores
CHIEF_GRACE_S = 10.0  # a chief not answering this long is gone (a restarting one binds its port again at once)


@dataclass(frozen=True)
class ClusterRole:
    role: Literal["chief", "worker"]
    oracle_host: str
    oracle_port: int
    worker_id: str = CHIEF_ID

    @property
    def oracle(self) -> str:
        return f"{self.oracle_host}:{self.oracle_port}"

    def apply(self) -> None:
        """Set Keras Tuner's variables; must happen before the tuner is built."""
        os.environ["KERASTUNER_TUNER_ID"] = CHIEF_ID if self.role == "chief" else self.worker_id
        os.environ["KERASTUNER_ORACLE_IP"] = self.oracle_host
        os.environ["KERASTUNER_ORACLE_PORT"] = str(self.oracle_port)


def parse_oracle(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise XrayCnnError(f"--oracle {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port)


def cluster_role(role: str, oracle: str, worker_id: str | None) -> ClusterRole:
    host, port = parse_oracle(oracle)
    if role == "worker":
        if not worker_id or worker_id == CHIEF_ID or "chief" in worker_id:
            raise XrayCnnError("--worker-id: each worker needs its own id, e.g. worker-1 (not containing 'chief')")
        return ClusterRole("worker", host, port, worker_id)
    return ClusterRole("chief", host, port)


def patient_oracle_client(tuner: Any) -> None:
    """Make a worker wait a little when the oracle answers IDLE (Hyperband waiting on a bracket) instead of
    asking again at once, thousands of times a second."""
    oracle = tuner.oracle
    create_trial = oracle.create_trial

    def create_trial_patiently(tuner_id: str) -> Any:
        trial = create_trial(tuner_id)
        if trial.status == TrialStatus.IDLE:
            time.sleep(IDLE_WAIT_S)
        return trial

    oracle.create_trial = create_trial_patiently


class ChiefWatch:
    """Stops a worker whose chief has died. Keras Tuner's workers call the oracle with `wait_for_ready`, so a
    worker whose chief is gone would wait forever, holding its trial run open. Once the chief has been seen,
    its oracle port is checked every `interval` s; after `grace` s without an answer the worker gets SIGINT
    (a real signal: it also wakes a thread blocked in a system call) and `gone` tells why; if it is still
    there `stuck_after` s later, `on_stuck` runs (it closes what it can and ends the process)."""

    def __init__(
        self,
        host: str,
        port: int,
        on_stuck: Callable[[], None],
        grace: float = CHIEF_GRACE_S,
        interval: float = 1.0,
        stuck_after: float = 10.0,
    ) -> None:
        self.host, self.port, self.grace, self.interval = host, port, grace, interval
        self.on_stuck, self.stuck_after = on_stuck, stuck_after
        self.gone = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="xraycnn-chief-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=max(self.interval, 1.0)):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        seen, silent_since = False, None
        while not self._stop.wait(self.interval):
            if self._answers():
                seen, silent_since = True, None
                continue
            if not seen:
                continue  # not up yet: the worker's own calls wait for it
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since >= self.grace:
                self.gone = True
                os.kill(os.getpid(), signal.SIGINT)
                if not self._stop.wait(self.stuck_after):
                    self.on_stuck()
                return
