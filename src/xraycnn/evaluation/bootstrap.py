"""95 % confidence intervals by the stratified bootstrap: resample the positives and the negatives each with
replacement (so every resample keeps the class balance, and AUC stays defined), score every resample, take
the 2.5th and 97.5th percentiles. Seeded: the same data gives the same intervals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __str__(self) -> str:
        return f"[{self.low:.4f}, {self.high:.4f}]"


def with_intervals(values: dict[str, float], intervals: dict[str, Interval], prefix: str) -> dict[str, float]:
    """As MLflow metrics: `{prefix}<name>` for every finite value, `{prefix}<name>_ci_low` / `_ci_high` for every
    interval."""
    out = {f"{prefix}{k}": v for k, v in values.items() if np.isfinite(v)}
    for name, interval in intervals.items():
        out[f"{prefix}{name}_ci_low"] = interval.low
        out[f"{prefix}{name}_ci_high"] = interval.high
    return out


def stratified_resamples(labels: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices, each row drawing as many positives and negatives as `labels` holds."""
    labels = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    parts = []
    for cls in (0, 1):
        members = np.flatnonzero(labels == cls)
        if len(members):
            parts.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(parts, axis=1)


def bootstrap_intervals(
    labels: np.ndarray,
    probabilities: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]],
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Interval]:
    """The `level` interval of every metric `score` returns; `score` takes (resamples, n) labels and
    probabilities and returns one value per row for each metric."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    rows = stratified_resamples(labels, resamples, seed)
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name, values in score(labels[rows], probabilities[rows]).items():
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if len(finite):
            low, high = np.percentile(finite, [tail, 100 - tail])
            intervals[name] = Interval(float(low), float(high))
    return intervals
