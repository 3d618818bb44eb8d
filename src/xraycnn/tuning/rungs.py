"""Successive halving inside a random or Bayesian search: at each rung (an epoch count), a trial that scores
worse than the best earlier trial did at the same epoch stops there.

Every trial's schedule is planned over the budget's epochs (the cosine decays over all of them), so a trial
that goes on trains exactly as it would without rungs, and one that stops has spent only its first epochs.
What the search gains is breadth: more networks tried in the same time, the promising ones trained fully.
Unlike Hyperband's brackets, the rungs need no trial to wait for another (the first trial, with nothing to
compare against, trains fully) and no trial is continued from another's weights.

The score of each trial at each rung is recorded in its Keras Tuner trial (as `<metric>_at_epoch_<n>`), so the
bars come from the oracle: they survive a resumed search and reach every worker of a distributed one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import keras
import keras_tuner as kt
from keras_tuner.engine.trial import Trial, TrialStatus


def rung_metric(metric: str, epoch: int) -> str:
    """The name under which a trial's `metric` after `epoch` epochs (1-based) is recorded in its trial."""
    return f"{metric}_at_epoch_{epoch}"


@dataclass(frozen=True)
class RungStop:
    """A trial stopped at a rung: after `epoch` epochs it scored `score`, the best earlier trial `bar`."""

    epoch: int
    score: float
    bar: float

    def describe(self, metric: str) -> str:
        return f"stopped at rung {self.epoch}: {metric} {self.score:.4f} below the best earlier trial's {self.bar:.4f}"


class Rungs:
    """The rungs of a search, ranked by the tuner's objective."""

    def __init__(self, epochs: Sequence[int], objective: kt.Objective) -> None:
        self.epochs = tuple(epochs)
        self.metric = objective.name
        self.better = objective.better_than

    def __bool__(self) -> bool:
        return bool(self.epochs)

    def bars(self, trials: Iterable[Trial]) -> dict[int, float]:
        """Epoch -> the best score a finished trial had after that many epochs (rungs no trial reached: none)."""
        bars: dict[int, float] = {}
        for trial in trials:
            if trial.status != TrialStatus.COMPLETED:
                continue
            for epoch in self.epochs:
                name = rung_metric(self.metric, epoch)
                if not trial.metrics.exists(name):
                    continue
                value = trial.metrics.get_last_value(name)
                if value is not None and (epoch not in bars or self.better(value, bars[epoch])):
                    bars[epoch] = float(value)
        return bars

    def verdict(self, epoch: int, logs: dict[str, float], bars: dict[int, float]) -> RungStop | None:
        """Whether a trial that just finished its `epoch`-th epoch (1-based) with `logs` stops here. A tie goes on."""
        bar = bars.get(epoch)
        score = logs.get(self.metric)
        if bar is None or score is None or not self.better(bar, float(score)):
            return None
        return RungStop(epoch, float(score), bar)

    def record(self, histories: Iterable[keras.callbacks.History]) -> None:
        """Adds each rung's score to the trial's histories as a metric of every epoch, so that Keras Tuner, which
        records a trial's metrics at its best epoch, keeps it with the trial."""
        for history in histories:
            series = history.history.get(self.metric)
            if not series:
                continue
            for epoch in self.epochs:
                if epoch - 1 in history.epoch:
                    value = series[history.epoch.index(epoch - 1)]
                    history.history[rung_metric(self.metric, epoch)] = [value] * len(series)
