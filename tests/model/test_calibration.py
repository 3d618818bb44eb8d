"""A Platt scaling folded into a network's output layer gives the calibrated probabilities, with stock layers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from xraycnn.evaluation.calibration import PlattScaling
from xraycnn.model.calibration import fold_platt
from xraycnn.model.predict import predict_probabilities


def network() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid", dtype="float32"),
        ]
    )


def test_the_folded_network_outputs_the_calibrated_probability(tmp_path: Path) -> None:
    model = network()
    x = np.random.default_rng(0).uniform(0, 3, (64, 8, 8, 1)).astype(np.float32)
    raw = predict_probabilities(model, x)
    platt = PlattScaling(scale=0.45, shift=-0.7)
    fold_platt(model, platt.scale, platt.shift)
    folded = predict_probabilities(model, x)
    np.testing.assert_allclose(folded, platt.apply(raw), atol=2e-6)
    model.save(tmp_path / "m.keras")  # stock layers: loads without the project's code, calibrated
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0).ravel(), folded, atol=1e-6)


def test_a_network_without_a_sigmoid_output_is_refused() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="not Dense\\(1, sigmoid\\)"):
        fold_platt(model, 0.5, 0.0)
