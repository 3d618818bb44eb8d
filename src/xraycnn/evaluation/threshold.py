"""The decision threshold, chosen on validation and never on test: Youden's J (sensitivity + specificity - 1
at its highest) by default; for calls that hold when another hospital's scanner and processing move the scores
(evaluation.acquisition), Youden's J under acquisition shift (`shift_youden`: the worst sensitivity plus the
worst specificity over the films as given and under every change) or the lowest threshold at which the NORMAL
films keep their call under every change at least a target share of the time (`shift_specificity`: the most
sensitive threshold that transfers); or the highest threshold that still reaches a target sensitivity (a
screening test that must miss few cases)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

RULES = ("youden", "shift_youden", "shift_specificity", "sensitivity")
MARGIN = 1e-6  # above a NORMAL film's score by more than two ways of computing it differ (1e-6)


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str  # "youden", "shift_youden" or "sensitivity>=0.95"
    sensitivity: float  # on the data it was chosen on
    specificity: float
    worst_sensitivity: float | None = None  # shift_youden: the worst over the films as given and changed
    worst_specificity: float | None = None

    def describe(self) -> str:
        """How it was chosen, e.g. `youden on validation (sensitivity 0.972, specificity 0.996)`."""
        shown = f"{self.rule} on validation (sensitivity {self.sensitivity:.3f}, specificity {self.specificity:.3f}"
        if self.worst_sensitivity is not None and self.worst_specificity is not None:
            shown += f"; under the worst acquisition change {self.worst_sensitivity:.3f} / {self.worst_specificity:.3f}"
        return shown + ")"


def _called_shares(labels: np.ndarray, probabilities: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) of the calls `p >= cut` at each of `cuts`."""
    positives = np.sort(probabilities[labels == 1])
    negatives = np.sort(probabilities[labels == 0])
    sensitivity = 1 - np.searchsorted(positives, cuts, side="left") / len(positives)
    specificity = np.searchsorted(negatives, cuts, side="left") / len(negatives)
    return sensitivity, specificity


def shift_youden(labels: np.ndarray, probabilities: np.ndarray, changed: Mapping[str, np.ndarray]) -> Threshold:
    """The threshold with the highest worst-case Youden's J over the films as given and under each change in
    `changed` (name -> the same films' probabilities, changed): min sensitivity + min specificity - 1."""
    sets = [probabilities, *(np.asarray(p, dtype=np.float64) for p in changed.values())]
    cuts = np.unique(np.concatenate([*sets, [1.0]]))
    shares = [_called_shares(labels, p, cuts) for p in sets]
    worst_sensitivity = np.min([s for s, _ in shares], axis=0)
    worst_specificity = np.min([s for _, s in shares], axis=0)
    j = worst_sensitivity + worst_specificity
    best = int(np.flatnonzero(j == j.max())[-1])  # ties: the highest threshold, as `youden`
    sensitivity, specificity = shares[0][0][best], shares[0][1][best]
    return Threshold(
        float(cuts[best]),
        "shift_youden",
        float(sensitivity),
        float(specificity),
        float(worst_sensitivity[best]),
        float(worst_specificity[best]),
    )


def shift_specificity(
    labels: np.ndarray, probabilities: np.ndarray, changed: Mapping[str, np.ndarray], target: float
) -> Threshold:
    """The lowest threshold at which at least `target` of the NORMAL films keep their call (`p < threshold`), as
    given and under each change in `changed`: just above the score that many of them are under, in the set
    where it is highest."""
    sets = [probabilities, *(np.asarray(p, dtype=np.float64) for p in changed.values())]
    negatives = [np.sort(p[labels == 0]) for p in sets]
    kept = int(np.ceil(target * len(negatives[0]) - 1e-9))  # films that must stay NORMAL
    value = 0.0 if kept == 0 else float(max(n[kept - 1] for n in negatives)) + MARGIN
    shares = [_called_shares(labels, p, np.array([value])) for p in sets]
    return Threshold(
        value,
        f"shift_specificity>={target:g}",
        float(shares[0][0][0]),
        float(shares[0][1][0]),
        float(min(s[0] for s, _ in shares)),
        float(min(s[0] for _, s in shares)),
    )


def choose_threshold(
    labels: np.ndarray,
    probabilities: np.ndarray,
    rule: str = "youden",
    target: float = 0.95,
    changed: Mapping[str, np.ndarray] | None = None,
    target_shift_specificity: float = 0.88,
) -> Threshold:
    """The threshold `rule` picks on (labels, probabilities); `p >= threshold` means COVID19. `changed` (the same
    films' probabilities under acquisition changes) is needed by `shift_youden` and `shift_specificity`."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(set(labels.tolist())) != 2:
        raise ValueError("choosing a threshold needs both classes in the validation data")
    if rule in ("shift_youden", "shift_specificity"):
        if not changed:
            raise ValueError(f"the {rule} threshold needs the films' probabilities under acquisition changes")
        if rule == "shift_youden":
            return shift_youden(labels, probabilities, changed)
        return shift_specificity(labels, probabilities, changed, target_shift_specificity)
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
        raise ValueError(f"unknown threshold rule {rule!r}: one of {', '.join(RULES)}")
    return Threshold(float(cuts[best]), name, float(tpr[best]), float(1 - fpr[best]))


SHIFT_RULES = ("shift_youden", "shift_specificity")


def choose_by(
    evaluation: object, labels: np.ndarray, probabilities: np.ndarray, changed: Mapping[str, np.ndarray] | None = None
) -> Threshold:
    """The threshold an experiment's `[evaluation]` (config.EvaluationConfig) picks."""
    return choose_threshold(
        labels,
        probabilities,
        evaluation.threshold,  # type: ignore[attr-defined]
        evaluation.target_sensitivity,  # type: ignore[attr-defined]
        changed,
        evaluation.target_shift_specificity,  # type: ignore[attr-defined]
    )
