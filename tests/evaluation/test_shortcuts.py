"""The shortcut audit through the real code (masking, prediction, AUC, intervals, Grad-CAM, per source), on
synthetic films whose class signal lies only in a border marker, or only in the lungs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xraycnn.data.dataset import Split
from xraycnn.evaluation.assessment import assess
from xraycnn.evaluation.shortcuts import BORDERS_ONLY, LUNGS_ONLY, OUTSIDE_SHARE, audit_scores, blackout
from xraycnn.regions import lung_mask

SIZE = 40


MARKER = 24  # pixels of the bright square
BACKGROUND = 100


def brightness_model() -> keras.Model:
    """P(COVID19) rises with the film's mean brightness: whatever is bright, wherever it is, is evidence;
    the bias puts the decision between a plain film and one with the bright square."""
    plain = BACKGROUND / 255
    with_marker = plain + MARKER * (255 - BACKGROUND) / 255 / SIZE**2
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(1, 1, activation="relu", kernel_initializer="ones", bias_initializer="zeros"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                1,
                activation="sigmoid",
                kernel_initializer=keras.initializers.Constant(20.0),
                bias_initializer=keras.initializers.Constant(-20.0 * (plain + with_marker) / 2),
            ),
        ]
    )


def films(where: str, per_class: int = 60, seed: int = 0) -> Split:
    """Grey films with noise; the COVID19 ones carry a bright square in the top-right corner (a marker,
    outside the lung box) or in the middle of the lungs."""
    rng = np.random.default_rng(seed)
    images = rng.normal(BACKGROUND, 1, (2 * per_class, SIZE, SIZE, 1))
    labels = np.array([1] * per_class + [0] * per_class)
    rows, cols = (slice(0, 4), slice(SIZE - 6, SIZE)) if where == "border" else (slice(17, 21), slice(17, 23))
    images[labels == 1, rows, cols, :] = 255
    return Split(np.clip(images, 0, 255).astype(np.uint8), labels, tuple(f"f{i}.png" for i in range(len(labels))))


def test_blackout_keeps_the_borders_or_the_lungs() -> None:
    image = np.full((1, SIZE, SIZE, 1), 9, np.uint8)
    inside = lung_mask(SIZE, SIZE)
    borders, lungs = blackout(image, "borders")[0, ..., 0], blackout(image, "lungs")[0, ..., 0]
    assert (borders[inside] == 0).all() and (borders[~inside] == 9).all()
    assert (lungs[~inside] == 0).all() and (lungs[inside] == 9).all()
    with pytest.raises(ValueError):
        blackout(image, "middle")


@pytest.mark.parametrize(
    ("where", "high", "low"), [("border", BORDERS_ONLY, LUNGS_ONLY), ("lungs", LUNGS_ONLY, BORDERS_ONLY)]
)
def test_the_audit_finds_where_the_signal_is(where: str, high: str, low: str) -> None:
    split = films(where)
    sources = np.array(["site-a", "site-b"] * (len(split) // 2), dtype=object)
    assessment = assess(brightness_model(), split, 0.5, "fixed", sources=tuple(sources), resamples=300, seed=1)
    audit = assessment.audit.overall
    assert assessment.clinical.overall.metrics["auc"] > 0.99  # the whole film: the signal is found
    assert audit.values[high] > 0.99 and audit.intervals[high].low > 0.95
    assert abs(audit.values[low] - 0.5) < 0.15
    assert audit.intervals[low].low < 0.5 < audit.intervals[low].high
    # Grad-CAM agrees: more heat outside the lungs than a uniform map puts there, or less
    share, uniform = audit.values[OUTSIDE_SHARE], 1 - lung_mask(SIZE, SIZE).mean()
    assert (share > uniform) if where == "border" else (share < uniform)
    assert set(assessment.audit.per_source) == {"site-a", "site-b"}
    assert all(f.values[high] > 0.95 for f in assessment.audit.per_source.values())
    metrics = assessment.audit.flat("test_")
    assert {f"test_{high}", f"test_{high}_ci_low", "test_source_site-a_lungs_only_auc"} <= set(metrics)
    table = assessment.table()
    assert set(table.loc[table["set"] == "all", "metric"]) >= {BORDERS_ONLY, LUNGS_ONLY, OUTSIDE_SHARE}


def test_a_set_with_one_class_has_no_auc_but_keeps_its_share() -> None:
    labels = np.ones(10, int)
    p = {BORDERS_ONLY: np.linspace(0, 1, 10), LUNGS_ONLY: np.linspace(0, 1, 10)}
    figures = audit_scores(labels, p, np.full(10, 0.3), resamples=100)
    assert np.isnan(figures.values[BORDERS_ONLY]) and figures.values[OUTSIDE_SHARE] == pytest.approx(0.3)
    assert set(figures.intervals) == {OUTSIDE_SHARE}
    assert figures.describe(BORDERS_ONLY) == "-" and figures.describe(OUTSIDE_SHARE) == "30% [30%, 30%]"
