"""One MLflow child run per trial attempt, opened and closed from the tuner's trial hooks.

Each child run gets every hyperparameter and fixed setting as params, the per-epoch metrics at
`step = epoch number` (1-based: a Hyperband continuation from epoch 3 to 9 logs steps 4..9), the test
metrics of the trial's best epoch (`test_*`, reported only, never used for selection), the shortcut audit
of its best epoch on validation (`best_val_borders_only_auc`, `best_val_lungs_only_auc`,
`best_val_gradcam_outside_share`), its threshold there and its calls under acquisition changes at it
(`best_val_threshold`, `best_val_shift_worst_specificity`, `best_val_shift_<change>_specificity`, ...) and per
source (`best_val_source_<name>_thr_specificity`, ...), each with `_ci_low` / `_ci_high`; a learning-curve and
a confusion-matrix PNG, and status FINISHED or FAILED with the error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
from keras_tuner.engine.trial import Trial, TrialStatus
from mlflow.entities import RunStatus

from xraycnn.config import TunerConfig
from xraycnn.data.dataset import PreparedData
from xraycnn.errors import DiskFullError
from xraycnn.evaluation.trial_scoring import TrialScores
from xraycnn.model.space import choice_tokens
from xraycnn.tracking.sender import SpoolSender
from xraycnn.tracking.spooled_runs import SpooledRuns
from xraycnn.tracking.tags import BEST_EPOCH_TAG, GATE_TAG, GUARD_TAG, RUNG_STOP_TAG, TAG_PREFIX, TRIAL_ID_TAG
from xraycnn.tuning.rungs import RungStop
from xraycnn.tuning.tuners import SearchListener


@dataclass
class EpochHistory:
    """Per-epoch metrics of one run, on true epoch numbers."""

    epochs: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, epoch_number: int, logs: Mapping[str, float]) -> dict[str, float]:
        values = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        self.epochs.append(epoch_number)
        for key, value in values.items():
            self.metrics[key].append(value)
        return values

    def best_epoch(self, metric: str, direction: str) -> int | None:
        """The true epoch number where `metric` was best (Keras Tuner's best_step is relative to the fit)."""
        series = self.metrics.get(metric)
        if not series:
            return None
        pick = max if direction == "max" else min
        return self.epochs[series.index(pick(series))]


def hyperparameter_params(trial: Trial) -> dict[str, Any]:
    """The trial's active hyperparameter values (Hyperband's bookkeeping keeps its `tuner/` names)."""
    return dict(trial.hyperparameters.values)


def _short_float(value: float) -> str:
    """0.0012 -> '1.2e-3', 0.001 -> '1e-3', 0.3 -> '0.3': short enough for the UI's run list."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def run_name(trial_id: str, values: Mapping[str, Any]) -> str:
    """What the UI's run list shows for a trial: its number and the hyperparameters that tell trials apart,
    e.g. `trial-0007 f16-32-64 crop eq-global bn d0.3 lr1e-3` (`from-0003`: a Hyperband continuation of
    trial 3)."""
    parts = [f"trial-{int(trial_id):04d}" if trial_id.isdigit() else f"trial-{trial_id}"]
    blocks = int(values.get("conv_blocks", 0) or 0)
    filters = [str(values[f"filters_{b}"]) for b in range(1, blocks + 1) if f"filters_{b}" in values]
    if filters:
        parts.append("f" + "-".join(filters))
    parts.extend(choice_tokens(values))
    if "dropout" in values:
        parts.append(f"d{_short_float(float(values['dropout']))}")
    if "learning_rate" in values:
        parts.append(f"lr{_short_float(float(values['learning_rate']))}")
    continues = values.get("tuner/trial_id")
    if continues is not None:
        parts.append(f"from-{int(continues):04d}" if str(continues).isdigit() else f"from-{continues}")
    return " ".join(parts)


def trial_run_name(trial: Trial) -> str:
    return run_name(trial.trial_id, trial.hyperparameters.values)


class TrialTracker(SearchListener):
    """Every MLflow write goes through the tracking spool, in order, so training never waits on the store and
    an outage loses nothing (tracking.sender). The hooks, called on the training thread, keep the trial's
    history and journal the writes; the sending thread draws the plots and talks to the store."""

    def __init__(
        self,
        runs: SpooledRuns,
        experiment_id: str,
        parent_run_id: str,
        fixed_params: Mapping[str, Any],
        data: PreparedData,
        tuner: TunerConfig,
        trial_scores: Callable[[Any, keras.Model], TrialScores],
        run_tags: Mapping[str, Any] | None = None,
    ) -> None:
        self.runs = runs
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.fixed_params = dict(fixed_params)
        self.data = data
        self.tuner = tuner
        self.objective = tuner.objective
        self.direction = tuner.direction
        self.trial_scores = trial_scores  # (hyperparameters, trained network) -> test metrics and audit
        self.run_tags = dict(run_tags or {})  # on every trial run, e.g. the worker that trained it
        self.open_runs: dict[str, str] = {}  # trial_id -> run key of the attempt in progress
        self.histories: dict[str, EpochHistory] = {}

    @property
    def sender(self) -> SpoolSender:
        return self.runs.sender

    # -- hooks (training thread) --------------------------------------------------------------------------
    def before_trial(self) -> None:
        # A full store stops the search here, between trials: the trial in progress when it filled was trained
        # to its end and its writes wait in the spool, so the next run sends them and does not train it again.
        self.sender.raise_if_store_full()

    def trial_begin(self, trial: Trial) -> None:
        values = hyperparameter_params(trial)
        continues = values.get("tuner/trial_id")
        key = self.runs.create_child(
            self.experiment_id,
            self.parent_run_id,
            trial_run_name(trial),
            {**self.run_tags, TRIAL_ID_TAG: trial.trial_id},
            trial_id=trial.trial_id,
            continues=None if continues is None else str(continues),
        )
        self.open_runs[trial.trial_id] = key
        self.histories[trial.trial_id] = EpochHistory()
        self.runs.log_params(key, {**self.fixed_params, **values})
        self.runs.log_dataset(key, self.data)

    def epoch_end(self, trial: Trial, epoch: int, logs: dict[str, float]) -> None:
        key = self.open_runs.get(trial.trial_id)
        if key is None:
            return
        values = self.histories[trial.trial_id].add(epoch + 1, logs)
        self.runs.log_metrics(key, values, step=epoch + 1)

    def trial_stopped(self, trial: Trial, stop: RungStop) -> None:
        key = self.open_runs.get(trial.trial_id)
        if key is not None:
            self.runs.set_tags(key, {RUNG_STOP_TAG: stop.describe(self.tuner.selection_metric)})

    def trial_completed(self, trial: Trial, model: keras.Model) -> None:
        key = self.open_runs[trial.trial_id]
        title = trial_run_name(trial)
        scores = self.trial_scores(trial.hyperparameters, model)
        self.runs.log_scores(key, scores.test, title)
        self.runs.log_metrics(key, scores.validation_metrics())
        history = self.histories[trial.trial_id]
        self.runs.log_learning_curves(key, history.epochs, history.metrics, title)

    def trial_end(self, trial: Trial) -> None:
        key = self.open_runs.pop(trial.trial_id, None)
        if key is None:
            return
        completed = trial.status == TrialStatus.COMPLETED
        tags: dict[str, Any] = {f"{TAG_PREFIX}trial_status": trial.status}
        if completed:
            history = self.histories[trial.trial_id]
            selection = self.tuner.selection_metric
            best_epoch = history.best_epoch(selection, self.direction)
            best: dict[str, float | None] = {f"best_{selection}": trial.score}
            if best_epoch is not None:
                tags[BEST_EPOCH_TAG] = best_epoch
                at_best = {k: v[history.epochs.index(best_epoch)] for k, v in history.metrics.items()}
                if trial.score is None:  # a worker's copy of the trial: the chief's oracle holds the score
                    best[f"best_{selection}"] = at_best[selection]
                best[f"best_{self.objective}"] = at_best[self.objective]
                if self.tuner.max_borders_only_auc is not None:
                    passed = at_best["val_borders_only_auc"] <= self.tuner.max_borders_only_auc
                    tags[GATE_TAG] = "pass" if passed else "fail"
                if self.tuner.min_shift_specificity is not None:
                    met = at_best["val_shift_worst_specificity"] >= self.tuner.min_shift_specificity
                    tags[GUARD_TAG] = "pass" if met else "fail"
            self.runs.log_metrics(key, best)
        self.runs.set_tags(key, tags)
        error = None if completed else (trial.message or f"trial ended with status {trial.status}")
        self.runs.end(key, "FINISHED" if completed else "FAILED", error)

    # -- the search's end ---------------------------------------------------------------------------------
    def close_open_runs(self, status: str = RunStatus.to_string(RunStatus.FAILED), reason: str | None = None) -> None:
        """Close the attempts an interrupted search left open (KILLED on Ctrl-C, FAILED on a crash): journaled
        like every other write, sent now or by the next run or `xraycnn sync`."""
        try:
            for key in list(self.open_runs.values()):
                self.runs.end(key, status, reason)
        except DiskFullError:
            pass  # nothing more can be journaled; the next run closes what the store holds RUNNING
        self.open_runs.clear()
