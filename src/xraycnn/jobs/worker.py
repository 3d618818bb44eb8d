"""A worker of a distributed search: it finds the chief's parent run by the oracle address, then trains the
trials the chief's oracle hands out, each one a child run of that parent run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from rich.console import Console

from xraycnn.errors import ChiefGoneError, InterruptedByUserError, XrayCnnError
from xraycnn.evaluation.trial_scoring import TrialScorer
from xraycnn.jobs.inputs import Inputs
from xraycnn.jobs.session import Session, mlflow_experiment_name, open_session
from xraycnn.jobs.spooling import spooled_tracking, store_wait_seconds
from xraycnn.jobs.trials import close_orphans, fail_on_tracking_failures, run_trials, trial_listeners
from xraycnn.model.hypermodel import CxrHyperModel
from xraycnn.tracking.lifecycle import INTERRUPTED
from xraycnn.tracking.tags import ORACLE_TAG, WORKER_TAG
from xraycnn.tuning.cluster import ChiefWatch, ClusterRole, patient_oracle_client
from xraycnn.tuning.tuners import build_tuner

PARENT_WAIT_S = 300


def run_worker(
    inputs: Inputs, project_dir: Path, tracking_uri: str | None, console: Console, cluster: ClusterRole
) -> None:
    session = open_session(inputs, tracking_uri, console)
    config = session.experiment.config
    wait = store_wait_seconds()
    # what this worker's earlier process left in its spool is sent first
    with spooled_tracking(session.store, project_dir, cluster.worker_id, console) as tracking:
        tracking.await_store(wait, "a worker's earlier writes go in before it looks for runs it left open")
        parent_run_id = find_parent(session, cluster)
        close_orphans(session, tracking, parent_run_id, cluster.worker_id)
        cluster.apply()
        hypermodel = CxrHyperModel(config, session.data)
        scorer = TrialScorer(hypermodel)
        tracker, progress = trial_listeners(
            session, tracking, parent_run_id, console, scorer, {WORKER_TAG: cluster.worker_id}
        )
        tuner = build_tuner(config, hypermodel, project_dir.parent, project_dir.name, [tracker, progress])
        patient_oracle_client(tuner)
        console.print(
            f"Worker {cluster.worker_id}: trials from the oracle on {cluster.oracle}, parent run {parent_run_id}"
        )
        why = f"the chief's oracle at {cluster.oracle} stopped answering"
        stopped = (
            f"worker {cluster.worker_id} stopped, its open run closed as FAILED. Start the chief again (the same "
            "command resumes the search from the oracle's saved state), then the workers"
        )

        def give_up() -> None:
            """SIGINT did not reach the training thread in time (blocked in a call that does not wake): close
            the open run from here and end the process, so that no worker outlives its chief."""
            tracker.close_open_runs(RunStatus.to_string(RunStatus.FAILED), f"{why}; the trial runs again")
            tracking.spooled.sender.close(timeout=5)
            console.print(f"[bold red]error:[/] {why}: {stopped}", highlight=False, soft_wrap=True)
            os._exit(ChiefGoneError.exit_code)

        watch = ChiefWatch(cluster.oracle_host, cluster.oracle_port, on_stuck=give_up)
        watch.start()

        def interrupted() -> tuple[int, str, XrayCnnError]:
            if watch.gone:
                return (
                    RunStatus.FAILED,
                    f"{why}; the trial runs again",
                    ChiefGoneError(f"{why} for {watch.grace:.0f} s: {stopped}"),
                )
            return (
                RunStatus.KILLED,
                INTERRUPTED,
                InterruptedByUserError(f"worker {cluster.worker_id} stopped; its open run is closed as KILLED"),
            )

        try:
            run_trials(tuner, tracker.close_open_runs, interrupted, project_dir)
        finally:
            watch.stop()
        tracking.await_store(wait, "the worker's trial runs must be in the store before it reports done")
    console.print(f"Worker {cluster.worker_id}: the oracle has no more trials; done.")
    fail_on_tracking_failures(tracking, None, tracking.take_failures())


def find_parent(session: Session, cluster: ClusterRole, timeout: float = PARENT_WAIT_S) -> str:
    """The chief's parent run, found by the oracle address it carries (no shared files between hosts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            runs = session.store.client().search_runs(
                [session.experiment_id],
                filter_string=f"tags.`{ORACLE_TAG}` = '{cluster.oracle}' and attributes.status = 'RUNNING'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        except MlflowException:  # the store restarting: ask again until the deadline
            runs = []
        if runs:
            return runs[0].info.run_id
        if time.monotonic() > deadline:
            raise XrayCnnError(
                f"no running search with oracle {cluster.oracle} in MLflow experiment "
                f"{mlflow_experiment_name(session.experiment)!r} at {session.store.uri} after {timeout:.0f} s: start "
                "the chief first (`xraycnn search EXPERIMENT --role chief --oracle HOST:PORT`), with the same "
                "experiment file and tracking URI"
            )
        time.sleep(1.0)
