"""Calibrated probabilities carried by the network itself.

A Platt scaling, sigmoid(a * logit + c), of a network whose output is Dense(1, sigmoid) is the same Dense
layer with its kernel scaled by a and its bias moved to a * bias + c. Folded into the output layer, the
calibration needs no layer, metadata or code of its own to be applied: `predict`, `evaluate`, the pyfunc
flavour, the model server and a plain Keras load all compute the calibrated probability, with stock layers.
"""

from __future__ import annotations

import keras
import numpy as np


def output_layer(model: keras.Model) -> keras.layers.Dense:
    """The network's output: a Dense layer of one unit with a sigmoid, the last layer of every model the
    project builds; anything else cannot carry a calibration and is refused."""
    layer = model.layers[-1]
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    if not isinstance(layer, keras.layers.Dense) or layer.units != 1 or activation != "sigmoid":
        raise ValueError(
            f"{model.name}: the last layer is {type(layer).__name__} "
            f"({activation or 'no activation'}), not Dense(1, sigmoid); it cannot carry a Platt scaling"
        )
    return layer


def fold_platt(model: keras.Model, scale: float, shift: float) -> None:
    """Make `model` output sigmoid(scale * logit + shift) of what it output (a Platt scaling,
    evaluation.calibration.PlattScaling), in place: its output layer's kernel times `scale`, its bias
    `scale * bias + shift`."""
    layer = output_layer(model)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
    layer.set_weights(
        [
            (kernel * scale).astype(layer.kernel.dtype),
            (bias * scale + shift).astype(layer.bias.dtype),
        ]
    )
