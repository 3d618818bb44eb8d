"""Steps every training job shares: experiment file -> config -> data -> store, and the final publishing
of a model (test evaluation, plots, predictions, registry).

The order matters: everything that can be wrong with the user's input (experiment file, data layout,
unreadable data) is checked before anything is written to MLflow.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import pandas as pd
from mlflow.exceptions import MlflowException
from rich.console import Console

from xraycnn import paths, threads
from xraycnn.assessment import Assessment, assess, log_assessment
from xraycnn.config import Experiment
from xraycnn.data.dataset import PreparedData, prepare_data
from xraycnn.data.external import read_sources
from xraycnn.data.preprocess import film_preprocessing_of
from xraycnn.errors import RegistryError
from xraycnn.evaluation import predict_probabilities
from xraycnn.evaluation.shortcuts import BORDERS_ONLY, LUNGS_ONLY, OUTSIDE_SHARE
from xraycnn.evaluation.threshold import choose_threshold
from xraycnn.inputs import Inputs
from xraycnn.precision import apply_policy
from xraycnn.registry import (
    THRESHOLD_RULE_TAG,
    THRESHOLD_TAG,
    Registration,
    Selection,
    current_champion,
    failure_message,
    log_and_register,
)
from xraycnn.tracking.runs import RunLogger
from xraycnn.tracking.store import TrackingStore, ensure_experiment, resolve_store
from xraycnn.tracking.tags import TAG_PREFIX, search_experiment_name


@dataclass(frozen=True)
class Session:
    experiment: Experiment
    data: PreparedData
    store: TrackingStore
    experiment_id: str
    precision: str
    precision_reason: str

    @property
    def runs(self) -> RunLogger:
        return RunLogger(self.store.client())


def mlflow_experiment_name(experiment: Experiment) -> str:
    return search_experiment_name(experiment.name)


def ensure_search_experiment(store: TrackingStore, experiment: Experiment) -> str:
    """The id of the MLflow experiment that holds `experiment`'s runs, created if missing."""
    return ensure_experiment(
        store, mlflow_experiment_name(experiment), {f"{TAG_PREFIX}experiment_file": experiment.name}
    )


def open_session(inputs: Inputs, tracking_uri: str | None, console: Console) -> Session:
    """Decode the data (once per process), pick the precision, open the store and the experiment."""
    config = inputs.experiment.config
    precision, reason = apply_policy(config.training.precision)
    with console.status(
        f"Decoding {len(inputs.files.train) + len(inputs.files.test)} images from {inputs.files.root} ..."
    ):
        data = prepare_data(inputs.files, config.data, config.seed)
    counts = {name: getattr(data, name).class_counts() for name in ("train", "val", "test")}
    console.print(
        f"Data {data.root} (digest {data.digest}): "
        + ", ".join(
            f"{name} {sum(c.values())} ({', '.join(f'{k} {v}' for k, v in c.items())})" for name, c in counts.items()
        )
        + f"; {data.image_size}x{data.image_size}x{data.channels}; precision {precision} ({reason})"
    )
    if data.skipped:
        console.print(
            f"[yellow]Skipped {len(data.skipped)} unreadable file(s)[/]; the list is logged as skipped_files.csv"
        )
    store = resolve_store(tracking_uri)
    experiment_id = ensure_search_experiment(store, inputs.experiment)
    return Session(inputs.experiment, data, store, experiment_id, precision, reason)


def git_commit(root: Path) -> tuple[str | None, bool]:
    """(commit, dirty) of the checkout at `root`, or (None, False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, False
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def run_tags(session: Session, kind: str) -> dict[str, Any]:
    """Tags of a search's parent run or a training run: enough to reproduce it."""
    experiment = session.experiment
    commit, dirty = git_commit(paths.project_root())
    try:
        file_label = str(experiment.path.relative_to(paths.project_root()))
    except ValueError:
        file_label = str(experiment.path)
    return {
        f"{TAG_PREFIX}kind": kind,
        f"{TAG_PREFIX}experiment_file": file_label,
        f"{TAG_PREFIX}experiment_sha256": experiment.sha256,
        f"{TAG_PREFIX}dataset_digest": session.data.digest,
        f"{TAG_PREFIX}dataset_root": session.data.root,
        f"{TAG_PREFIX}tuner": experiment.config.tuner.algorithm,
        f"{TAG_PREFIX}objective": experiment.config.tuner.objective,
        f"{TAG_PREFIX}selection_rule": experiment.config.tuner.selection_rule(),
        f"{TAG_PREFIX}overrides": " ".join(experiment.override_args()[1::2]) or None,
        f"{TAG_PREFIX}seed": experiment.config.seed,
        f"{TAG_PREFIX}precision": session.precision,
        f"{TAG_PREFIX}precision_reason": session.precision_reason,
        f"{TAG_PREFIX}threads": threads.describe(),
        "mlflow.source.git.commit": commit,
        f"{TAG_PREFIX}git_dirty": dirty if commit else None,
        "mlflow.source.name": "xraycnn",
        "mlflow.user": os.environ.get("USER") or os.environ.get("LOGNAME"),
    }


def fixed_params(session: Session) -> dict[str, Any]:
    """Every fixed setting of a run: the experiment's knobs, the data's shape, the resolved precision."""
    return {
        **session.experiment.config.flat(),
        **{f"override.{key}": value for key, value in session.experiment.overrides},
        **session.data.summary(),
        "training.precision_policy": session.precision,
        "model.optimizer": "adam",
        "model.loss": "binary_crossentropy",
    }


def log_skipped_files(session: Session, run_id: str) -> None:
    if session.data.skipped:
        frame = pd.DataFrame([{"path": s.path, "reason": s.reason} for s in session.data.skipped])
        session.runs.log_dataframe_csv(run_id, frame, "data/skipped_files.csv")


def final_assessment(session: Session, model: keras.Model) -> Assessment:
    """The final model judged as every champion is: its threshold chosen on validation (never on test),
    then the test set scored at it and at 0.5, with intervals and Grad-CAM."""
    config = session.experiment.config
    chosen = choose_threshold(
        session.data.val.labels,
        predict_probabilities(model, session.data.val.images),
        config.evaluation.threshold,
        config.evaluation.target_sensitivity,
    )
    root = Path(session.data.root)
    return assess(
        model,
        session.data.test,
        chosen.value,
        chosen.describe(),
        sources=read_sources(root, [root / f for f in session.data.test.files]),  # per source, given a manifest
        resamples=config.evaluation.bootstrap_resamples,
        seed=config.seed,
    )


def publish_model(
    session: Session,
    run_id: str,
    model: keras.Model,
    assessment: Assessment,
    selection: Selection,
    title: str,
    version_tags: dict[str, Any],
    description: str,
) -> Registration:
    """Log the final model's assessment (metrics with intervals, plots, Grad-CAM, predictions) to `run_id`,
    which must be the active run, then register it carrying its threshold; the alias moves last."""
    runs, config = session.runs, session.experiment.config
    try:
        log_assessment(runs, run_id, assessment, f"{title}, test", prefix="test_")
    except (MlflowException, OSError) as exc:
        champion = current_champion(runs.client, config.registry.model_name)
        raise RegistryError(failure_message(f"logging the test evaluation of {title}", exc, champion)) from exc
    overall = assessment.clinical.overall
    steps = film_preprocessing_of(model)
    preprocess = steps.key() if steps is not None else "none"
    tags = {
        **version_tags,
        f"{TAG_PREFIX}preprocess": preprocess,
        f"{TAG_PREFIX}dataset_digest": session.data.digest,
        f"{TAG_PREFIX}image_size": session.data.image_size,
        f"{TAG_PREFIX}color_mode": config.data.color_mode,
        f"{TAG_PREFIX}source_run_id": run_id,
        THRESHOLD_TAG: repr(assessment.threshold),
        THRESHOLD_RULE_TAG: assessment.clinical.threshold_rule,
        **{
            f"{TAG_PREFIX}test_{k}": f"{overall.metrics[k]:.4f}"
            for k in ("auc", "accuracy", "sensitivity", "specificity")
        },
        **{
            f"{TAG_PREFIX}test_{k}": f"{v:.4f}"
            for k, v in assessment.audit.overall.values.items()
            if v == v  # NaN: undefined on this set
        },
        **{
            f"{TAG_PREFIX}test_thr_{k}": f"{overall.metrics[f'thr_{k}']:.4f}"
            for k in ("accuracy", "sensitivity", "specificity")
        },
    }
    registration = log_and_register(
        model,
        model_name=config.registry.model_name,
        objective=config.tuner.objective,
        selection=selection,
        direction=config.tuner.direction,
        tags=tags,
        description=description,
        metadata={
            "threshold": assessment.threshold,
            "threshold_rule": assessment.clinical.threshold_rule,
            "threshold_chosen_on": "validation",
            "preprocess": preprocess,
        },
    )
    runs.set_tags(
        run_id,
        {
            f"{TAG_PREFIX}registered_model": registration.name,
            f"{TAG_PREFIX}registered_version": registration.version,
            f"{TAG_PREFIX}registered_alias": registration.alias,
        },
    )
    return registration


def describe_assessment(assessment: Assessment) -> str:
    """One sentence of test figures with their 95 % intervals, for descriptions and the console."""
    overall = assessment.clinical.overall

    def figure(key: str, label: str) -> str:
        interval = overall.intervals.get(key)
        return f"{label} {overall.metrics[key]:.4f}" + (f" {interval}" if interval else "")

    audit = assessment.audit.overall
    return (
        f"at threshold {assessment.threshold:.3f}: {figure('thr_accuracy', 'accuracy')}, "
        f"{figure('thr_sensitivity', 'sensitivity')}, {figure('thr_specificity', 'specificity')}; "
        f"{figure('auc', 'AUC')}; at 0.5: {figure('accuracy', 'accuracy')}; shortcut audit: borders-only AUC "
        f"{audit.describe(BORDERS_ONLY)}, lungs-only AUC {audit.describe(LUNGS_ONLY)}, Grad-CAM heat outside "
        f"the lungs {audit.describe(OUTSIDE_SHARE)} (95 % bootstrap intervals)"
    )


def report_registration(console: Console, registration: Registration, assessment: Assessment) -> None:
    colour = "green" if registration.alias == "champion" else "yellow"
    console.print(
        f"Registered [bold]{registration.name}[/] v{registration.version} as [{colour}]{registration.alias}[/] "
        f"({registration.reason}). Test {describe_assessment(assessment)}.",
        highlight=False,
    )
    console.print(
        f"Load it with mlflow.keras.load_model('models:/{registration.name}@{registration.alias}')"
        + (" after `import xraycnn.model` (it carries its preprocessing layer)." if registration.preprocessed else ".")
    )
