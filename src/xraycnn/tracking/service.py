"""A job's tracking, as one service with a context: every command that writes to MLflow (search, worker, train,
evaluate, calibrate) opens one, and sync (like a search starting again) one per spool that earlier processes left.

It owns the store's one client, the job's writer (`runs`: at once, or journaled in the process's spool and sent
by its thread when the job names a spool), the writes that must be in the store at once (`direct`: a run's end,
after its spooled writes), the system metrics of the job's own runs (through `runs`, so an outage of the store
does not end them), and one lifecycle for those runs (`job_run`: FINISHED, KILLED or FAILED with the block).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from xraycnn.errors import TrackingStoreUnavailableError
from xraycnn.tracking.lifecycle import closed_run
from xraycnn.tracking.runs import RunLogger
from xraycnn.tracking.sender import SpoolSender
from xraycnn.tracking.spool import Spool, remove_if_empty
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.store import TrackingStore, ensure_experiment, fail_fast_over_http
from xraycnn.tracking.system_metrics import SystemMetrics
from xraycnn.tracking.writer import RunWriter

FINAL_DRAIN_S = 30.0  # how long a job's end waits for its spooled writes while the store answers
OWNER_WAIT_S = 300.0  # a sync or a starting chief may be sending what this spool's last owner left


class Tracking:
    """`Tracking(store, notice)` writes at once; `Tracking(store, notice, spool=DIR)` through the spool at
    DIR (what it holds is sent first). Use it as a context: leaving it sends what the store takes within
    FINAL_DRAIN_S and stops the sender; what is left stays in the spool for `xraycnn sync` or the next run."""

    def __init__(
        self, store: TrackingStore, notice: Callable[[str], None], *, spool: Path | Spool | None = None
    ) -> None:
        if store.uri.startswith(("http://", "https://")):
            fail_fast_over_http()
        self.store = store
        self.direct = RunLogger(store.client())
        self.sender: SpoolSender | None = None
        self.runs: RunWriter = self.direct
        if spool is not None:
            if not isinstance(spool, Spool):
                spool = Spool(spool, store.uri, wait_for_owner=OWNER_WAIT_S)
            # The sending thread gets its own client: the job's thread keeps querying through the store's.
            sender_client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
            self.sender = SpoolSender(spool, sender_client, notice)
            self.runs = SpooledRuns(self.sender)

    @classmethod
    def left_in(cls, spool: Spool, notice: Callable[[str], None]) -> Tracking:
        """The tracking of a spool an earlier process left (sync, a search starting again): its writes go to the
        store they were written for, which does not become this process's current store."""
        return cls(TrackingStore(spool.tracking_uri, None), notice, spool=spool)

    @property
    def client(self) -> MlflowClient:
        return self.store.client()

    @property
    def spooled(self) -> SpooledRuns:
        """The spooled writer (trial runs are created through it); only for a job that named a spool."""
        if not isinstance(self.runs, SpooledRuns):
            raise TypeError("this job writes at once: it has no spool")
        return self.runs

    def __enter__(self) -> Tracking:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close(timeout=FINAL_DRAIN_S, unless_away=True)
            remove_if_empty(self.sender.spool.directory)

    # -- the store ---------------------------------------------------------------------------------------
    def await_store(self, wait: float, why: str) -> None:
        """Wait until this job's spooled writes are in the store; after `wait` s of an absent store, stop with
        TrackingStoreUnavailableError (they stay in the spool, for `xraycnn sync` or the next run)."""
        sender = self.sender
        if sender is None:
            return
        if sender.spool.count() and sender.outage_since is not None:
            sender.notice(f"Waiting up to {wait:.0f} s for the tracking store: {why}.")
        if not sender.drain(wait):
            if sender.disk_full is not None:
                raise sender.disk_full
            raise TrackingStoreUnavailableError(
                f"the tracking store {sender.spool.tracking_uri} stayed away for {wait:.0f} s ({why}); "
                f"{sender.spool.count()} write(s) wait in {sender.spool.directory}. Once the store is back, "
                "`xraycnn sync` sends them and finishes the search (so does running the same command again)"
            )

    def take_failures(self) -> list[str]:
        """The spooled writes the store refused since the last call, with why (none for direct writes: those
        raise where they are made)."""
        return self.sender.take_failures() if self.sender is not None else []

    # -- the job's own runs ------------------------------------------------------------------------------
    def new_run(self, experiment_id: str, name: str, tags: Mapping[str, Any], description: str | None = None) -> str:
        """A new run of this job, at once (its id is needed now), with MLflow's own source tags as the fluent
        API would set them; tags that are None are left out."""
        given = {k: str(v) for k, v in tags.items() if v is not None}
        if description:
            given["mlflow.note.content"] = description
        run = self.client.create_run(experiment_id, run_name=name, tags=resolve_tags(given))
        return run.info.run_id

    @contextlib.contextmanager
    def job_run(
        self, run_id: str, *, active: bool = False, system_metrics: bool = True, resume: bool = False
    ) -> Iterator[str]:
        """The block writes to `run_id`; the run then ends by how the block ended (tracking.lifecycle), after its
        spooled writes. `active`: the run is also MLflow's active run for the block (models are logged to it).
        `system_metrics`: MLflow's system metrics sampled into it meanwhile; `resume`: their steps go on from
        the run's last."""
        if active:
            mlflow.start_run(run_id=run_id, log_system_metrics=False)  # ours, below, go through `runs`
        with closed_run(self.direct, run_id, fluent=active):
            monitor = SystemMetrics(run_id, self.runs, self.client, resume=resume) if system_metrics else None
            if monitor is not None:
                monitor.start()
            try:
                yield run_id
            finally:
                if monitor is not None:
                    monitor.finish()
                if self.sender is not None:  # the run ends with a direct write, after what was spooled for it
                    self.sender.settle(FINAL_DRAIN_S)

    @contextlib.contextmanager
    def one_off_run(self, experiment: str, name: str, tags: Mapping[str, Any]) -> Iterator[str]:
        """A run of a one-off job (an evaluation, a site's calibration) in MLflow experiment `experiment`, made if
        missing. Opened once the job's work is done, to log it: no system metrics, nothing to sample."""
        run_id = self.new_run(ensure_experiment(self.store, experiment), name, tags)
        with self.job_run(run_id, system_metrics=False):
            yield run_id
