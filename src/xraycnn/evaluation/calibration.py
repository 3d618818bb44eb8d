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


_CLIP = 1e-7  # Keras' epsilon: a float32 sigmoid saturates to exactly 0 or 1


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _CLIP, 1 - _CLIP)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class PlattScaling:
    """P(COVID19) recalibrated as sigmoid(scale * logit(p) + shift) (Platt scaling; temperature scaling is
    `shift` = 0, `scale` = 1 / T). `scale` > 0, so the ranking of the films, and with it the AUC and every
    call at a correspondingly moved threshold, is unchanged."""

    scale: float = 1.0
    shift: float = 0.0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        z = self.scale * logit(probabilities) + self.shift
        return 1.0 / (1.0 + np.exp(-z))

    def apply_threshold(self, threshold: float) -> float:
        """Where a threshold on the uncalibrated probabilities lies on the calibrated ones."""
        return float(self.apply(np.array([threshold]))[0])


def fit_platt(labels: np.ndarray, probabilities: np.ndarray) -> PlattScaling:
    """The Platt scaling that minimises the log loss of `labels` (1 = COVID19) under `probabilities` (held-out
    films: the validation split). The scale is fitted on its logarithm, so it stays positive."""
    from scipy.optimize import minimize

    y = np.asarray(labels, dtype=np.float64)
    z = logit(probabilities)
    if len(set(y.tolist())) != 2:
        raise ValueError("calibrating probabilities needs both classes")

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        scale = np.exp(params[0])
        s = scale * z + params[1]
        # log(1 + e^s) - y s, with its gradient: the mean log loss of sigmoid(s)
        value = np.mean(np.logaddexp(0.0, s) - y * s)
        residual = 1.0 / (1.0 + np.exp(-s)) - y
        return float(value), np.array([np.mean(residual * z) * scale, np.mean(residual)])

    fitted = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B")
    return PlattScaling(float(np.exp(fitted.x[0])), float(fitted.x[1]))
