"""A final model's evaluation, the way the field reports one: every metric at the decision threshold chosen on
validation and at 0.5, each with a 95 % stratified bootstrap interval, overall and per source (hospital,
scanner, dataset) when the data says where each image comes from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from xraycnn.evaluation import THRESHOLD, batch_metrics, decision_metrics
from xraycnn.evaluation.bootstrap import RESAMPLES, Interval, bootstrap_intervals

# What is reported, with an interval each. The first six depend on the threshold; the last three do not.
REPORTED = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auc", "brier", "ece")
THRESHOLD_FREE = {"auc", "brier", "ece", "loss"}
AT_THRESHOLD = "thr_"  # prefix of the figures at the chosen threshold; unprefixed ones are at 0.5
MIN_PER_CLASS = 2  # a source with fewer images of a class gets no intervals (and no AUC)


@dataclass(frozen=True)
class Scored:
    """One set of images, scored: figures at 0.5 (unprefixed) and at the chosen threshold (`thr_`, when there is
    one), and the intervals of the reported ones (when resampled)."""

    n: int
    positives: int
    metrics: dict[str, float]
    intervals: dict[str, Interval] = field(default_factory=dict)

    def flat(self, prefix: str) -> dict[str, float]:
        """As MLflow metrics: `{prefix}auc`, `{prefix}thr_sensitivity`, `{prefix}auc_ci_low`, ..."""
        out = {f"{prefix}{k}": v for k, v in self.metrics.items()}
        for name, interval in self.intervals.items():
            out[f"{prefix}{name}_ci_low"] = interval.low
            out[f"{prefix}{name}_ci_high"] = interval.high
        return out

    def confusion(self, at: str = "") -> np.ndarray:
        """[[TN, FP], [FN, TP]] of the calls at 0.5 (`at=""`) or at the chosen threshold (`at=AT_THRESHOLD`)."""
        count = {k: int(self.metrics[f"{at}{k}"]) for k in ("tn", "fp", "fn", "tp")}
        return np.array([[count["tn"], count["fp"]], [count["fn"], count["tp"]]])


@dataclass(frozen=True)
class ClinicalScores:
    """A final model's scores at its threshold (chosen on validation, never on test), overall and per source."""

    threshold: float
    threshold_rule: str
    overall: Scored
    per_source: dict[str, Scored]
    resamples: int
    seed: int


def scores(labels: np.ndarray, probabilities: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
    """Every metric at 0.5 and, given a chosen `threshold`, the threshold-dependent ones again there with the
    `thr_` prefix; per row of (rows, n) inputs."""
    at_half = batch_metrics(labels, probabilities, THRESHOLD)
    if threshold is None:
        return at_half
    at_chosen = decision_metrics(labels, probabilities, threshold)
    return {**at_half, **{f"{AT_THRESHOLD}{k}": v for k, v in at_chosen.items()}}


def _reported(labels: np.ndarray, probabilities: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
    every = scores(labels, probabilities, threshold)
    return {k: v for k, v in every.items() if k.removeprefix(AT_THRESHOLD) in REPORTED}


def score_set(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float | None, resamples: int, seed: int
) -> Scored:
    """`threshold` None: at 0.5 only (a trial has no threshold of its own); `resamples` 0: no intervals."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positives = int(labels.sum())
    intervals: dict[str, Interval] = {}
    if resamples and min(positives, len(labels) - positives) >= MIN_PER_CLASS:
        intervals = bootstrap_intervals(
            labels, probabilities, lambda y, p: _reported(y, p, threshold), resamples=resamples, seed=seed
        )
    metrics = {k: float(v[0]) for k, v in scores(labels, probabilities, threshold).items()}
    return Scored(len(labels), positives, metrics, intervals)


def clinical_scores(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    threshold_rule: str,
    *,
    sources: Mapping[int, str] | np.ndarray | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ClinicalScores:
    """`sources`, one name per image (or None), splits the figures by where the images come from."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    overall = score_set(labels, probabilities, threshold, resamples, seed)
    per_source: dict[str, Scored] = {}
    if sources is not None:
        names = np.asarray(sources, dtype=object)
        for name in sorted(set(names.tolist())):
            members = names == name
            per_source[str(name)] = score_set(labels[members], probabilities[members], threshold, resamples, seed)
    return ClinicalScores(threshold, threshold_rule, overall, per_source, resamples, seed)


SOURCE_FIGURES = ("thr_specificity", "thr_sensitivity", "auc")  # what a trial logs per source


def source_figures(per_source: Mapping[str, Scored], prefix: str) -> dict[str, float]:
    """Per source, the specificity of its NORMAL films and the sensitivity of its COVID-19 films at the threshold,
    and its AUC where it has both classes, with intervals: `{prefix}source_<name>_thr_specificity`, ..."""
    from xraycnn.evaluation.shortcuts import safe_name

    out: dict[str, float] = {}
    for name, scored in per_source.items():
        flat = scored.flat(f"{prefix}source_{safe_name(name)}_")
        for figure in SOURCE_FIGURES:
            for suffix in ("", "_ci_low", "_ci_high"):
                key = f"{prefix}source_{safe_name(name)}_{figure}{suffix}"
                if key in flat and np.isfinite(flat[key]):
                    out[key] = flat[key]
    return out
