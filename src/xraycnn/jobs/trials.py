"""The trials of a search as this process sees them: who listens to the ones it trains (their MLflow runs and
the console), trial runs a dead process left open, the one table of all trials (`trials.csv`), and the MLflow
writes that failed on the way. Shared by the search's chief or single process and its workers."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from keras_tuner.engine.trial import TrialStatus
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from rich.console import Console

from xraycnn.errors import TrackingIncompleteError, XrayCnnError
from xraycnn.evaluation.trial_scoring import TrialScorer
from xraycnn.jobs.session import Session, fixed_params
from xraycnn.report.snapshot import last_attempts
from xraycnn.runtime.disk import disk_full_error, is_disk_full
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.tags import BEST_EPOCH_TAG, GATE_TAG, GUARD_TAG, TRACKING_FAILURES_TAG, WORKER_TAG
from xraycnn.tracking.trial_tracker import TrialTracker
from xraycnn.tuning.progress import SearchProgress
from xraycnn.tuning.tuners import SearchStopped, planned_budget

DONE = (TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.INVALID)


def trial_listeners(
    session: Session,
    tracking: Tracking,
    parent_run_id: str,
    console: Console,
    scorer: TrialScorer,
    run_tags: dict[str, str] | None = None,
) -> tuple[TrialTracker, SearchProgress]:
    """What listens to the trials a process trains: their MLflow runs under `parent_run_id` (written through
    the process's spool), and the console."""
    config = session.experiment.config
    tracker = TrialTracker(
        tracking.spooled,
        session.experiment_id,
        parent_run_id,
        fixed_params(session),
        session.data,
        config.tuner,
        scorer.scores,
        run_tags=run_tags,
    )
    progress = SearchProgress(
        console, config.tuner.objective, config.tuner.direction, *planned_budget(config), tuner=config.tuner
    )
    return tracker, progress


# What a process makes of Ctrl-C during its trials: the status and reason its open trial runs close with, and the
# error it then ends with.
Interrupted = Callable[[], tuple[int, str, XrayCnnError]]


def run_trials(
    tuner: Any, close_open_runs: Callable[[str, str], None], interrupted: Interrupted, project_dir: Path
) -> None:
    """`tuner.search()` of a search or a worker, ending, if it does not finish, in one error with the runs of the
    trials it left open closed (`close_open_runs(status, why)`): KILLED when stopped (Ctrl-C, a full disk), FAILED
    with the traceback on any other error; Keras Tuner's own stop after too many failed trials said in our words."""
    try:
        tuner.search(verbose=0)
    except KeyboardInterrupt:
        status, why, error = interrupted()
        close_open_runs(RunStatus.to_string(status), why)
        raise error from None
    except SearchStopped as stop:
        close_open_runs(RunStatus.to_string(RunStatus.KILLED), str(stop.error))
        raise stop.error from None
    except BaseException as exc:
        close_open_runs(RunStatus.to_string(RunStatus.FAILED), traceback.format_exc())
        if not isinstance(exc, XrayCnnError) and is_disk_full(exc):  # Keras Tuner saving its state
            raise disk_full_error(exc, "the search's state", project_dir) from None
        limit = failed_in_a_row(tuner.oracle)
        if isinstance(exc, RuntimeError) and limit:
            raise XrayCnnError(
                f"{limit} trials in a row failed, Keras Tuner's limit (max_consecutive_failed_trials); the last "
                f"error: {last_failure(tuner)}. See the FAILED trial runs in MLflow; fix the cause and run the same "
                "command to resume"
            ) from None
        raise


def failed_in_a_row(oracle: Any) -> int:
    """The oracle's limit of failed trials in a row when its latest trials reached it (Keras Tuner then stops the
    search with a RuntimeError), else 0. Read from its trials in the order they ended, as the oracle counts."""
    limit = getattr(oracle, "max_consecutive_failed_trials", None)
    ended = [oracle.trials[t].status for t in getattr(oracle, "end_order", ()) if t in oracle.trials]
    if not limit or len(ended) < limit:
        return 0
    return limit if all(status == TrialStatus.FAILED for status in ended[-limit:]) else 0


def close_orphans(session: Session, tracking: Tracking, parent_run_id: str, worker_id: str | None = None) -> None:
    """Trial runs left RUNNING by a process that died: KILLED for a search, FAILED for a worker (the trial
    itself runs again either way)."""
    client = tracking.client
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    if worker_id is not None:
        query += f" and tags.`{WORKER_TAG}` = '{worker_id}'"
    for run in client.search_runs([session.experiment_id], filter_string=query):
        if worker_id is None:
            status, why = RunStatus.KILLED, "the search process stopped during this trial; the trial runs again"
        else:
            status, why = RunStatus.FAILED, f"worker {worker_id} stopped during this trial; the trial runs again"
        tracking.direct.end(run.info.run_id, RunStatus.to_string(status), why)


def trials_table(session: Session, tuner: Any, parent_run_id: str) -> pd.DataFrame:
    """One row per trial: status, objective, hyperparameters, the run that counts for it (report.snapshot's
    rule) and its test metrics, best first."""
    client = session.store.client()
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


def fail_on_tracking_failures(tracking: Tracking, parent_run_id: str | None, failures: list[str]) -> None:
    """A search whose MLflow writes failed ends with exit status 3 (not 0), and says so on its parent run
    (when the store takes that write)."""
    if not failures:
        return
    if parent_run_id is not None:
        with contextlib.suppress(MlflowException, OSError):  # the store that failed may refuse this too
            tracking.direct.set_tags(
                parent_run_id,
                {TRACKING_FAILURES_TAG: len(failures), f"{TRACKING_FAILURES_TAG}_first": failures[0].strip()},
            )
    raise TrackingIncompleteError(
        f"the search finished, but {_failures_in_words(failures)}. The trials and the champion are as printed; "
        "the runs in MLflow lack those writes (see the tag xraycnn.tracking_failures on the parent run)"
    )
