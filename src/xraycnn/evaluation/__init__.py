"""The evaluation stage: what a trial or a final model scores on images it was never selected on.

One vocabulary, from the smallest part up:
- *probabilities*: P(COVID19) per image (`model.predict.predict_probabilities`); a *call* is `probability >= threshold`,
  and its *outcome* TP, FP, FN or TN (`outcome_of`).
- *metrics*: name -> value for one set of images; `batch_metrics` is the one definition of every metric.
- `clinical.Scored`: one set of images scored, at 0.5 and at a chosen threshold (`thr_`), with 95 %
  bootstrap intervals when resampled. A trial's test set is a `Scored` at 0.5 without intervals.
- `clinical.ClinicalScores`: a final model's `Scored` overall and per source, at its threshold.
- `shortcuts.AuditScores` / `shortcuts.ShortcutAudit`: the shortcut audit of one set / overall and per source.
- `assessment.Assessment`: a final model judged on one labelled set: its probabilities, `ClinicalScores`,
  `ShortcutAudit` and Grad-CAM heatmaps, and how all of it goes into an MLflow run.
`threshold`, `calibration`, `bootstrap` and `gradcam` are parts; `plots` draws every figure.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix

from xraycnn.evaluation.calibration import expected_calibration_error

THRESHOLD = 0.5
_EPS = 1e-7  # Keras' epsilon: the same clipping as BinaryCrossentropy, so test_loss matches val_loss's scale


OUTCOMES = ("TP", "FP", "FN", "TN")


def outcome_of(label: int, probability: float, threshold: float) -> str:
    """TP, FP, FN or TN: the call `probability >= threshold` against the label (COVID19 = 1)."""
    called = probability >= threshold
    return {(1, True): "TP", (0, True): "FP", (1, False): "FN", (0, False): "TN"}[(int(label), bool(called))]


def confusion_counts(labels: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """[[TN, FP], [FN, TP]] with NORMAL=0, COVID19=1."""
    return confusion_matrix(np.asarray(labels), (np.asarray(probabilities) >= threshold).astype(int), labels=[0, 1])


def _rows(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.atleast_2d(np.asarray(labels)).astype(bool), np.atleast_2d(np.asarray(probabilities, dtype=np.float64))


def _ratio(a: np.ndarray, b: np.ndarray, undefined: float = np.nan) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), undefined)


def decision_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD
) -> dict[str, np.ndarray]:
    """The metrics of the calls `p >= threshold`, per row of (rows, n) labels and probabilities.

    No positive predictions: precision (and so F1) count as 0, sklearn's zero_division=0 convention, so a
    model that never says COVID19 scores 0 instead of dropping out of a comparison; PPV, the same ratio, is
    left undefined (NaN) there, as a clinical table would.
    """
    y, p = _rows(labels, probabilities)
    called = p >= threshold
    tp = (called & y).sum(axis=1).astype(float)
    fp = (called & ~y).sum(axis=1).astype(float)
    fn = (~called & y).sum(axis=1).astype(float)
    tn = (~called & ~y).sum(axis=1).astype(float)
    precision, sensitivity = _ratio(tp, tp + fp, 0.0), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "precision": precision,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * precision * sensitivity, precision + sensitivity, 0.0),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def ranking_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics of the probabilities themselves, whatever the threshold: AUC, loss, Brier score, ECE."""
    y, p = _rows(labels, probabilities)
    positives = y.sum(axis=1).astype(float)
    negatives = y.shape[1] - positives
    # AUC as the Mann-Whitney U statistic on average ranks: roc_auc_score's value, ties included, per row
    rank_sum = np.where(y, rankdata(p, axis=1), 0.0).sum(axis=1)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return {
        "auc": _ratio(rank_sum - positives * (positives + 1) / 2, positives * negatives),
        "loss": -np.mean(np.where(y, np.log(clipped), np.log(1 - clipped)), axis=1),
        "brier": np.mean((p - y) ** 2, axis=1),
        "ece": expected_calibration_error(y, p),
    }


def batch_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD) -> dict[str, np.ndarray]:
    """Every metric of each row of (rows, n) labels and probabilities at once (a bootstrap scores 1,000
    resamples in one call): the one definition of every metric the project reports."""
    return {**decision_metrics(labels, probabilities, threshold), **ranking_metrics(labels, probabilities)}


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    return {k: float(v[0]) for k, v in batch_metrics(labels, probabilities, threshold).items()}
