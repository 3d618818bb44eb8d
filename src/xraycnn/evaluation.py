"""Test-set evaluation: what a trial or a registered model scores on data it was never selected on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

from xraycnn.data.dataset import Split

THRESHOLD = 0.5
_EPS = 1e-7  # Keras' epsilon: the same clipping as BinaryCrossentropy, so test_loss matches val_loss's scale


@dataclass(frozen=True)
class Evaluation:
    labels: np.ndarray  # int (n,)
    probabilities: np.ndarray  # float (n,), P(COVID19)
    files: tuple[str, ...]
    metrics: dict[str, float]  # unprefixed: accuracy, auc, sensitivity, ...

    def prefixed(self, prefix: str = "test_") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.metrics.items()}

    def confusion(self, threshold: float = THRESHOLD) -> np.ndarray:
        return confusion_counts(self.labels, self.probabilities, threshold)


def confusion_counts(labels: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """[[TN, FP], [FN, TP]] with NORMAL=0, COVID19=1."""
    return confusion_matrix(np.asarray(labels), (np.asarray(probabilities) >= threshold).astype(int), labels=[0, 1])


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    labels = np.asarray(labels).astype(int)
    p = np.asarray(probabilities, dtype=np.float64)
    (tn, fp), (fn, tp) = confusion_counts(labels, p, threshold)

    def ratio(a: float, b: float, undefined: float = float("nan")) -> float:
        return float(a / b) if b else undefined

    # No positive predictions: precision (and so F1) count as 0, sklearn's zero_division=0 convention, so a
    # model that never says COVID19 scores 0 instead of dropping out of the comparison.
    precision, sensitivity = ratio(tp, tp + fp, 0.0), ratio(tp, tp + fn)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return {
        "accuracy": ratio(tp + tn, len(labels)),
        "auc": float(roc_auc_score(labels, p)) if len(set(labels.tolist())) == 2 else float("nan"),
        "sensitivity": sensitivity,
        "specificity": ratio(tn, tn + fp),
        "precision": precision,
        "f1": ratio(2 * precision * sensitivity, precision + sensitivity, 0.0),
        "loss": float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }


def predict_probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)).reshape(-1)


def evaluate(model, split: Split, threshold: float = THRESHOLD) -> Evaluation:
    """Predict `split` with a Keras model and score it."""
    probabilities = predict_probabilities(model, split.images)
    return Evaluation(split.labels, probabilities, split.files, binary_metrics(split.labels, probabilities, threshold))
