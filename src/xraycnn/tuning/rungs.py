"""Successive halving inside a random or Bayesian search: at each rung (an epoch count), a trial goes on only if
it is among the best 1/factor of the trials that reached that rung, itself included; otherwise it stops there.
This is the stopping rule of asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020): a trial is judged as soon as it reaches a rung, against every trial that
reached it before, stopped there or not.

Every trial's schedule is planned over the budget's epochs (the cosine decays over all of them), so a trial
that goes on trains exactly as it would without rungs, and one that stops has spent only its first epochs.
What the search gains is breadth: more networks tried in the same time, the promising ones trained fully.
Keeping a share rather than only the best matters because the early epochs rank networks noisily: one lucky
epoch of a poor network would otherwise stop every later trial at that rung.
Unlike Hyperband's brackets, the rungs need no trial to wait for another (the first trial, with nothing to
compare against, trains fully) and no trial is continued from another's weights.

The score of each trial at each rung is recorded in its Keras Tuner trial (as `<metric>_at_epoch_<n>`), so the
bars come from the oracle: they survive a resumed search and reach every worker of a distributed one.
"""

from __future__ import annotations

import functools
import math
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
    """A trial stopped at a rung: after `epoch` epochs it scored `score`, below `bar`, the worst score that kept
    a trial among the best `kept` of the `reached` trials at this rung (it included)."""

    epoch: int
    score: float
    bar: float
    kept: int
    reached: int

    def describe(self, metric: str) -> str:
        share = "the best" if self.kept == 1 else f"among the best {self.kept}"
        return (
            f"stopped at rung {self.epoch}: {metric} {self.score:.4f}, not {share} of the {self.reached} trials "
            f"at this epoch (the bar: {self.bar:.4f})"
        )


@dataclass(frozen=True)
class Bar:
    """What a trial must score at a rung to go on: `score`, the `kept`-th best of the `reached` trials there."""

    score: float
    kept: int
    reached: int


class Rungs:
    """The rungs of a search, ranked by the tuner's objective, keeping the best 1/`factor` at each."""

    def __init__(self, epochs: Sequence[int], objective: kt.Objective, factor: int = 3) -> None:
        if factor < 2:
            raise ValueError(f"the rungs' factor keeps 1/factor of the trials at each rung: at least 2, got {factor}")
        self.epochs = tuple(epochs)
        self.metric = objective.name
        self.better = objective.better_than
        self.factor = factor

    def __bool__(self) -> bool:
        return bool(self.epochs)

    def bars(self, trials: Iterable[Trial]) -> dict[int, Bar]:
        """Epoch -> the bar a new trial meets there, from the finished trials' scores at that rung (a rung no
        finished trial reached has none: the trial goes on)."""
        scores: dict[int, list[float]] = {epoch: [] for epoch in self.epochs}
        for trial in trials:
            if trial.status != TrialStatus.COMPLETED:
                continue
            for epoch in self.epochs:
                name = rung_metric(self.metric, epoch)
                if trial.metrics.exists(name) and (value := trial.metrics.get_last_value(name)) is not None:
                    scores[epoch].append(float(value))
        bars: dict[int, Bar] = {}
        for epoch, earlier in scores.items():
            reached = len(earlier) + 1  # the new trial too
            kept = math.ceil(reached / self.factor)
            if len(earlier) < kept:
                continue  # the new trial is among the best `kept` whatever it scores
            ranked = sorted(earlier, key=functools.cmp_to_key(self._order))
            bars[epoch] = Bar(ranked[kept - 1], kept, reached)
        return bars

    def _order(self, a: float, b: float) -> int:
        return -1 if self.better(a, b) else (1 if self.better(b, a) else 0)

    def verdict(self, epoch: int, logs: dict[str, float], bars: dict[int, Bar]) -> RungStop | None:
        """Whether a trial that just finished its `epoch`-th epoch (1-based) with `logs` stops here: only when
        `kept` earlier trials scored better at this rung. A tie goes on."""
        bar = bars.get(epoch)
        score = logs.get(self.metric)
        if bar is None or score is None or not self.better(bar.score, float(score)):
            return None
        return RungStop(epoch, float(score), bar.score, bar.kept, bar.reached)

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
