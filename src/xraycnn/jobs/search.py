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
from xraycnn.evaluation.trial_scoring import TrialScorer
from xraycnn.jobs.inputs import check_inputs
from xraycnn.jobs.parent import parent_run
from xraycnn.jobs.publish import describe_assessment, final_assessment, publish_model, report_registration
from xraycnn.jobs.session import Session, open_session
from xraycnn.jobs.spooling import send_leftovers, spooled_tracking, store_wait_seconds
from xraycnn.jobs.trials import (
    DONE,
    fail_on_tracking_failures,
    run_trials,
    trial_listeners,
    trials_table,
)
from xraycnn.jobs.worker import run_worker
from xraycnn.model.hypermodel import CxrHyperModel
from xraycnn.registry import Registration, Selection
from xraycnn.report import write_report
from xraycnn.tracking.lifecycle import INTERRUPTED
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.store import wait_for_store
from xraycnn.tracking.tags import ORACLE_TAG, TAG_PREFIX
from xraycnn.tuning.cluster import ClusterRole
from xraycnn.tuning.progress import top_trials_table
from xraycnn.tuning.state import SearchState, search_lock
from xraycnn.tuning.tuners import build_tuner, planned_budget


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
        process = "chief" if cluster is not None else "main"
        with (
            spooled_tracking(session.store, project_dir, process, console) as tracking,
            parent_run(session, tracking, project_dir, console, resume=not fresh) as state,
        ):
            try:
                outcome = SearchJob(session, tracking, state, project_dir, console, cluster, started, wait).run()
            except TrackingStoreUnavailableError:
                state.unfinished = {
                    "experiment": str(experiment.path.resolve()),
                    "overrides": experiment.override_args()[1::2],
                    "data": session.data.root,
                }
                state.save(project_dir)
                raise
        failures += tracking.take_failures()
        if outcome.assessment is not None:  # after the run ended, so the report shows its status and duration
            _write_report(session, state.parent_run_id, Path(reports_dir or paths.reports_root()), console)
        console.print(f"Done in {outcome.wall_seconds / 60:.1f} min. Compare the runs with `make ui`.")
        fail_on_tracking_failures(tracking, state.parent_run_id, failures)
        return SearchResult(
            state.parent_run_id,
            session.experiment_id,
            outcome.best.trial_id,
            float(outcome.best.score),
            outcome.assessment,
            outcome.registration,
            outcome.trials,
            outcome.wall_seconds,
        )


@dataclass(frozen=True)
class SearchOutcome:
    best: Any  # the best trial, by the tuner's selection metric
    trials: pd.DataFrame
    assessment: Assessment | None  # None when the search was already complete and registered
    registration: Registration | None
    wall_seconds: float


@dataclass
class SearchJob:
    """One search by this process (single or chief): its trials, then (once every write about them is in the
    store) the champion, judged on test and registered."""

    session: Session
    tracking: Tracking  # this process's writes to MLflow, through its spool
    state: SearchState
    project_dir: Path  # Keras Tuner's state of this experiment
    console: Console
    cluster: ClusterRole | None
    started: float  # time.monotonic() when the command started
    wait: float  # how long to wait for an unreachable store

    def run(self) -> SearchOutcome:
        session, tracking, state = self.session, self.tracking, self.state
        runs = tracking.runs
        if self.cluster is not None:  # workers find the parent run by the oracle they were given
            runs.set_tags(state.parent_run_id, {ORACLE_TAG: self.cluster.oracle})
            self.cluster.apply()
        state.unfinished = None
        tuner, hypermodel = self._trials()
        tracking.await_store(self.wait, "the champion is registered only once its trials' runs are in the store")
        # read next: a chief's own spool may be empty while the store is still away after its workers' last writes
        wait_for_store(session.store, lambda line: self.console.print(line, highlight=False), self.wait)
        best, trials = self._best_trial(tuner)
        assessment, registration = self._champion(tuner, hypermodel, best, trials)
        wall = time.monotonic() - self.started
        runs.log_metrics(
            state.parent_run_id,
            {
                "search_wall_seconds": wall,
                "trials_completed": float((trials["status"] == "COMPLETED").sum()),
                "tracking_writer_cpu_seconds": tracking.spooled.sender.cpu_seconds,
            },
        )
        tracking.await_store(self.wait, "the search's last writes are not all in the store")
        state.save(self.project_dir)  # no longer unfinished
        return SearchOutcome(best, trials, assessment, registration, wall)

    def _trials(self) -> tuple[Any, CxrHyperModel]:
        """Build the tuner over its saved state and run the trials still to run (a chief: serve them)."""
        session, console, project_dir = self.session, self.console, self.project_dir
        experiment, config = session.experiment, session.experiment.config
        hypermodel = CxrHyperModel(config, session.data)
        scorer = TrialScorer(hypermodel)
        tracker, progress = trial_listeners(session, self.tracking, self.state.parent_run_id, console, scorer)
        listeners = [] if self.cluster is not None else [tracker, progress]  # a chief trains nothing: its workers do
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
            f"({config.tuner.direction}); budget {planned_trials} trials / {planned_epochs} epochs at most; MLflow "
            f"run {self.state.parent_run_id} in {session.store.uri}"
        )
        console.print(f"Selection: {config.tuner.selection_rule()}.", highlight=False)
        if self.cluster is not None:
            console.print(f"Chief: serving the oracle on {self.cluster.oracle}; the workers train the trials.")
        else:
            progress.start(already_done=len(done), best=best_so_far)

        def interrupted() -> tuple[int, str, XrayCnnError]:
            error = SearchInterruptedError(
                f"the search of {experiment.name} stopped; its open runs are closed as KILLED. Run the same command "
                f"again to resume (finished trials are kept in {project_dir})."
            )
            return RunStatus.KILLED, INTERRUPTED, error

        try:
            run_trials(tuner, tracker.close_open_runs, interrupted, project_dir)
        finally:
            progress.stop()
        return tuner, hypermodel

    def _best_trial(self, tuner: Any) -> tuple[Any, pd.DataFrame]:
        session = self.session
        trials = trials_table(session, tuner, self.state.parent_run_id)
        best_trials = tuner.oracle.get_best_trials(1)
        if not best_trials:
            raise XrayCnnError(
                f"no trial of {session.experiment.name} completed; see the FAILED trial runs in MLflow for the errors"
            )
        self.console.print(top_trials_table(trials.to_dict("records"), session.experiment.config.tuner))  # type: ignore[arg-type]
        return best_trials[0], trials

    def _champion(
        self, tuner: Any, hypermodel: CxrHyperModel, best: Any, trials: pd.DataFrame
    ) -> tuple[Assessment | None, Registration | None]:
        """Register the best trial's model, unless this search registered it already (a re-run of a finished
        one)."""
        state = self.state
        if state.registered.get("trial_id") == best.trial_id:
            self.console.print(
                f"Search already complete; trial {best.trial_id} is registered as {state.registered['name']} "
                f"v{state.registered['version']} ({state.registered['alias']}). Use --fresh to search again."
            )
            return None, None
        model = hypermodel.registered_model(best.hyperparameters, tuner.load_model(best))
        assessment, registration = _finalise(self.session, self.tracking, model, best, trials, state.parent_run_id)
        state.registered = {
            "trial_id": best.trial_id,
            "name": registration.name,
            "version": registration.version,
            "alias": registration.alias,
        }
        state.save(self.project_dir)
        report_registration(self.console, registration, assessment)
        return assessment, registration


def _write_report(session: Session, parent_run_id: str, reports_dir: Path, console: Console) -> None:
    """The search report; a failure here costs the report only (the search and its champion stand), and
    `xraycnn report` makes it again."""
    try:
        report = write_report(session.store.client(), parent_run_id, reports_dir)
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
    tracking: Tracking,
    model: Any,
    best: Any,
    trials: pd.DataFrame,
    parent_run_id: str,
) -> tuple[Assessment, Registration]:
    """Evaluate the best trial's model (films in, its preprocessing inside) on test, log the search's summary
    artifacts, register the model."""
    experiment, tuner_config = session.experiment, session.experiment.config.tuner
    runs = tracking.runs
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
    registration = publish_model(
        session, tracking, parent_run_id, model, assessment, selection, title, version_tags, description
    )
    return assessment, registration


def _metric(row: pd.Series, name: str) -> float | None:
    value = row.get(name)
    return None if value is None or pd.isna(value) else float(value)


__all__ = ["SearchInterruptedError", "SearchResult", "run_search"]
