"""Threshold choice, calibration, bootstrap intervals and per-source figures on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from xraycnn.evaluation import binary_metrics
from xraycnn.evaluation.bootstrap import bootstrap_intervals, stratified_resamples
from xraycnn.evaluation.calibration import expected_calibration_error, reliability
from xraycnn.evaluation.clinical import REPORTED, clinical_scores
from xraycnn.evaluation.threshold import choose_threshold


def scores(n_pos: int = 300, n_neg: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    p = np.clip(np.where(labels == 1, rng.normal(0.7, 0.15, len(labels)), rng.normal(0.3, 0.15, len(labels))), 0, 1)
    return labels, p


def test_youden_threshold_maximises_sensitivity_plus_specificity() -> None:
    labels, p = scores()
    chosen = choose_threshold(labels, p)
    best_j = chosen.sensitivity + chosen.specificity - 1
    for cut in np.linspace(0.05, 0.95, 91):
        m = binary_metrics(labels, p, cut)
        assert m["sensitivity"] + m["specificity"] - 1 <= best_j + 1e-12
    m = binary_metrics(labels, p, chosen.value)
    assert (m["sensitivity"], m["specificity"]) == pytest.approx((chosen.sensitivity, chosen.specificity))
    assert 0.4 < chosen.value < 0.6  # the two classes are symmetric around 0.5


def test_target_sensitivity_threshold_is_the_highest_that_reaches_it() -> None:
    labels, p = scores()
    chosen = choose_threshold(labels, p, "sensitivity", 0.95)
    assert binary_metrics(labels, p, chosen.value)["sensitivity"] >= 0.95
    above = np.min(p[p > chosen.value])
    assert binary_metrics(labels, p, above)["sensitivity"] < 0.95
    assert chosen.rule == "sensitivity>=0.95" and "on validation" in chosen.describe()
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.ones(4), np.full(4, 0.5))


def test_calibration_error_of_calibrated_and_overconfident_models() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 200_000)
    calibrated = (rng.uniform(0, 1, p.size) < p).astype(int)  # P(COVID19 | p) = p
    assert expected_calibration_error(calibrated, p)[0] < 0.01
    overconfident = np.where(p >= 0.5, 1.0, 0.0)  # says 0 or 1, right as often as the calibrated one
    assert expected_calibration_error(calibrated, overconfident)[0] == pytest.approx(0.25, abs=0.01)
    bins = reliability(calibrated, p)
    assert bins.counts.sum() == p.size and np.allclose(bins.observed, bins.predicted, atol=0.01)


def test_bootstrap_is_stratified_seeded_and_covers_the_estimate() -> None:
    labels, p = scores(50, 150)
    rows = stratified_resamples(labels, 200, seed=3)
    assert rows.shape == (200, 200) and (labels[rows].sum(axis=1) == 50).all()
    a = bootstrap_intervals(labels, p, lambda y, q: {"auc": _auc_rows(y, q)}, resamples=300, seed=3)
    b = bootstrap_intervals(labels, p, lambda y, q: {"auc": _auc_rows(y, q)}, resamples=300, seed=3)
    c = bootstrap_intervals(labels, p, lambda y, q: {"auc": _auc_rows(y, q)}, resamples=300, seed=4)
    assert a == b and a != c
    estimate = binary_metrics(labels, p)["auc"]
    assert a["auc"].low < estimate < a["auc"].high and a["auc"].high - a["auc"].low < 0.15


def _auc_rows(y: np.ndarray, q: np.ndarray) -> np.ndarray:
    from xraycnn.evaluation import batch_metrics

    return batch_metrics(y, q)["auc"]


def test_intervals_narrow_with_more_data_and_sources_are_scored_apart() -> None:
    small = clinical_scores(*scores(30, 60), 0.5, "fixed", resamples=300, seed=0)
    large = clinical_scores(*scores(600, 1200), 0.5, "fixed", resamples=300, seed=0)
    for name in ("auc", "thr_sensitivity", "thr_specificity"):
        small_width, large_width = (
            e.overall.intervals[name].high - e.overall.intervals[name].low for e in (small, large)
        )
        assert large_width < small_width / 2
    assert set(REPORTED) <= set(small.overall.intervals)

    labels, p = scores(100, 100)
    p_bad = p.copy()
    sources = np.array(["good"] * 50 + ["bad"] * 50 + ["good"] * 50 + ["bad"] * 50)
    p_bad[sources == "bad"] = np.random.default_rng(0).uniform(0, 1, 100)  # a source the model cannot read
    evaluation = clinical_scores(labels, p_bad, 0.5, "fixed", sources=sources, resamples=200, seed=0)
    assert set(evaluation.per_source) == {"good", "bad"}
    assert evaluation.per_source["good"].n == 100 and evaluation.per_source["good"].positives == 50
    assert evaluation.per_source["good"].metrics["auc"] > 0.9 > 0.7 > evaluation.per_source["bad"].metrics["auc"]
    flat = evaluation.per_source["bad"].flat("test_source_bad_")
    assert "test_source_bad_auc_ci_low" in flat and "test_source_bad_thr_sensitivity" in flat


def test_threshold_figures_differ_from_the_default_ones() -> None:
    labels, p = scores()
    evaluation = clinical_scores(labels, p * 0.6, 0.3, "fixed", resamples=100, seed=0)  # all p below 0.6
    m = evaluation.overall.metrics
    assert m["sensitivity"] < 0.2 < 0.8 < m["thr_sensitivity"]
    assert m["auc"] == pytest.approx(binary_metrics(labels, p)["auc"])  # ranking does not move
