"""The acquisition changes and the calls under them, on films and scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from xraycnn.evaluation import decision_metrics
from xraycnn.evaluation.acquisition import (
    ACQUISITION_SIZE,
    AS_GIVEN,
    CHANGES,
    WORST_SPECIFICITY,
    acquired_sets,
    change_films,
    shift_scores,
)


def films(n: int = 6, size: int = ACQUISITION_SIZE, seed: int = 0) -> np.ndarray:
    """Smooth chest-like films with some texture: every change has something to change."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 60 + 120 * np.exp(-((x - 0.5) ** 2) / 0.08) + 30 * np.sin(12 * y)
    out = base[None] + rng.normal(0, 6, (n, size, size))
    return np.clip(out, 0, 255).astype(np.uint8)[..., None]


@pytest.mark.parametrize("name", list(CHANGES))
def test_every_change_changes_the_film_reproducibly_and_keeps_its_shape(name: str) -> None:
    source = films()
    changed = change_films(source, name, seed=3)
    assert changed.dtype == np.uint8 and changed.shape == source.shape
    assert np.mean(np.abs(changed.astype(float) - source)) > 0.5  # a change, not a no-op
    np.testing.assert_array_equal(changed, change_films(source, name, seed=3))  # seeded
    resized = change_films(source, name, seed=3, size=64)
    assert resized.shape == (len(source), 64, 64, 1) and resized.dtype == np.uint8


def test_as_given_is_the_film_and_every_set_is_brought_to_the_model_size() -> None:
    source = films(3)
    np.testing.assert_array_equal(change_films(source, AS_GIVEN), source)
    sets = acquired_sets(source, 48)
    assert list(sets) == [AS_GIVEN, *CHANGES] and all(v.shape == (3, 48, 48, 1) for v in sets.values())
    with pytest.raises(ValueError, match="unknown acquisition change"):
        change_films(source, "solarize")


def test_the_changes_do_what_their_names_say() -> None:
    source = films(4).astype(float)
    noisy = change_films(source, "noise_8").astype(float)
    assert np.std(noisy - source) == pytest.approx(8, rel=0.1)
    darker = change_films(source, "gamma_1.6").astype(float)
    assert darker.mean() < source.mean() and change_films(source, "gamma_0.6").mean() > source.mean()
    flat = change_films(source, "contrast_0.6").astype(float)
    assert flat.std() == pytest.approx(0.6 * source.std(), rel=0.05)

    def sharpness(f: np.ndarray) -> float:
        return float(np.abs(np.diff(f.astype(float), axis=2)).mean())

    assert sharpness(change_films(source, "blur_2")) < 0.6 * sharpness(source)
    assert sharpness(change_films(source, "half_resolution")) < sharpness(source)
    assert sharpness(change_films(source, "unsharp_1.0")) > sharpness(source)


def test_shift_scores_are_the_calls_at_the_threshold_and_the_worst_is_their_minimum() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(300, int), np.ones(300, int)]
    clean = np.clip(np.where(labels == 1, 0.7, 0.3) + rng.normal(0, 0.1, 600), 0, 1)
    changed = {
        "gamma_0.6": clean,  # nothing moves
        "blur_2": np.clip(clean + 0.15, 0, 1),  # every score up: normals cross the threshold
        "reframed": np.clip(clean - 0.1, 0, 1),  # every score down: COVID-19 films cross it
    }
    scores = shift_scores(labels, clean, changed, 0.5, resamples=200, seed=1)
    for name, p in changed.items():
        calls = decision_metrics(labels, p, 0.5)
        assert scores.values[f"shift_{name}_specificity"] == pytest.approx(calls["specificity"][0])
        assert scores.values[f"shift_{name}_sensitivity"] == pytest.approx(calls["sensitivity"][0])
    assert scores.worst_change == "blur_2"
    assert scores.worst_specificity == pytest.approx(scores.values["shift_blur_2_specificity"])
    assert scores.worst_specificity < scores.values["shift_clean_specificity"]
    interval = scores.intervals[WORST_SPECIFICITY]
    assert interval.low <= scores.worst_specificity <= interval.high
    flat = scores.flat("test_")
    assert flat["test_shift_worst_specificity"] == scores.worst_specificity
    assert "test_shift_worst_specificity_ci_low" in flat and "test_shift_mean_auc" in flat
    assert scores.rows()[0][0] == "blur_2"  # worst first
    assert shift_scores(labels, clean, changed, 0.5, resamples=0).intervals == {}
