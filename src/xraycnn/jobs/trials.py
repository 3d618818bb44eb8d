"""The trials of a search as this process sees them: who listens to the ones it trains (their MLflow runs and
the console), trial runs a dead process left open, the one table of all trials (`trials.csv`), and the MLflow
writes that failed on the way. Shared by the search's chief or single process and its workers."""

from __future__ import annotations

import contextlib
from typing import Any

import pandas as pd
from keras_tuner.engine.trial import TrialStatus
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from rich.console import Console

from xraycnn.errors import TrackingIncompleteError
from xraycnn.jobs.session import Session, fixed_params
from xraycnn.model.hypermodel import CxrHyperModel
from xraycnn.report.snapshot import last_attempts
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.tags import BEST_EPOCH_TAG, GATE_TAG, GUARD_TAG, TRACKING_FAILURES_TAG, WORKER_TAG
from xraycnn.tracking.trial_tracker import TrialTracker
from xraycnn.tuning.progress import SearchProgress
from xraycnn.tuning.tuners import planned_budget

DONE = (TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.INVALID)


def trial_listeners(
    session: Session,
    runs: SpooledRuns,
    parent_run_id: str,
    console: Console,
    hypermodel: CxrHyperModel,
    run_tags: dict[str, str] | None = None,
) -> tuple[TrialTracker, SearchProgress]:
    """What listens to the trials a process trains: their MLflow runs under `parent_run_id` (written through
    the process's spool, `runs`), and the console."""
    config = session.experiment.config
    tracker = TrialTracker(
        runs,
        session.experiment_id,
        parent_run_id,
        fixed_params(session),
        session.data,
        config.tuner,
        hypermodel.trial_scores,
        run_tags=run_tags,
    )
    progress = SearchProgress(
        console, config.tuner.objective, config.tuner.direction, *planned_budget(config), tuner=config.tuner
    )
    return tracker, progress


def close_orphans(session: Session, parent_run_id: str, worker_id: str | None = None) -> None:
    """Trial runs left RUNNING by a process that died: KILLED for a search, FAILED for a worker (the trial
    itself runs again either way)."""
    client = session.runs.client
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    if worker_id is not None:
        query += f" and tags.`{WORKER_TAG}` = '{worker_id}'"
    for run in client.search_runs([session.experiment_id], filter_string=query):
        if worker_id is None:
            status, why = RunStatus.KILLED, "the search process stopped during this trial; the trial runs again"
        else:
            status, why = RunStatus.FAILED, f"worker {worker_id} stopped during this trial; the trial runs again"
        session.runs.end(run.info.run_id, RunStatus.to_string(status), why)


def trials_table(session: Session, tuner: Any, parent_run_id: str) -> pd.DataFrame:
    """One row per trial: status, objective, hyperparameters, the run that counts for it (report.snapshot's
    rule) and its test metrics, best first."""
    client = session.runs.client
    runs = client.search_runs(
        [session.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    counted = last_attempts(runs)
    rows = []
    for trial in tuner.oracle.trials.values():
        run = counted[trial.trial_id][0] if trial.trial_id in counted else None
        row: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            "score": trial.score,
            "run_id": run.info.run_id if run else None,
            "best_epoch": int(run.data.tags[BEST_EPOCH_TAG]) if run and BEST_EPOCH_TAG in run.data.tags else None,
            "gate": run.data.tags.get(GATE_TAG) if run else None,
            "guard": run.data.tags.get(GUARD_TAG) if run else None,
            "hyperparameters": dict(trial.hyperparameters.values),
        }
        if run:
            row.update({k: v for k, v in run.data.metrics.items() if k.startswith(("test_", "best_val_"))})
        rows.append(row)
    frame = pd.DataFrame(rows)
    hp = pd.json_normalize(frame["hyperparameters"]).add_prefix("hp.") if len(frame) else pd.DataFrame()
    frame = pd.concat([frame, hp], axis=1)
    ascending = session.experiment.config.tuner.direction == "min"
    return frame.sort_values("score", ascending=ascending, na_position="last").reset_index(drop=True)


def last_failure(tuner: Any) -> str:
    """The last line of the latest failed trial's error."""
    failed = [t for t in tuner.oracle.trials.values() if t.status == TrialStatus.FAILED and t.message]
    if not failed:
        return "unknown"
    lines = [line for line in failed[-1].message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown"


def _failures_in_words(failures: list[str]) -> str:
    first = failures[0].strip().splitlines()
    return (
        f"{len(failures)} MLflow write(s) failed; some trial runs may be incomplete. First: {first[0]} ... {first[-1]}"
    )


def fail_on_tracking_failures(session: Session, parent_run_id: str | None, failures: list[str]) -> None:
    """A search whose MLflow writes failed ends with exit status 3 (not 0), and says so on its parent run
    (when the store takes that write)."""
    if not failures:
        return
    if parent_run_id is not None:
        with contextlib.suppress(MlflowException, OSError):  # the store that failed may refuse this too
            session.runs.set_tags(
                parent_run_id,
                {TRACKING_FAILURES_TAG: len(failures), f"{TRACKING_FAILURES_TAG}_first": failures[0].strip()},
            )
    raise TrackingIncompleteError(
        f"the search finished, but {_failures_in_words(failures)}. The trials and the champion are as printed; "
        "the runs in MLflow lack those writes (see the tag xraycnn.tracking_failures on the parent run)"
    )
