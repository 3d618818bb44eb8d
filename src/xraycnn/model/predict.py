"""A network run forward on images, outside Keras' `predict`: what the input guard, the evaluation, the
serving model and every trial's scores call."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np


def predict_probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """P(COVID19) per image (`forward_outputs` of a one-output model)."""
    return forward_outputs(model, images, batch_size).reshape(-1)


def forward_outputs(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's output per image, one row each, in batches of `batch_size` through the model's compiled
    forward pass (Keras' `predict` sets up a dataset and a progress loop per call: most of the time of a
    one-image request). Beyond one batch, the last batch is padded to full size: oneDNN's kernels for a smaller
    batch can round differently in the last bit, and the same film must score the same wherever it falls (a
    model that crops to the lungs gives every borders-only film one probability, and the audit's AUC is then
    exactly 0.5)."""
    images = images.astype(np.float32)
    count = len(images)
    forward = _forward_pass(model)
    out = []
    for start in range(0, count, batch_size):
        batch = images[start : start + batch_size]
        short = batch_size - len(batch) if count > batch_size else 0
        if short:
            batch = np.concatenate([batch, np.zeros((short, *batch.shape[1:]), np.float32)])
        result = np.asarray(forward(batch))
        out.append(result.reshape(len(batch), -1)[: batch_size - short])
    return np.concatenate(out) if out else np.empty((0, 1), np.float32)


_FORWARD: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _forward_pass(model: Any) -> Any:
    """`model(x, training=False)` as one TensorFlow graph per model, for any batch size (traced once). Kept
    beside the model, not on it (an attribute would be tracked, and saved, by Keras), and holding the model
    only weakly, so a search's finished networks are freed with their graphs."""
    forward = _FORWARD.get(model)
    if forward is None:
        import tensorflow as tf

        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        held = weakref.ref(model)
        forward = tf.function(lambda x: held()(x, training=False), input_signature=[spec], autograph=False)
        _FORWARD[model] = forward
    return forward
