"""A final model's assessment on a labelled set (what of it goes into an MLflow run: tracking.assessment_log).

The same code judges every champion at the end of a search or `xraycnn train` and any registered model on
any folder (`xraycnn evaluate`): the clinical metrics at the model's threshold and at 0.5 with 95 % bootstrap
intervals (per source too, when the images say where they come from), ROC, precision-recall and reliability
plots, confusion matrices, per-image predictions, Grad-CAM heatmaps, the shortcut audit
(`evaluation.shortcuts`) and the calls under acquisition changes (`evaluation.acquisition`). The model takes
films: whatever preprocessing (and calibration) it carries runs inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from xraycnn.data.dataset import Split
from xraycnn.data.discovery import CLASS_NAMES
from xraycnn.evaluation import THRESHOLD, outcome_of, ranking_metrics
from xraycnn.evaluation.acquisition import AS_GIVEN, ShiftScores, acquired_sets, shift_scores
from xraycnn.evaluation.calibration import PlattScaling
from xraycnn.evaluation.clinical import AT_THRESHOLD, REPORTED, THRESHOLD_FREE, ClinicalScores, clinical_scores
from xraycnn.evaluation.gradcam import Heatmaps, gradcam
from xraycnn.evaluation.guard_rates import GuardRates, guard_rates
from xraycnn.evaluation.shortcuts import (
    FIGURES,
    OUTSIDE_SHARE,
    ShortcutAudit,
    masked_probabilities,
    safe_name,
    shortcut_audit,
)
from xraycnn.model.input_guard import GuardedNetwork, InputGuard
from xraycnn.model.predict import predict_probabilities

GRADCAM_PER_OUTCOME = 4  # images per row (TP, FP, FN, TN) of the logged grid
GRADCAM_MAX_IMAGES = 3000  # the shortcut indicator is averaged over at most this many images


@dataclass(frozen=True)
class Calibration:
    """The Platt scaling a final model carries (fitted on validation, folded into its output layer), and the
    calibration error it took away: on validation, and on the assessed set (`uncalibrated`: its probabilities
    before)."""

    platt: PlattScaling
    val_ece_before: float
    val_ece_after: float
    uncalibrated: np.ndarray

    def metrics(self, prefix: str, labels: np.ndarray) -> dict[str, float]:
        return {
            f"{prefix}ece_uncalibrated": float(ranking_metrics(labels, self.uncalibrated)["ece"][0]),
            "val_ece": self.val_ece_after,
            "val_ece_uncalibrated": self.val_ece_before,
            "calibration_scale": self.platt.scale,
            "calibration_shift": self.platt.shift,
        }

    def describe(self) -> str:
        return (
            f"Platt scaling fitted on validation (scale {self.platt.scale:.3f}, shift {self.platt.shift:+.3f}): "
            f"validation ECE {self.val_ece_before:.3f} -> {self.val_ece_after:.3f}"
        )


@dataclass(frozen=True)
class Assessment:
    split: Split
    probabilities: np.ndarray
    clinical: ClinicalScores
    sources: tuple[str, ...] | None
    heatmaps: Heatmaps | None  # of the first GRADCAM_MAX_IMAGES images of `split`
    audit: ShortcutAudit
    seed: int
    shift: ShiftScores | None = None  # the calls under acquisition changes, at the threshold
    calibration: Calibration | None = None  # a final model's, when it was calibrated here
    guard: GuardRates | None = None  # how often the model's input guard refuses (and each image's score)

    @property
    def threshold(self) -> float:
        return self.clinical.threshold

    @property
    def outside_share(self) -> float:
        """Mean share of Grad-CAM mass outside the lung box, over the images explained."""
        return self.audit.overall.values[OUTSIDE_SHARE]

    def predictions(self) -> pd.DataFrame:
        """One row per image: its label, P(COVID19), the calls at both thresholds, source and outside share."""
        p, labels = self.probabilities, self.split.labels
        frame = pd.DataFrame(
            {
                "file": self.split.files,
                "label": [CLASS_NAMES[int(v)] for v in labels],
                "probability_covid19": p,
                "predicted": [CLASS_NAMES[int(x >= self.threshold)] for x in p],
                "outcome": [outcome_of(y, x, self.threshold) for y, x in zip(labels, p, strict=True)],
                f"predicted_at_{THRESHOLD}": [CLASS_NAMES[int(x >= THRESHOLD)] for x in p],
            }
        )
        if self.sources is not None:
            frame["source"] = self.sources
        if self.heatmaps is not None:
            frame["gradcam_outside_share"] = self.heatmaps.shares_of(len(p))
        if self.guard is not None:
            frame["input_guard_score"] = self.guard.film_scores
            frame["refused_by_input_guard"] = self.guard.refused
        return frame

    def table(self) -> pd.DataFrame:
        """The metrics as a table: one row per metric and set, its value and interval at each threshold."""
        rows = []
        sets = {"all": self.clinical.overall, **{f"source={k}": v for k, v in self.clinical.per_source.items()}}
        for name, scored in sets.items():
            for metric in REPORTED:
                row: dict[str, Any] = {"set": name, "n": scored.n, "positives": scored.positives, "metric": metric}
                for label, key in (("threshold", f"{AT_THRESHOLD}{metric}"), ("at_0.5", metric)):
                    key = metric if metric in THRESHOLD_FREE else key
                    interval = scored.intervals.get(key)
                    row[label] = scored.metrics.get(key)
                    row[f"{label}_ci_low"] = interval.low if interval else None
                    row[f"{label}_ci_high"] = interval.high if interval else None
                rows.append(row)
        audits = {"all": self.audit.overall, **{f"source={k}": v for k, v in self.audit.per_source.items()}}
        for name, figures in audits.items():
            for metric in FIGURES:  # threshold-free: the same in both columns
                value, interval = figures.values.get(metric), figures.intervals.get(metric)
                row = {"set": name, "n": figures.n, "positives": figures.positives, "metric": metric}
                for label in ("threshold", "at_0.5"):
                    row[label] = None if value is None or not np.isfinite(value) else value
                    row[f"{label}_ci_low"] = interval.low if interval else None
                    row[f"{label}_ci_high"] = interval.high if interval else None
                rows.append(row)
        if self.shift is not None:  # at the threshold only
            for metric, value in self.shift.values.items():
                interval = self.shift.intervals.get(metric)
                finite = value is not None and np.isfinite(value)
                rows.append(
                    {
                        "set": "all",
                        "n": self.shift.n,
                        "positives": self.shift.positives,
                        "metric": metric,
                        "threshold": value if finite else None,
                        "threshold_ci_low": interval.low if interval else None,
                        "threshold_ci_high": interval.high if interval else None,
                    }
                )
        return pd.DataFrame(rows)


def assess(
    model: keras.Model,
    split: Split,
    threshold: float,
    threshold_rule: str,
    *,
    sources: tuple[str, ...] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    explain: bool = True,
    calibration: Calibration | None = None,
    source: np.ndarray | None = None,
    guard: InputGuard | None = None,
) -> Assessment:
    """`model` judged on `split` at `threshold`; `calibration`, the one the model carries (for its figures);
    `source`, the same films as stored (evaluation.acquisition.source_films), for the calls under acquisition
    changes (None: not measured); `guard`, the model's input guard, for how often it refuses (every image is
    scored all the same: the figures are the network's, and a refusal shows in the guard's own)."""
    probabilities = predict_probabilities(model, split.images)
    clinical = clinical_scores(
        split.labels,
        probabilities,
        threshold,
        threshold_rule,
        sources=None if sources is None else np.asarray(sources, dtype=object),
        resamples=resamples,
        seed=seed,
    )
    heatmaps = gradcam(model, split.images[:GRADCAM_MAX_IMAGES].astype(np.float32)) if explain else None
    audit = shortcut_audit(
        split.labels,
        masked_probabilities(lambda films: predict_probabilities(model, films), split.images),
        None if heatmaps is None else heatmaps.shares_of(len(split)),
        sources=None if sources is None else np.asarray(sources, dtype=object),
        resamples=resamples,
        seed=seed,
    )
    screen = GuardedNetwork(model, guard)  # without a guard: the network alone, no scores
    shift, guard_scores = None, {}
    if source is not None:
        # the changed films' calls and guard scores in one forward pass each
        outputs = {name: screen(x) for name, x in acquired_sets(source, int(split.images.shape[1]), seed).items()}
        changed = {name: p for name, (p, _) in outputs.items() if name != AS_GIVEN}
        guard_scores = {name: s for name, (_, s) in outputs.items() if name != AS_GIVEN and s is not None}
        shift = shift_scores(split.labels, outputs[AS_GIVEN][0], changed, threshold, resamples=resamples, seed=seed)
    rates = None if guard is None else guard_rates(screen, split.images, guard_scores, seed)
    return Assessment(split, probabilities, clinical, sources, heatmaps, audit, seed, shift, calibration, rates)


def assessment_metrics(assessment: Assessment, prefix: str) -> dict[str, float]:
    """Flat MLflow metrics: `{prefix}auc`, `{prefix}thr_sensitivity`, `{prefix}auc_ci_low`, per source
    `{prefix}source_<name>_auc`, the threshold and the shortcut audit (`{prefix}borders_only_auc`, ...)."""
    clinical = assessment.clinical
    out = clinical.overall.flat(prefix)
    for name, scored in clinical.per_source.items():
        out |= scored.flat(f"{prefix}source_{safe_name(name)}_")
    out[f"{prefix}threshold"] = clinical.threshold
    out |= assessment.audit.flat(prefix)
    if assessment.shift is not None:
        out |= assessment.shift.flat(prefix)
    if assessment.calibration is not None:
        out |= assessment.calibration.metrics(prefix, assessment.split.labels)
    if assessment.guard is not None:
        out |= assessment.guard.metrics(prefix)
    return out
