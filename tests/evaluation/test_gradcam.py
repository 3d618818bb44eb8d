"""Grad-CAM follows the evidence: on a network whose evidence is plain brightness, the heat sits on the
bright patch, and the shortcut indicator tells a patch in the lungs from one in a corner."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xraycnn.evaluation.gradcam import gradcam, lung_mask, outside_share, seeded_sample


def brightness_model(size: int = 32) -> keras.Model:
    """conv (identity, relu) -> flatten -> dense (equal weights): the logit is the image's total brightness."""
    model = keras.Sequential(
        [
            keras.Input((size, size, 1)),
            keras.layers.Conv2D(1, 1, activation="relu", kernel_initializer="ones", bias_initializer="zeros"),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(0.01)),
        ]
    )
    return model


def patch(size: int, top: int, left: int) -> np.ndarray:
    image = np.zeros((size, size, 1), np.float32)
    image[top : top + 4, left : left + 4] = 255.0
    return image


def test_heat_sits_on_the_evidence_and_the_indicator_tells_lungs_from_corners() -> None:
    images = np.stack([patch(32, 14, 14), patch(32, 0, 0)])  # centre of the lungs; the top-left corner (a marker)
    heat = gradcam(brightness_model(), images)
    assert heat.maps.shape == (2, 32, 32) and heat.maps.max() == pytest.approx(1.0)
    for image, heatmap in zip(images, heat.maps, strict=True):
        bright = image[..., 0] > 0
        assert heatmap[bright].mean() > 5 * heatmap[~bright].mean()
    assert heat.outside_share[0] < 0.05 and heat.outside_share[1] > 0.95


def test_outside_share_of_a_uniform_map_is_the_area_outside_the_box() -> None:
    uniform = np.ones((1, 100, 100), np.float32)
    assert outside_share(uniform)[0] == pytest.approx(1 - lung_mask(100, 100).mean())
    assert np.isnan(outside_share(np.zeros((1, 10, 10)))[0])


def test_a_model_without_conv_layers_is_refused() -> None:
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="no Conv2D"):
        gradcam(model, np.zeros((1, 8, 8, 1), np.float32))


def test_the_sample_is_seeded_and_covers_every_outcome() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0] * 5)
    p = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.6, 0.4] * 5)
    a, b = seeded_sample(labels, p, 0.5, 3, seed=1), seeded_sample(labels, p, 0.5, 3, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert {k: len(v) for k, v in a.items()} == {"TP": 3, "FP": 3, "FN": 3, "TN": 3}
    assert all(labels[i] == 1 and p[i] >= 0.5 for i in a["TP"]) and all(labels[i] == 0 and p[i] < 0.5 for i in a["TN"])
