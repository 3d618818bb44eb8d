"""`xraycnn search`: a Keras Tuner search with every trial tracked in MLflow and the best model registered.

experiment file -> config -> data -> hypermodel -> tuner (+ tracking hooks) -> evaluation -> registry.
Re-running the same experiment resumes it (finished trials are not run again); `fresh=True` starts over.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from keras_tuner.engine.trial import TrialStatus
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from rich.console import Console

from xraycnn import paths
from xraycnn.assessment import Assessment
from xraycnn.errors import InterruptedByUserError, TrackingIncompleteError, XrayCnnError
from xraycnn.inputs import Inputs, check_inputs
from xraycnn.jobs.common import (
    Session,
    describe_assessment,
    final_assessment,
    fixed_params,
    log_skipped_files,
    mlflow_experiment_name,
    open_session,
    publish_model,
    report_registration,
    run_tags,
)
from xraycnn.model.hypermodel import CxrHyperModel
from xraycnn.registry import Registration, Selection
from xraycnn.report import write_report
from xraycnn.report.snapshot import last_attempts
from xraycnn.tracking.tags import (
    BEST_EPOCH_TAG,
    GATE_TAG,
    ORACLE_TAG,
    TAG_PREFIX,
    TRACKING_FAILURES_TAG,
    WORKER_TAG,
)
from xraycnn.tracking.trial_tracker import TrialTracker
from xraycnn.tuning.cluster import ClusterRole, patient_oracle_client
from xraycnn.tuning.progress import SearchProgress, top_trials_table
from xraycnn.tuning.state import SearchState, search_lock
from xraycnn.tuning.tuners import build_tuner, planned_budget

DONE = (TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.INVALID)
PARENT_WAIT_S = 300


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
        _run_worker(inputs, project_dir, tracking_uri, console, cluster)
        return None

    with search_lock(project_dir, experiment.name):
        session = open_session(inputs, tracking_uri, console)
        if fresh and project_dir.exists():  # only once the inputs are known to be good
            shutil.rmtree(project_dir)
        state = None if fresh else SearchState.load(project_dir)
        _check_resumable(state, session, project_dir)
        if state is not None and not _run_exists(session, state.parent_run_id):
            console.print(
                "[yellow]The previous search's parent run is not in this store; starting a new parent run.[/]"
            )
            state = None
        if state is None:
            parent = mlflow.start_run(
                experiment_id=session.experiment_id,
                run_name=f"search-{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                tags={k: str(v) for k, v in run_tags(session, "search").items() if v is not None},
                description=_description(session),
                log_system_metrics=True,
            )
            state = SearchState(parent.info.run_id, session.store.uri, experiment.sha256, session.data.digest)
            new_parent = True
        else:
            mlflow.start_run(run_id=state.parent_run_id, log_system_metrics=True)
            new_parent = False
        try:
            if new_parent:
                session.runs.log_params(state.parent_run_id, fixed_params(session))
                session.runs.log_dataset(state.parent_run_id, session.data)
                log_skipped_files(session, state.parent_run_id)
                state.save(project_dir)
            else:
                _close_orphans(session, state.parent_run_id)
            if cluster is not None:  # workers find the parent run by the oracle they were given
                session.runs.set_tags(state.parent_run_id, {ORACLE_TAG: cluster.oracle})
                cluster.apply()
            reports = Path(reports_dir or paths.reports_root())
            return _search_and_register(session, state, project_dir, reports, console, started, cluster)
        except BaseException as exc:
            if mlflow.active_run() is not None:  # escaped before a status was set
                killed = isinstance(exc, KeyboardInterrupt | InterruptedByUserError)
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED if killed else RunStatus.FAILED))
            raise


def _trial_listeners(
    session: Session,
    parent_run_id: str,
    console: Console,
    hypermodel: CxrHyperModel,
    run_tags: dict[str, str] | None = None,
) -> tuple[TrialTracker, SearchProgress]:
    """What listens to the trials a process trains: their MLflow runs under `parent_run_id`, and the console."""
    config = session.experiment.config
    tracker = TrialTracker(
        session.runs,
        session.experiment_id,
        parent_run_id,
        fixed_params(session),
        session.data,
        config.tuner,
        hypermodel.trial_figures,
        run_tags=run_tags,
    )
    progress = SearchProgress(
        console, config.tuner.objective, config.tuner.direction, *planned_budget(config), tuner=config.tuner
    )
    return tracker, progress


def _report_tracking_failures(console: Console, failures: list[str]) -> None:
    """MLflow writes that failed in the background: said once, with the first error, never swallowed."""
    if failures:
        console.print(f"[yellow]warning:[/] {_failures_in_words(failures)}", highlight=False)


def _failures_in_words(failures: list[str]) -> str:
    first = failures[0].strip().splitlines()
    return (
        f"{len(failures)} MLflow write(s) failed; some trial runs may be incomplete. First: {first[0]} ... {first[-1]}"
    )


def _fail_on_tracking_failures(session: Session, parent_run_id: str | None, failures: list[str]) -> None:
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


def _search_and_register(
    session: Session,
    state: SearchState,
    project_dir: Path,
    reports_dir: Path,
    console: Console,
    started: float,
    cluster: ClusterRole | None = None,
) -> SearchResult:
    experiment, config = session.experiment, session.experiment.config
    parent_run_id = state.parent_run_id
    objective, direction = config.tuner.objective, config.tuner.direction
    hypermodel = CxrHyperModel(config, session.data)
    tracker, progress = _trial_listeners(session, parent_run_id, console, hypermodel)
    planned_trials, planned_epochs = planned_budget(config)
    listeners = [] if cluster is not None else [tracker, progress]  # a chief trains nothing: its workers do
    tuner = build_tuner(config, hypermodel, project_dir.parent, project_dir.name, listeners)

    done = [t for t in tuner.oracle.trials.values() if t.status in DONE]
    completed = [t for t in done if t.status == TrialStatus.COMPLETED]
    best_so_far = None
    if completed:
        best = tuner.oracle.get_best_trials(1)[0]
        best_so_far = (float(best.score), best.trial_id)
        console.print(f"Resuming {experiment.name}: {len(done)} trial(s) already done, not run again.")
    console.print(
        f"Searching {experiment.name} with {config.tuner.algorithm} on {objective} ({direction}); budget "
        f"{planned_trials} trials / {planned_epochs} epochs at most; MLflow run {parent_run_id} in {session.store.uri}"
    )
    console.print(f"Selection: {config.tuner.selection_rule()}.", highlight=False)
    if cluster is not None:
        console.print(f"Chief: serving the oracle on {cluster.oracle}; the workers train the trials.")
    else:
        progress.start(already_done=len(done), best=best_so_far)
    try:
        tuner.search(verbose=0)
    except KeyboardInterrupt:
        progress.stop()
        _report_tracking_failures(
            console,
            tracker.close_open_runs(RunStatus.to_string(RunStatus.KILLED), "interrupted by the user (Ctrl-C)"),
        )
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise SearchInterruptedError(
            f"the search of {experiment.name} stopped; its open runs are closed as KILLED. Run the same command "
            f"again to resume (finished trials are kept in {project_dir})."
        ) from None
    except BaseException as exc:
        progress.stop()
        _report_tracking_failures(
            console, tracker.close_open_runs(RunStatus.to_string(RunStatus.FAILED), traceback.format_exc())
        )
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        if isinstance(exc, RuntimeError) and "consecutive failures" in str(exc):
            raise XrayCnnError(
                f"{exc} The last error: {_last_failure(tuner)}. See the FAILED trial runs in MLflow; fix the cause and "
                "run the same command to resume."
            ) from None
        raise
    progress.stop()
    failures = tracker.flush()  # the trial runs are complete from here on
    _report_tracking_failures(console, failures)

    trials = trials_table(session, tuner, parent_run_id)
    best_trials = tuner.oracle.get_best_trials(1)
    if not best_trials:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise XrayCnnError(
            f"no trial of {experiment.name} completed; see the FAILED trial runs in MLflow for the errors"
        )
    best = best_trials[0]
    console.print(top_trials_table(trials.to_dict("records"), config.tuner))  # type: ignore[arg-type]

    assessment: Assessment | None = None
    registration: Registration | None = None
    if state.registered.get("trial_id") == best.trial_id:
        console.print(
            f"Search already complete; trial {best.trial_id} is registered as {state.registered['name']} "
            f"v{state.registered['version']} ({state.registered['alias']}). Use --fresh to search again."
        )
    else:
        assessment, registration = _finalise(session, tuner, hypermodel, best, trials, parent_run_id)
        state.registered = {
            "trial_id": best.trial_id,
            "name": registration.name,
            "version": registration.version,
            "alias": registration.alias,
        }
        state.save(project_dir)
        report_registration(console, registration, assessment)
    wall = time.monotonic() - started
    session.runs.log_metrics(
        parent_run_id,
        {
            "search_wall_seconds": wall,
            "trials_completed": float((trials["status"] == "COMPLETED").sum()),
            "tracking_writer_cpu_seconds": tracker.writer.cpu_seconds,
        },
    )
    mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))
    if assessment is not None:  # after the end, so the report shows the search's status and duration
        _write_report(session, parent_run_id, reports_dir, console)
    console.print(f"Done in {wall / 60:.1f} min. Compare the runs with `make ui`.")
    _fail_on_tracking_failures(session, parent_run_id, failures)
    return SearchResult(
        parent_run_id,
        session.experiment_id,
        best.trial_id,
        float(best.score),
        assessment,
        registration,
        trials,
        wall,
    )


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
    session: Session, tuner: Any, hypermodel: CxrHyperModel, best: Any, trials: pd.DataFrame, parent_run_id: str
) -> tuple[Assessment, Registration]:
    """Evaluate the best trial's model on test, log the search's summary artifacts, register the model."""
    experiment, tuner_config = session.experiment, session.experiment.config.tuner
    model = hypermodel.registered_model(best.hyperparameters, tuner.load_model(best))
    assessment = final_assessment(session, model)
    row = trials.loc[trials["trial_id"] == best.trial_id].iloc[0]
    best_run = row["run_id"]
    session.runs.set_tags(
        parent_run_id, {f"{TAG_PREFIX}best_trial_id": best.trial_id, f"{TAG_PREFIX}best_run_id": best_run}
    )
    value, _ = tuner_config.ungated(float(best.score))
    best_metrics = {f"best_{tuner_config.objective}": value, f"best_{tuner_config.selection_metric}": float(best.score)}
    session.runs.log_metrics(parent_run_id, best_metrics)
    session.runs.log_dataframe_csv(parent_run_id, trials, "trials.csv")
    title = f"{experiment.name} trial {best.trial_id}"
    selection = Selection(value, _metric(row, "best_val_borders_only_auc"), tuner_config.max_borders_only_auc)
    registration = _publish(session, parent_run_id, model, assessment, best, best_run, title, selection)
    return assessment, registration


def _metric(row: pd.Series, name: str) -> float | None:
    value = row.get(name)
    return None if value is None or pd.isna(value) else float(value)


def _publish(
    session: Session,
    parent_run_id: str,
    model: Any,
    assessment: Assessment,
    best: Any,
    best_run: str,
    title: str,
    selection: Selection,
) -> Registration:
    config = session.experiment.config
    description = (
        f"Best trial {best.trial_id} of experiment {session.experiment.name} ({config.tuner.algorithm} search on "
        f"{config.tuner.objective}): {config.tuner.objective} {selection.objective_value:.4f}; "
        f"test {describe_assessment(assessment)}. "
        f"Threshold chosen on validation: {assessment.clinical.threshold_rule}. "
        f"Input: float32 {'x'.join(map(str, model.input_shape[1:]))} films, values 0-255 "
        "(xraycnn.prepare_images); the model applies its own preprocessing. Output: P(COVID19)."
    )
    version_tags = {
        f"{TAG_PREFIX}experiment": session.experiment.name,
        f"{TAG_PREFIX}trial_id": best.trial_id,
        f"{TAG_PREFIX}trial_run_id": best_run,
        f"{TAG_PREFIX}search_run_id": parent_run_id,
    }
    return publish_model(session, parent_run_id, model, assessment, selection, title, version_tags, description)


def trials_table(session: Session, tuner: Any, parent_run_id: str) -> pd.DataFrame:
    """One row per trial: status, objective, hyperparameters, its last finished run and test metrics,
    best first."""
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


def _description(session: Session) -> str:
    config = session.experiment.config
    trials, epochs = planned_budget(config)
    return (
        f"{config.description}\n\nExperiment `{session.experiment.name}`: {config.tuner.algorithm} search on "
        f"{config.tuner.objective}, seed {config.seed}, budget {trials} trials / {epochs} epochs at most. Data "
        f"`{session.data.root}` (digest {session.data.digest}), {session.data.image_size}px {config.data.color_mode}."
    ).strip()


def _check_resumable(state: SearchState | None, session: Session, project_dir: Path) -> None:
    if state is None:
        return
    changed = []
    if state.experiment_sha256 != session.experiment.sha256:
        changed.append(f"the experiment file {session.experiment.path} (or its --set overrides)")
    if state.dataset_digest != session.data.digest:
        changed.append(f"the dataset (digest {state.dataset_digest} -> {session.data.digest})")
    if changed:
        raise XrayCnnError(
            f"{' and '.join(changed)} changed since the search in {project_dir} started, so it cannot be resumed: "
            "run with --fresh to start over, or restore what changed"
        )


def _run_exists(session: Session, run_id: str) -> bool:
    """Whether the store holds the search's parent run. Only the store's "not found" means no: any other
    failure (a tracking server restarting, a locked database) stops the resume instead of silently opening a
    second parent run."""
    try:
        run = session.runs.client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return False
        raise XrayCnnError(
            f"cannot tell whether the search's parent run {run_id} is in {session.store.uri} "
            f"({exc.error_code}: {str(exc.message).splitlines()[0]}); check that the tracking store is reachable "
            "and run the same command again to resume"
        ) from None
    return run.info.lifecycle_stage == "active" and run.info.experiment_id == session.experiment_id


def _close_orphans(session: Session, parent_run_id: str, worker_id: str | None = None) -> None:
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


def _find_parent(session: Session, cluster: ClusterRole, timeout: float = PARENT_WAIT_S) -> str:
    """The chief's parent run, found by the oracle address it carries (no shared files between hosts)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = session.runs.client.search_runs(
            [session.experiment_id],
            filter_string=f"tags.`{ORACLE_TAG}` = '{cluster.oracle}' and attributes.status = 'RUNNING'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
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


def _run_worker(
    inputs: Inputs, project_dir: Path, tracking_uri: str | None, console: Console, cluster: ClusterRole
) -> None:
    """Train the trials the chief's oracle hands out, each one a child run of the chief's parent run."""
    session = open_session(inputs, tracking_uri, console)
    config = session.experiment.config
    parent_run_id = _find_parent(session, cluster)
    _close_orphans(session, parent_run_id, cluster.worker_id)
    cluster.apply()
    hypermodel = CxrHyperModel(config, session.data)
    tracker, progress = _trial_listeners(session, parent_run_id, console, hypermodel, {WORKER_TAG: cluster.worker_id})
    tuner = build_tuner(config, hypermodel, project_dir.parent, project_dir.name, [tracker, progress])
    patient_oracle_client(tuner)
    console.print(f"Worker {cluster.worker_id}: trials from the oracle on {cluster.oracle}, parent run {parent_run_id}")
    try:
        tuner.search(verbose=0)
    except KeyboardInterrupt:
        tracker.close_open_runs(RunStatus.to_string(RunStatus.KILLED), "interrupted by the user (Ctrl-C)")
        raise InterruptedByUserError(f"worker {cluster.worker_id} stopped; its open run is closed as KILLED") from None
    except BaseException:
        _report_tracking_failures(
            console, tracker.close_open_runs(RunStatus.to_string(RunStatus.FAILED), traceback.format_exc())
        )
        raise
    failures = tracker.flush()
    _report_tracking_failures(console, failures)
    console.print(f"Worker {cluster.worker_id}: the oracle has no more trials; done.")
    _fail_on_tracking_failures(session, None, failures)


def _last_failure(tuner: Any) -> str:
    failed = [t for t in tuner.oracle.trials.values() if t.status == TrialStatus.FAILED and t.message]
    if not failed:
        return "unknown"
    lines = [line for line in failed[-1].message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown"


__all__ = ["SearchInterruptedError", "SearchResult", "mlflow_experiment_name", "run_search", "trials_table"]
