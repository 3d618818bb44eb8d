"""Calibration: does P(COVID19) = 0.8 come true 80 % of the time? The reliability diagram's bins and the
expected calibration error over the same equal-width bins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 10


@dataclass(frozen=True)
class Reliability:
    """Per bin of predicted probability: its mean prediction, the observed share of COVID19, its count."""

    predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> Reliability:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)  # p = 1.0 belongs to the last bin
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(index, weights=p, minlength=bins) / counts
        observed = np.bincount(index, weights=y, minlength=bins) / counts
    return Reliability(predicted, observed, counts)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Per row of (rows, n) labels and probabilities: the sum over equal-width bins of (share of samples) x
    |observed rate - mean prediction|."""
    y = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    p = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    rows, n = p.shape
    index = np.minimum((p * bins).astype(int), bins - 1) + bins * np.arange(rows)[:, None]  # one bin set per row
    size = rows * bins
    predicted = np.bincount(index.ravel(), weights=p.ravel(), minlength=size).reshape(rows, bins)
    observed = np.bincount(index.ravel(), weights=y.ravel(), minlength=size).reshape(rows, bins)
    return np.abs(observed - predicted).sum(axis=1) / n  # sum of |sum(y) - sum(p)| per bin, over n
