"""`xraycnn search`: a Keras Tuner search with every trial tracked in MLflow and the best model registered.

experiment file -> config -> data -> hypermodel -> tuner (+ tracking hooks) -> evaluation -> registry.
Re-running the same experiment resumes it (finished trials are not run again); `fresh=True` starts over.
The session (jobs.session), the parent run (jobs.parent), the trials (jobs.trials), a distributed search's
workers (jobs.worker) and the champion's publishing (jobs.publish) each have their own module; this one puts
them in order.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from keras_tuner.engine.trial import TrialStatus
from mlflow.entities import RunStatus
from rich.console import Console

from xraycnn import paths
from xraycnn.errors import InterruptedByUserError, TrackingStoreUnavailableError, XrayCnnError
from xraycnn.evaluation.assessment import Assessment
from xraycnn.jobs.inputs import check_inputs
from xraycnn.jobs.parent import FINAL_DRAIN_S, parent_run
from xraycnn.jobs.publish import describe_assessment, final_assessment, publish_model, report_registration
from xraycnn.jobs.session import Session, open_session
from xraycnn.jobs.spooling import await_store, open_spool, send_leftovers, store_wait_seconds
from xraycnn.jobs.trials import (
    DONE,
    fail_on_tracking_failures,
    last_failure,
    trial_listeners,
    trials_table,
)
from xraycnn.jobs.worker import run_worker
from xraycnn.model.hypermodel import CxrHyperModel
from xraycnn.registry import Registration, Selection
from xraycnn.report import write_report
from xraycnn.runtime.disk import disk_full_error, is_disk_full
from xraycnn.tracking.lifecycle import INTERRUPTED
from xraycnn.tracking.spool import remove_if_empty
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.store import wait_for_store
from xraycnn.tracking.tags import ORACLE_TAG, TAG_PREFIX
from xraycnn.tuning.cluster import ClusterRole
from xraycnn.tuning.progress import top_trials_table
from xraycnn.tuning.state import SearchState, search_lock
from xraycnn.tuning.tuners import SearchStopped, build_tuner, planned_budget


class SearchInterruptedError(InterruptedByUserError):
    """Ctrl-C: the runs are closed and the search can be resumed."""


@dataclass(frozen=True)
class SearchResult:
    parent_run_id: str
    experiment_id: str
    best_trial_id: str
    best_score: float
    assessment: Assessment | None  # None when the search was already complete and registered
    registration: Registration | None
    trials: pd.DataFrame
    wall_seconds: float


def run_search(
    experiment_path: str | Path,
    *,
    fresh: bool = False,
    data_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    tuner_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
    console: Console | None = None,
    cluster: ClusterRole | None = None,
    overrides: Sequence[str] = (),
) -> SearchResult | None:
    """Run or resume the search. With `cluster`, this process is the chief of a distributed search (serves
    the oracle, owns the parent run, registers the champion) or one of its workers (returns None)."""
    console = console or Console()
    started = time.monotonic()
    inputs = check_inputs(experiment_path, data_dir, overrides)
    experiment = inputs.experiment
    project_dir = Path(tuner_dir or paths.tuner_root()).resolve() / experiment.name
    if cluster is not None and cluster.role == "worker":
        run_worker(inputs, project_dir, tracking_uri, console, cluster)
        return None

    with search_lock(project_dir, experiment.name):
        session = open_session(inputs, tracking_uri, console)
        wait = store_wait_seconds()
        failures = send_leftovers(project_dir, console, wait)  # before --fresh, so a previous search keeps them
        if fresh and project_dir.exists():  # only once the inputs are known to be good
            shutil.rmtree(project_dir)
        runs = open_spool(project_dir, "chief" if cluster is not None else "main", session.store.uri, console)
        try:
            with parent_run(session, runs, project_dir, console, resume=not fresh) as state:
                try:
                    outcome = _search_and_register(session, runs, state, project_dir, console, cluster, started, wait)
                except TrackingStoreUnavailableError:
                    state.unfinished = {
                        "experiment": str(experiment.path.resolve()),
                        "overrides": experiment.override_args()[1::2],
                        "data": session.data.root,
                    }
                    state.save(project_dir)
                    raise
        finally:
            runs.sender.close(timeout=FINAL_DRAIN_S, unless_away=True)
            remove_if_empty(runs.sender.spool.directory)
        best, trials, assessment, registration, wall = outcome
        failures += runs.sender.take_failures()
        if assessment is not None:  # after the run ended, so the report shows its status and duration
            _write_report(session, state.parent_run_id, Path(reports_dir or paths.reports_root()), console)
        console.print(f"Done in {wall / 60:.1f} min. Compare the runs with `make ui`.")
        fail_on_tracking_failures(session, state.parent_run_id, failures)
        return SearchResult(
            state.parent_run_id,
            session.experiment_id,
            best.trial_id,
            float(best.score),
            assessment,
            registration,
            trials,
            wall,
        )


def _search_and_register(
    session: Session,
    runs: SpooledRuns,
    state: SearchState,
    project_dir: Path,
    console: Console,
    cluster: ClusterRole | None,
    started: float,
    wait: float,
) -> tuple[Any, pd.DataFrame, Assessment | None, Registration | None, float]:
    """The trials still to run, then (once every write about them is in the store) the champion."""
    if cluster is not None:  # workers find the parent run by the oracle they were given
        runs.set_tags(state.parent_run_id, {ORACLE_TAG: cluster.oracle})
        cluster.apply()
    state.unfinished = None
    tuner, hypermodel = _tuner(session, runs, state, project_dir, console, cluster)
    await_store(runs, wait, "the champion is registered only once its trials' runs are in the store")
    # read next: a chief's own spool may be empty while the store is still away after its workers' last writes
    wait_for_store(session.store, lambda line: console.print(line, highlight=False), wait)
    best, trials = _best_trial(session, tuner, state.parent_run_id, console)
    assessment, registration = _champion(session, runs, state, project_dir, tuner, hypermodel, best, trials, console)
    wall = time.monotonic() - started
    runs.log_metrics(
        state.parent_run_id,
        {
            "search_wall_seconds": wall,
            "trials_completed": float((trials["status"] == "COMPLETED").sum()),
            "tracking_writer_cpu_seconds": runs.sender.cpu_seconds,
        },
    )
    await_store(runs, wait, "the search's last writes are not all in the store")
    state.save(project_dir)  # no longer unfinished
    return best, trials, assessment, registration, wall


def _tuner(
    session: Session,
    runs: SpooledRuns,
    state: SearchState,
    project_dir: Path,
    console: Console,
    cluster: ClusterRole | None,
) -> tuple[Any, CxrHyperModel]:
    """Build the tuner over its saved state and run the trials still to run (a chief: serve them)."""
    experiment, config = session.experiment, session.experiment.config
    hypermodel = CxrHyperModel(config, session.data)
    tracker, progress = trial_listeners(session, runs, state.parent_run_id, console, hypermodel)
    listeners = [] if cluster is not None else [tracker, progress]  # a chief trains nothing: its workers do
    tuner = build_tuner(config, hypermodel, project_dir.parent, project_dir.name, listeners)

    done = [t for t in tuner.oracle.trials.values() if t.status in DONE]
    best_so_far = None
    if any(t.status == TrialStatus.COMPLETED for t in done):
        best = tuner.oracle.get_best_trials(1)[0]
        best_so_far = (float(best.score), best.trial_id)
        console.print(f"Resuming {experiment.name}: {len(done)} trial(s) already done, not run again.")
    planned_trials, planned_epochs = planned_budget(config)
    console.print(
        f"Searching {experiment.name} with {config.tuner.algorithm} on {config.tuner.objective} "
        f"({config.tuner.direction}); budget {planned_trials} trials / {planned_epochs} epochs at most; MLflow run "
        f"{state.parent_run_id} in {session.store.uri}"
    )
    rule = config.tuner.selection_rule()
    console.print(f"Selection: {rule}.", highlight=False)
    if cluster is not None:
        console.print(f"Chief: serving the oracle on {cluster.oracle}; the workers train the trials.")
    else:
        progress.start(already_done=len(done), best=best_so_far)
    try:
        tuner.search(verbose=0)
    except KeyboardInterrupt:
        progress.stop()
        tracker.close_open_runs(RunStatus.to_string(RunStatus.KILLED), INTERRUPTED)
        raise SearchInterruptedError(
            f"the search of {experiment.name} stopped; its open runs are closed as KILLED. Run the same command "
            f"again to resume (finished trials are kept in {project_dir})."
        ) from None
    except SearchStopped as stop:
        progress.stop()
        tracker.close_open_runs(RunStatus.to_string(RunStatus.KILLED), str(stop.error))
        raise stop.error from None
    except BaseException as exc:
        progress.stop()
        tracker.close_open_runs(RunStatus.to_string(RunStatus.FAILED), traceback.format_exc())
        if not isinstance(exc, XrayCnnError) and is_disk_full(exc):  # Keras Tuner saving its state
            raise disk_full_error(exc, f"the search's state in {project_dir}") from None
        if isinstance(exc, RuntimeError) and "consecutive failures" in str(exc):
            raise XrayCnnError(
                f"{exc} The last error: {last_failure(tuner)}. See the FAILED trial runs in MLflow; fix the cause and "
                "run the same command to resume."
            ) from None
        raise
    progress.stop()
    return tuner, hypermodel


def _best_trial(session: Session, tuner: Any, parent_run_id: str, console: Console) -> tuple[Any, pd.DataFrame]:
    trials = trials_table(session, tuner, parent_run_id)
    best_trials = tuner.oracle.get_best_trials(1)
    if not best_trials:
        raise XrayCnnError(
            f"no trial of {session.experiment.name} completed; see the FAILED trial runs in MLflow for the errors"
        )
    console.print(top_trials_table(trials.to_dict("records"), session.experiment.config.tuner))  # type: ignore[arg-type]
    return best_trials[0], trials


def _champion(
    session: Session,
    runs: SpooledRuns,
    state: SearchState,
    project_dir: Path,
    tuner: Any,
    hypermodel: CxrHyperModel,
    best: Any,
    trials: pd.DataFrame,
    console: Console,
) -> tuple[Assessment | None, Registration | None]:
    """Register the best trial's model, unless this search registered it already (a re-run of a finished one)."""
    if state.registered.get("trial_id") == best.trial_id:
        console.print(
            f"Search already complete; trial {best.trial_id} is registered as {state.registered['name']} "
            f"v{state.registered['version']} ({state.registered['alias']}). Use --fresh to search again."
        )
        return None, None
    assessment, registration = _finalise(session, runs, tuner, hypermodel, best, trials, state.parent_run_id)
    state.registered = {
        "trial_id": best.trial_id,
        "name": registration.name,
        "version": registration.version,
        "alias": registration.alias,
    }
    state.save(project_dir)
    report_registration(console, registration, assessment)
    return assessment, registration


def _write_report(session: Session, parent_run_id: str, reports_dir: Path, console: Console) -> None:
    """The search report; a failure here costs the report only (the search and its champion stand), and
    `xraycnn report` makes it again."""
    try:
        report = write_report(session.runs.client, parent_run_id, reports_dir)
    except Exception as exc:  # reported, never fatal: everything it reads is already safe in MLflow
        console.print(
            f"[yellow]warning:[/] the search report failed ({type(exc).__name__}: {exc}); make it again with "
            f"`xraycnn report {session.experiment.name}`",
            highlight=False,
        )
        return
    console.print(f"Report: {report.page}")


def _finalise(
    session: Session,
    runs: SpooledRuns,
    tuner: Any,
    hypermodel: CxrHyperModel,
    best: Any,
    trials: pd.DataFrame,
    parent_run_id: str,
) -> tuple[Assessment, Registration]:
    """Evaluate the best trial's model on test, log the search's summary artifacts, register the model."""
    experiment, tuner_config = session.experiment, session.experiment.config.tuner
    model = hypermodel.registered_model(best.hyperparameters, tuner.load_model(best))
    assessment = final_assessment(session, model)
    row = trials.loc[trials["trial_id"] == best.trial_id].iloc[0]
    best_run = row["run_id"]
    runs.set_tags(parent_run_id, {f"{TAG_PREFIX}best_trial_id": best.trial_id, f"{TAG_PREFIX}best_run_id": best_run})
    value = _metric(row, f"best_{tuner_config.objective}")
    if value is None:  # a trial run that lacks it (its writes failed): what the score says
        value = tuner_config.verdict(float(best.score)).objective
    best_metrics = {f"best_{tuner_config.selection_metric}": float(best.score)}
    if value is not None:
        best_metrics[f"best_{tuner_config.objective}"] = value
    runs.log_metrics(parent_run_id, best_metrics)
    runs.log_dataframe_csv(parent_run_id, trials, "trials.csv")
    selection = Selection(
        float("nan") if value is None else value,
        _metric(row, "best_val_borders_only_auc"),
        tuner_config.max_borders_only_auc,
        _metric(row, "best_val_shift_worst_specificity"),
        tuner_config.min_shift_specificity,
    )
    config = session.experiment.config
    guarded = (
        ""
        if selection.shift_specificity is None
        else f", NORMAL specificity under the worst acquisition change {selection.shift_specificity:.3f}"
    )
    calibrated = f"{assessment.calibration.describe()}. " if assessment.calibration else ""
    description = (
        f"Best trial {best.trial_id} of experiment {experiment.name} ({config.tuner.algorithm} search on "
        f"{config.tuner.objective}): {config.tuner.objective} {selection.objective_value:.4f}{guarded}; "
        f"test {describe_assessment(assessment)}. "
        f"Threshold chosen on validation: {assessment.clinical.threshold_rule}. {calibrated}"
        f"Input: float32 {'x'.join(map(str, model.input_shape[1:]))} films, values 0-255 "
        "(xraycnn.prepare_images); the model applies its own preprocessing and calibration. Output: P(COVID19), "
        "calibrated on validation."
    )
    version_tags = {
        f"{TAG_PREFIX}experiment": experiment.name,
        f"{TAG_PREFIX}trial_id": best.trial_id,
        f"{TAG_PREFIX}trial_run_id": best_run,
        f"{TAG_PREFIX}search_run_id": parent_run_id,
    }
    title = f"{experiment.name} trial {best.trial_id}"
    registration = publish_model(session, parent_run_id, model, assessment, selection, title, version_tags, description)
    return assessment, registration


def _metric(row: pd.Series, name: str) -> float | None:
    value = row.get(name)
    return None if value is None or pd.isna(value) else float(value)


__all__ = ["SearchInterruptedError", "SearchResult", "run_search"]
