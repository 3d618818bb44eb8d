"""The shortcut audit: how much of a model's decision rests on the film outside the lungs.

On cxr-covid the two classes come from different hospitals, and a network can tell them apart by the
borders alone: the framing, the burned-in text and laterality markers. Three figures, each with a 95 %
stratified bootstrap interval, by the same code for every trial (on validation), every champion (on test)
and every `xraycnn evaluate` (overall and per source):

- `borders_only_auc`: AUC on the films with the lung box blacked out. Near 0.5: the borders alone say
  nothing to the model; well above: the model can call the class without seeing the lungs.
- `lungs_only_auc`: AUC on the films with everything outside the lung box blacked out.
- `gradcam_outside_share`: the mean share of the Grad-CAM heat outside the lung box (a uniform map: 43 %).

The masks are applied to the film, on its own geometry, before the model's own preprocessing: a model that
crops to the lungs sees nothing of a borders-only film and scores 0.5 there by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from xraycnn.evaluation import ranking_metrics
from xraycnn.evaluation.bootstrap import RESAMPLES, Interval, bootstrap_intervals, with_intervals
from xraycnn.regions import lung_mask

BORDERS_ONLY, LUNGS_ONLY, OUTSIDE_SHARE = "borders_only_auc", "lungs_only_auc", "gradcam_outside_share"
FIGURES = (BORDERS_ONLY, LUNGS_ONLY, OUTSIDE_SHARE)
MIN_PER_CLASS = 2  # fewer images of a class: no AUC and no intervals


def blackout(films: np.ndarray, keep: str) -> np.ndarray:
    """`films` with the lung box ('borders' kept) or everything but it ('lungs' kept) set to black."""
    if keep not in ("borders", "lungs"):
        raise ValueError(f"keep must be 'borders' or 'lungs', got {keep!r}")
    inside = lung_mask(films.shape[1], films.shape[2])[None, :, :, None]
    return np.where(inside if keep == "lungs" else ~inside, films, 0).astype(films.dtype)


def masked_probabilities(predict: Callable[[np.ndarray], np.ndarray], films: np.ndarray) -> dict[str, np.ndarray]:
    """P(COVID19) of the borders-only and the lungs-only films, by `predict` (films in, probabilities out)."""
    return {
        BORDERS_ONLY: np.asarray(predict(blackout(films, "borders"))).reshape(-1),
        LUNGS_ONLY: np.asarray(predict(blackout(films, "lungs"))).reshape(-1),
    }


@dataclass(frozen=True)
class AuditScores:
    """One set of images, audited: the three figures and the intervals of those that are defined."""

    n: int
    positives: int
    values: dict[str, float]
    intervals: dict[str, Interval] = field(default_factory=dict)

    def flat(self, prefix: str) -> dict[str, float]:
        """As MLflow metrics: `{prefix}borders_only_auc`, `{prefix}borders_only_auc_ci_low`, ..."""
        return with_intervals(self.values, self.intervals, prefix)

    def describe(self, name: str) -> str:
        """'0.512 [0.478, 0.547]', a share as '31 % [29, 33]', or '-' where undefined."""
        value = self.values.get(name, float("nan"))
        if not np.isfinite(value):
            return "-"
        interval = self.intervals.get(name)
        if name == OUTSIDE_SHARE:
            shown = f"{value:.0%}"
            return shown + (f" [{interval.low:.0%}, {interval.high:.0%}]" if interval else "")
        return f"{value:.3f}" + (f" [{interval.low:.3f}, {interval.high:.3f}]" if interval else "")


def _figures(columns: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of (rows, n) labels and (rows, n, 3) columns: the two AUCs and the mean share."""
    shares = columns[..., 2]
    finite = np.isfinite(shares)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(finite, shares, 0).sum(axis=-1) / finite.sum(axis=-1)
    return {
        BORDERS_ONLY: ranking_metrics(labels, columns[..., 0])["auc"],
        LUNGS_ONLY: ranking_metrics(labels, columns[..., 1])["auc"],
        OUTSIDE_SHARE: share,
    }


def audit_scores(
    labels: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    outside_shares: np.ndarray | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> AuditScores:
    """The audit of one set: `probabilities` from `masked_probabilities`, `outside_shares` one per image
    (NaN where no heatmap was made; None: no Grad-CAM)."""
    labels = np.asarray(labels).astype(int)
    shares = np.full(len(labels), np.nan) if outside_shares is None else np.asarray(outside_shares, np.float64)
    columns = np.stack([probabilities[BORDERS_ONLY], probabilities[LUNGS_ONLY], shares], axis=-1).astype(np.float64)
    positives = int(labels.sum())
    both_classes = min(positives, len(labels) - positives) >= MIN_PER_CLASS
    values = {k: float(v[0]) for k, v in _figures(columns[None], labels[None]).items()}
    if not both_classes:
        values[BORDERS_ONLY] = values[LUNGS_ONLY] = float("nan")
    intervals: dict[str, Interval] = {}
    if len(labels) >= MIN_PER_CLASS:
        # stratified when both classes are there; with one class, the plain bootstrap of the share's mean
        intervals = bootstrap_intervals(labels, columns, lambda y, c: _figures(c, y), resamples=resamples, seed=seed)
        if not both_classes:
            intervals = {k: v for k, v in intervals.items() if k == OUTSIDE_SHARE}
    if not np.isfinite(values[OUTSIDE_SHARE]):
        intervals.pop(OUTSIDE_SHARE, None)
    return AuditScores(len(labels), positives, values, intervals)


@dataclass(frozen=True)
class ShortcutAudit:
    overall: AuditScores
    per_source: dict[str, AuditScores] = field(default_factory=dict)

    def flat(self, prefix: str) -> dict[str, float]:
        out = self.overall.flat(prefix)
        for name, figures in self.per_source.items():
            out |= figures.flat(f"{prefix}source_{safe_name(name)}_")
        return out


def safe_name(name: str) -> str:
    """A source's name as it may appear in a metric key."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def shortcut_audit(
    labels: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    outside_shares: np.ndarray | None = None,
    *,
    sources: np.ndarray | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ShortcutAudit:
    """The audit overall and, given one source name per image, per source."""
    overall = audit_scores(labels, probabilities, outside_shares, resamples=resamples, seed=seed)
    per_source: dict[str, AuditScores] = {}
    if sources is not None:
        names = np.asarray(sources, dtype=object)
        labels = np.asarray(labels)
        for name in sorted(set(names.tolist())):
            members = names == name
            per_source[str(name)] = audit_scores(
                labels[members],
                {k: np.asarray(v)[members] for k, v in probabilities.items()},
                None if outside_shares is None else np.asarray(outside_shares)[members],
                resamples=resamples,
                seed=seed,
            )
    return ShortcutAudit(overall, per_source)
