"""The decision threshold, chosen on validation and never on test: Youden's J (sensitivity + specificity - 1
at its highest) by default, or the highest threshold that still reaches a target sensitivity (a screening
test that must miss few cases)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str  # "youden" or "sensitivity>=0.95"
    sensitivity: float  # on the data it was chosen on
    specificity: float

    def describe(self) -> str:
        """How it was chosen, e.g. `youden on validation (sensitivity 0.972, specificity 0.996)`."""
        return f"{self.rule} on validation (sensitivity {self.sensitivity:.3f}, specificity {self.specificity:.3f})"


def choose_threshold(
    labels: np.ndarray, probabilities: np.ndarray, rule: str = "youden", target: float = 0.95
) -> Threshold:
    """The threshold `rule` picks on (labels, probabilities); `p >= threshold` means COVID19."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(set(labels.tolist())) != 2:
        raise ValueError("choosing a threshold needs both classes in the validation data")
    fpr, tpr, cuts = roc_curve(labels, probabilities, drop_intermediate=False)
    cuts = np.minimum(cuts, 1.0)  # sklearn's first cut is +inf (nothing positive)
    if rule == "youden":
        best = int(np.argmax(tpr - fpr))  # ties: the first, i.e. the highest threshold
        name = "youden"
    elif rule == "sensitivity":
        reaching = np.flatnonzero(tpr >= target)
        best = int(reaching[0])  # cuts decrease: the first that reaches the target is the highest
        name = f"sensitivity>={target:g}"
    else:
        raise ValueError(f"unknown threshold rule {rule!r}: 'youden' or 'sensitivity'")
    return Threshold(float(cuts[best]), name, float(tpr[best]), float(1 - fpr[best]))
