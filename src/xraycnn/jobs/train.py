"""`xraycnn train`: one fixed network (every search-space entry a single value) as one tracked MLflow run.

Same data, model, metrics, evaluation and registry as a search trial; used for the published notebook's
network (`experiments/seed.toml`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
from rich.console import Console

from xraycnn.config import Fixed
from xraycnn.errors import ConfigError, InterruptedByUserError
from xraycnn.evaluation.assessment import Assessment
from xraycnn.evaluation.shortcuts import BORDERS_ONLY
from xraycnn.evaluation.trial_scoring import TrialScorer
from xraycnn.jobs.inputs import check_inputs
from xraycnn.jobs.publish import describe_assessment, final_assessment, publish_model, report_registration
from xraycnn.jobs.session import Session, fixed_params, open_session, run_tags
from xraycnn.jobs.spooling import notice_to
from xraycnn.model.hypermodel import CxrHyperModel
from xraycnn.registry import Registration, Selection
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.tags import BEST_EPOCH_TAG, TAG_PREFIX
from xraycnn.tracking.trial_tracker import EpochHistory
from xraycnn.tracking.writer import RunWriter
from xraycnn.tuning.progress import describe_hyperparameters


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    assessment: Assessment
    registration: Registration
    best_value: float
    wall_seconds: float


class _EpochLogger(keras.callbacks.Callback):
    """Per-epoch metrics to the run at step = epoch number, and one line per epoch on the console."""

    def __init__(self, runs: RunWriter, run_id: str, history: EpochHistory, console: Console, epochs: int) -> None:
        super().__init__()
        self.runs, self.run_id, self.history, self.console, self.epochs = (
            runs,
            run_id,
            history,
            console,
            epochs,
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = self.history.add(epoch + 1, logs or {})
        self.runs.log_metrics(self.run_id, values, step=epoch + 1)
        shown = " ".join(f"{k} {values[k]:.4f}" for k in ("loss", "auc", "val_loss", "val_auc") if k in values)
        self.console.print(f"epoch {epoch + 1}/{self.epochs} {shown}")


def run_train(
    experiment_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    console: Console | None = None,
    overrides: Sequence[str] = (),
) -> TrainResult:
    console = console or Console()
    started = time.monotonic()
    inputs = check_inputs(experiment_path, data_dir, overrides)
    config = inputs.experiment.config
    ranged = [name for name, spec in config.space.items() if not isinstance(spec, Fixed)]
    if ranged:
        raise ConfigError(
            f"{inputs.experiment.path}: train needs one value per hyperparameter, but space.{', space.'.join(ranged)} "
            "are ranges or choices; fix them (see experiments/seed.toml) or run `xraycnn search` instead"
        )
    session = open_session(inputs, tracking_uri, console)
    hypermodel = CxrHyperModel(config, session.data)
    scorer = TrialScorer(hypermodel)  # also the epochs' selection figures, when the tuner is guarded
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    model = hypermodel.build(hp)
    epochs = int(config.space.epochs.value) if isinstance(config.space.epochs, Fixed) else config.budget.max_epochs
    params = {**fixed_params(session), **hp.values, "epochs": epochs}
    console.print(f"Training {inputs.experiment.name}: {describe_hyperparameters(params)}, up to {epochs} epochs")

    tracking = Tracking(session.store, notice_to(console))
    run_id = tracking.new_run(
        session.experiment_id,
        f"train-{inputs.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        run_tags(session, "train"),
    )
    try:
        with tracking, tracking.job_run(run_id, active=True):
            registration, assessment, best_value = _train_and_publish(
                session, tracking, scorer, hp, model, params, epochs, run_id, console
            )
    except KeyboardInterrupt:
        raise InterruptedByUserError(
            f"training {inputs.experiment.name} stopped; its run {run_id} is closed as KILLED. Run the same "
            "command again to train from the start"
        ) from None
    report_registration(console, registration, assessment)
    return TrainResult(run_id, assessment, registration, best_value, time.monotonic() - started)


def _train_and_publish(
    session: Session,
    tracking: Tracking,
    scorer: TrialScorer,
    hp: kt.HyperParameters,
    model: keras.Model,
    params: dict[str, Any],
    epochs: int,
    run_id: str,
    console: Console,
) -> tuple[Registration, Assessment, float]:
    """Train into the open run `run_id`, audit and judge the best epoch's network, publish it."""
    runs, config, name = tracking.runs, session.experiment.config, session.experiment.name
    hypermodel = scorer.hypermodel
    objective, direction = config.tuner.objective, config.tuner.direction
    runs.log_params(run_id, params)
    runs.log_dataset(run_id, session.data)
    runs.log_skipped_files(run_id, session.data.skipped)
    history = EpochHistory()
    # Where the space holds epochs, fit() reads them from hp; under Hyperband settings they come from here.
    epochs_from_space = config.epochs_spec() is not None
    hypermodel.fit(
        hp,
        model,
        callbacks=[_EpochLogger(runs, run_id, history, console, epochs)],
        epochs=None if epochs_from_space else epochs,
    )
    best_epoch = history.best_epoch(config.tuner.selection_metric, direction)
    best_value = history.metrics[objective][history.epochs.index(best_epoch)] if best_epoch else float("nan")
    runs.log_metrics(run_id, {f"best_{objective}": best_value})
    runs.set_tags(run_id, {BEST_EPOCH_TAG: best_epoch})
    title = name
    runs.log_learning_curves(run_id, history.epochs, history.metrics, title)
    # EarlyStopping restored the best epoch's weights: audited on validation as a trial is, then judged
    scores = scorer.scores(hp, model)
    audit = scores.audit
    runs.log_metrics(run_id, scores.validation_metrics())
    model = hypermodel.registered_model(hp, model)
    assessment = final_assessment(session, model)
    description = (
        f"Fixed network of experiment {name} ({describe_hyperparameters(params)}); {objective} "
        f"{best_value:.4f} at epoch {best_epoch}; test {describe_assessment(assessment)}."
    )
    selection = Selection(
        best_value,
        audit.values[BORDERS_ONLY],
        config.tuner.max_borders_only_auc,
        scores.shift.worst_specificity,
        config.tuner.min_shift_specificity,
    )
    registration = publish_model(
        session,
        tracking,
        run_id,
        model,
        assessment,
        selection,
        title,
        {f"{TAG_PREFIX}experiment": name},
        description,
    )
    return registration, assessment, best_value
