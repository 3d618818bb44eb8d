"""Keras Tuner's tuners with our hooks: the tuner drives the search, listeners track and display it.

The listeners are called from the tuner's own trial hooks (`on_trial_begin`, `on_epoch_end`,
`on_trial_end`), never passed to `search(callbacks=...)`: Keras Tuner deep-copies those callbacks, and a
tracking client or a live display must not be copied. The oracles are Keras Tuner's, subclassed as its
`Oracle` documents (`update_trial`), so that a full disk met while one records a trial ends the search.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
from keras_tuner.engine.trial import Trial, TrialStatus

from xraycnn.config import ExperimentConfig
from xraycnn.errors import DiskFullError, XrayCnnError
from xraycnn.runtime.disk import disk_full_error, is_disk_full
from xraycnn.runtime.heap import freeze_long_lived, thaw
from xraycnn.tuning.rungs import Bar, Rungs, RungStop

ALL_TRIALS = 1_000_000  # get_best_trials(ALL_TRIALS): every trial the oracle holds


class SearchListener:
    """Receives the search's events; every method is optional."""

    def search_begin(self, tuner: kt.Tuner) -> None: ...

    def before_trial(self) -> None:
        """Before the next trial is created: the place to stop the search (raise DiskFullError) with no trial
        half-done."""

    def trial_begin(self, trial: Trial) -> None: ...

    def epoch_end(self, trial: Trial, epoch: int, logs: dict[str, float]) -> None: ...

    def trial_completed(self, trial: Trial, model: keras.Model) -> None:
        """A trial finished training; `model` holds the weights of its best epoch."""

    def trial_stopped(self, trial: Trial, stop: RungStop) -> None:
        """The trial stops after this epoch: at a rung, it was not among the best of the trials there (tuning.rungs)."""

    def trial_end(self, trial: Trial) -> None:
        """The oracle has recorded the trial's final status and score (the state on disk is saved)."""


class SearchStopped(kt.errors.FatalError):
    """Carries an error that must end the whole search (a full disk) out of a trial: Keras Tuner records any
    other error as a FAILED trial and goes on, and a FAILED trial is never run again on resume."""

    def __init__(self, error: XrayCnnError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _full_disk_stops_search(what: str, where: Path | str) -> Iterator[None]:
    """A full disk met in the block ends the whole search (SearchStopped, a FatalError): our own DiskFullError as
    it is, a library's write error as one of ours naming `what` and `where`. Raised as anything else, Keras Tuner
    would print its traceback and record the trial as failed or INVALID, never to run it again."""
    try:
        yield
    except DiskFullError as exc:  # from our hooks (the spool's disk, the store's)
        raise SearchStopped(exc) from exc
    except XrayCnnError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise SearchStopped(disk_full_error(exc, what, where)) from exc
        raise


class _StopsOnFullDisk:
    """Mixin placed before a Keras Tuner oracle class: a full disk met while the oracle saves a trial's result
    ends the search, as one met while training does (Keras Tuner records the trial outside the tuner's hooks)."""

    def __init__(self, *args: Any, state_dir: Path, **kwargs: Any) -> None:
        self.state_dir = state_dir
        super().__init__(*args, **kwargs)

    def update_trial(self, trial_id: str, metrics: dict, step: int = 0) -> Any:
        with _full_disk_stops_search("the search's state", self.state_dir):
            return super().update_trial(trial_id, metrics, step)  # type: ignore[misc]


class RandomSearchOracle(_StopsOnFullDisk, kt.oracles.RandomSearchOracle):
    pass


class HyperbandOracle(_StopsOnFullDisk, kt.oracles.HyperbandOracle):
    pass


class BayesianOptimizationOracle(_StopsOnFullDisk, kt.oracles.BayesianOptimizationOracle):
    pass


class _Tracked:
    """Mixin placed before a Keras Tuner tuner class: forwards its hooks to the listeners."""

    listeners: Sequence[SearchListener]

    def __init__(
        self,
        oracle: kt.Oracle,
        *,
        listeners: Sequence[SearchListener] = (),
        rungs: Sequence[int] = (),
        rung_factor: int = 3,
        **kwargs: Any,
    ) -> None:
        self.listeners = tuple(listeners)
        self._trained: dict[str, keras.Model] = {}  # trial_id -> the model being trained
        self.rungs = Rungs(rungs, oracle.objective, rung_factor)
        self._bars: dict[str, dict[int, Bar]] = {}  # trial_id -> its rungs' bars, read when it began
        # kt.Hyperband's own __init__ only makes its oracle from its arguments; the oracle is made already.
        kt.Tuner.__init__(self, oracle=oracle, **kwargs)  # type: ignore[arg-type]

    def search(self, *args: Any, **kwargs: Any) -> None:
        freeze_long_lived()  # the data, the hypermodel and the tracking clients exist by now
        try:
            super().search(*args, **kwargs)  # type: ignore[misc]
        finally:
            thaw()

    def run_trial(self, trial: Trial, *args: Any, **kwargs: Any) -> Any:
        # Keras Tuner records an error raised here as a FAILED trial and goes on, unless it is a FatalError. A full
        # disk met after this, as the oracle records the trial, is stopped by the oracle (_StopsOnFullDisk).
        where = self.get_trial_dir(trial.trial_id)  # type: ignore[attr-defined]
        with _full_disk_stops_search(f"trial {trial.trial_id}'s checkpoint", where):  # Keras Tuner's own writes
            results = super().run_trial(trial, *args, **kwargs)  # type: ignore[misc]
        if self.rungs:
            self.rungs.record(results)
        return results

    def on_search_begin(self) -> None:
        super().on_search_begin()  # type: ignore[misc]
        for listener in self.listeners:
            listener.search_begin(self)  # type: ignore[arg-type]

    def pre_create_trial(self) -> None:
        super().pre_create_trial()  # type: ignore[misc]
        try:
            for listener in self.listeners:
                listener.before_trial()
        except DiskFullError as exc:
            raise SearchStopped(exc) from exc

    def on_trial_begin(self, trial: Trial) -> None:
        super().on_trial_begin(trial)  # type: ignore[misc]
        if self.rungs:  # get_best_trials: the one way to read the trials that a distributed worker's oracle has too
            self._bars[trial.trial_id] = self.rungs.bars(self.oracle.get_best_trials(ALL_TRIALS))
        for listener in self.listeners:
            listener.trial_begin(trial)

    def on_epoch_end(self, trial: Trial, model: keras.Model, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(trial, model, epoch, logs)  # type: ignore[misc]
        self._trained[trial.trial_id] = model
        for listener in self.listeners:
            listener.epoch_end(trial, epoch, dict(logs or {}))
        stop = self.rungs.verdict(epoch + 1, logs or {}, self._bars.get(trial.trial_id, {}))
        if stop is not None:
            model.stop_training = True  # after this epoch's callbacks; EarlyStopping still restores the best epoch
            for listener in self.listeners:
                listener.trial_stopped(trial, stop)

    def on_trial_end(self, trial: Trial) -> None:
        trained = self._trained.pop(trial.trial_id, None)
        self._bars.pop(trial.trial_id, None)
        if trial.status == TrialStatus.COMPLETED:
            # The hypermodel's EarlyStopping(restore_best_weights) leaves the best epoch's weights in memory:
            # the same weights as Keras Tuner's best-epoch checkpoint, without rebuilding and reading it.
            model = trained if trained is not None else self.load_model(trial)  # type: ignore[attr-defined]
            for listener in self.listeners:
                listener.trial_completed(trial, model)
        super().on_trial_end(trial)  # type: ignore[misc]  # the oracle records the outcome and saves
        final = self.oracle.get_trial(trial.trial_id)  # type: ignore[attr-defined]
        for listener in self.listeners:
            listener.trial_end(final)


class TrackedTuner(_Tracked, kt.Tuner):
    """Random search or Bayesian optimisation: the oracle decides, the tuner only trains."""


class TrackedHyperband(_Tracked, kt.Hyperband):
    """Hyperband's tuner: it trains a trial for the oracle's epochs, from the weights of the trial it continues."""


def build_tuner(
    config: ExperimentConfig,
    hypermodel: kt.HyperModel,
    directory: Path,
    project_name: str,
    listeners: Sequence[SearchListener] = (),
) -> kt.Tuner:
    """The experiment's tuner over `directory/project_name`, resuming what is there."""
    budget = config.budget
    search: dict[str, Any] = {
        "objective": kt.Objective(config.tuner.selection_metric, direction=config.tuner.direction),
        "seed": config.seed,
        "state_dir": directory / project_name,
    }
    if config.tuner.algorithm == "hyperband":
        oracle: kt.Oracle = HyperbandOracle(
            max_epochs=budget.max_epochs,
            factor=budget.hyperband_factor,
            hyperband_iterations=budget.hyperband_iterations,
            **search,
        )
        # Hyperband has no max_trials argument; the oracle honours the attribute as a hard cap.
        oracle.max_trials = budget.max_trials
    elif config.tuner.algorithm == "random":
        oracle = RandomSearchOracle(max_trials=budget.max_trials, **search)
    else:
        oracle = BayesianOptimizationOracle(max_trials=budget.max_trials, **search)
    kind = TrackedHyperband if config.tuner.algorithm == "hyperband" else TrackedTuner
    # Keras Tuner prints "Reloading Tuner from ..." itself; the caller reports resumption its own way.
    with contextlib.redirect_stdout(io.StringIO()):
        tuner = kind(
            oracle,
            hypermodel=hypermodel,
            directory=str(directory),
            project_name=project_name,
            overwrite=False,  # starting over is the caller's decision (--fresh), made before we get here
            listeners=listeners,
            rungs=budget.rungs,
            rung_factor=budget.rung_factor,
        )
    return tuner


@functools.lru_cache(maxsize=16)
def hyperband_schedule(
    max_epochs: int, factor: int, iterations: int = 1, max_trials: int | None = None
) -> tuple[int, int]:
    """(trials, epochs) a sequential Hyperband search runs: Keras Tuner's own Hyperband driven dry, in a scratch
    folder, each trial reported done at once (the schedule does not depend on the scores), `max_trials` a cap.

    Epochs count what is trained: a continued trial trains only the epochs it adds. Early stopping can
    make the real number smaller.
    """
    space = kt.HyperParameters()
    space.Float("x", 0.0, 1.0)  # a space the oracle cannot exhaust: it stops only when its brackets are done
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        oracle = kt.Hyperband(
            hypermodel=lambda hp: None,  # never built: no trial is run, only scheduled
            objective=kt.Objective("score", "max"),
            max_epochs=max_epochs,
            factor=factor,
            hyperband_iterations=iterations,
            hyperparameters=space,
            seed=0,
            directory=scratch,
            project_name="schedule",
        ).oracle
        oracle.max_trials = max_trials
        trials = epochs = 0
        while True:
            trial = oracle.create_trial("schedule")
            if trial.status == TrialStatus.STOPPED:
                return trials, epochs
            values = trial.hyperparameters.values
            trials += 1
            epochs += values["tuner/epochs"] - values["tuner/initial_epoch"]
            oracle.update_trial(trial.trial_id, {"score": float(trials)})
            trial.status = TrialStatus.COMPLETED
            oracle.end_trial(trial)


def planned_budget(config: ExperimentConfig) -> tuple[int, int]:
    """(trials, epochs) the search plans at most: for the progress display and time estimates."""
    budget = config.budget
    if config.tuner.algorithm == "hyperband":
        return hyperband_schedule(
            budget.max_epochs, budget.hyperband_factor, budget.hyperband_iterations, budget.max_trials
        )
    trials = budget.max_trials or 0
    epochs = config.epochs_spec()
    return trials, math.ceil(trials * (epochs.mean() if epochs is not None else 0))
