"""Platt scaling fitted on held-out scores: it recovers a known miscalibration and removes the error."""

from __future__ import annotations

import numpy as np
import pytest

from xraycnn.evaluation.calibration import PlattScaling, expected_calibration_error, fit_platt, logit
from xraycnn.evaluation.threshold import choose_threshold


def miscalibrated(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities q; the model says sigmoid(2.5 logit(q) + 1): overconfident, biased."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.02, 0.98, n)
    labels = (rng.uniform(size=n) < q).astype(int)
    return labels, 1 / (1 + np.exp(-(2.5 * logit(q) + 1.0)))


def test_platt_scaling_recovers_a_known_miscalibration() -> None:
    labels, p = miscalibrated()
    platt = fit_platt(labels, p)
    # the inverse of a = 2.5, c = 1: scale 1 / 2.5, shift -1 / 2.5
    assert platt.scale == pytest.approx(0.4, rel=0.05) and platt.shift == pytest.approx(-0.4, abs=0.05)
    before, after = expected_calibration_error(labels, p)[0], expected_calibration_error(labels, platt.apply(p))[0]
    assert before > 0.1 and after < 0.02


def test_platt_scaling_keeps_the_ranking_and_the_calls() -> None:
    labels, p = miscalibrated(2000, seed=1)
    platt = fit_platt(labels, p)
    calibrated = platt.apply(p)
    np.testing.assert_array_equal(np.argsort(p, kind="stable"), np.argsort(calibrated, kind="stable"))
    raw, moved = choose_threshold(labels, p), choose_threshold(labels, calibrated)
    assert (raw.sensitivity, raw.specificity) == pytest.approx((moved.sensitivity, moved.specificity))
    assert platt.apply_threshold(raw.value) == pytest.approx(moved.value, abs=1e-6)
    assert PlattScaling().apply(p) == pytest.approx(p, abs=1e-6)  # the identity
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(np.ones(5), p[:5])


def test_the_shift_youden_threshold_is_youden_s_without_changes_and_protects_normals_under_them() -> None:
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(500, int), np.ones(500, int)]
    p = np.clip(np.where(labels == 1, 0.65, 0.35) + rng.normal(0, 0.12, 1000), 0, 1)
    plain = choose_threshold(labels, p)
    same = choose_threshold(labels, p, "shift_youden", changed={"gamma_0.6": p})
    assert same.value == pytest.approx(plain.value) and same.worst_specificity == pytest.approx(plain.specificity)
    raised = {"blur_2": np.clip(p + np.where(labels == 0, 0.1, 0.0), 0, 1)}  # normals move up under the change
    robust = choose_threshold(labels, p, "shift_youden", changed=raised)
    assert robust.value > plain.value and "under the worst acquisition change" in robust.describe()
    # the highest worst-case J over every cut
    for cut in np.unique(np.r_[p, raised["blur_2"]]):
        sens = min(np.mean(p[labels == 1] >= cut), np.mean(raised["blur_2"][labels == 1] >= cut))
        spec = min(np.mean(p[labels == 0] < cut), np.mean(raised["blur_2"][labels == 0] < cut))
        assert sens + spec <= robust.worst_sensitivity + robust.worst_specificity + 1e-12
    with pytest.raises(ValueError, match="needs the films' probabilities"):
        choose_threshold(labels, p, "shift_youden")


def test_the_shift_specificity_threshold_is_the_lowest_that_keeps_the_normals_under_every_change() -> None:
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(400, int), np.ones(400, int)]
    p = np.clip(np.where(labels == 1, 0.65, 0.35) + rng.normal(0, 0.12, 800), 0, 1)
    changed = {"blur_2": np.clip(p + np.where(labels == 0, 0.08, 0.0), 0, 1), "gamma_0.6": p}
    chosen = choose_threshold(labels, p, "shift_specificity", changed=changed, target_shift_specificity=0.9)
    assert chosen.rule == "shift_specificity>=0.9"
    normals = labels == 0
    for q in (p, *changed.values()):
        assert np.mean(q[normals] < chosen.value) >= 0.9
    # the lowest such threshold: just below it, the changed normals keep their call less often than 0.9
    assert np.mean(changed["blur_2"][normals] < chosen.value - 2e-6) < 0.9
    assert chosen.worst_specificity >= 0.9 and chosen.sensitivity == pytest.approx(np.mean(p[~normals] >= chosen.value))
