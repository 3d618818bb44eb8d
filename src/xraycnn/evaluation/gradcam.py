"""Grad-CAM (Selvaraju et al., 2017) for the project's Sequential CNNs: where in the film the last conv
block's evidence for the predicted class lies, and how much of it falls outside the lungs.

Classifiers of chest films are known to learn shortcuts (text markers, borders, the hospital's framing). A
heatmap whose mass sits outside the central lung region is a warning sign; the share of it is reported as a
shortcut indicator. The lung region is the fixed box of `xraycnn.regions`. Heatmaps are always on the film's
own geometry: a model that crops the film first (data.preprocess) has its heatmap placed back where its
crop came from, zero elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from xraycnn.data.preprocess import film_region_of
from xraycnn.evaluation import OUTCOMES, outcome_of
from xraycnn.regions import lung_mask


@dataclass(frozen=True)
class Heatmaps:
    maps: np.ndarray  # float32 (n, h, w), each scaled to [0, 1]
    outside_share: np.ndarray  # (n,): share of each map's mass outside LUNG_BOX

    def shares_of(self, count: int) -> np.ndarray:
        """One outside share per image of a set of `count` whose first images these maps explain; NaN beyond."""
        shares = np.full(count, np.nan)
        shares[: len(self.outside_share)] = self.outside_share
        return shares


_BLOCK_TAIL = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU)


def _explained_layer(model: keras.Model) -> int:
    """The last conv block's feature maps: its Conv2D, or the normalisation and activation right after it."""
    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name} has no Conv2D layer to explain")
    index = convs[-1]
    while index + 1 < len(model.layers) and isinstance(model.layers[index + 1], _BLOCK_TAIL):
        index += 1
    return index


def outside_share(maps: np.ndarray) -> np.ndarray:
    """Per map: its mass outside the lung box over its total mass (NaN for an all-zero map)."""
    inside = lung_mask(*maps.shape[1:])
    total = maps.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, maps[:, ~inside].sum(axis=1) / np.where(total > 0, total, 1), np.nan)


def gradcam(model: keras.Model, images: np.ndarray, batch_size: int = 128) -> Heatmaps:
    """Heatmaps of the evidence for each image's predicted class, at the images' resolution.

    The gradient is taken of the output unit's logit (before the sigmoid, which saturates on confident
    predictions and would zero the gradient), negated where the model predicts NORMAL.
    """
    conv_index = _explained_layer(model)
    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense) or head.units != 1:
        raise ValueError("Grad-CAM here expects a single-unit Dense output layer (P(COVID19))")
    height, width = images.shape[1:3]
    r0, r1, c0, c1 = film_region_of(model, height, width)
    layers = model.layers[:-1]

    # One graph for every batch (the batch dimension left open): run eagerly, layer by layer, the passes
    # cost 2.5-3x more (`make bench --only cuts`), and a champion's assessment explains up to
    # GRADCAM_MAX_IMAGES films.
    @tf.function(input_signature=[tf.TensorSpec((None, *images.shape[1:]), tf.float32)])
    def explain(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            h = x
            conv = None
            for i, layer in enumerate(layers):
                h = layer(h, training=False)
                if i == conv_index:
                    conv = h
                    tape.watch(conv)
            logit = tf.matmul(tf.cast(h, tf.float32), tf.cast(head.kernel, tf.float32)) + tf.cast(head.bias, tf.float32)
            logit = logit[:, 0]
            target = tf.where(logit >= 0, logit, -logit)  # the predicted class's evidence
        grads = tf.cast(tape.gradient(target, conv), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(tf.cast(conv, tf.float32) * weights, axis=-1))
        cam = tf.image.resize(cam[..., None], (r1 - r0, c1 - c0), method="bilinear")[..., 0]
        cam = tf.pad(cam, [[0, 0], [r0, height - r1], [c0, width - c1]])  # back onto the film
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        return cam / tf.where(peak > 0, peak, 1.0)

    out = [
        explain(tf.convert_to_tensor(images[start : start + batch_size], dtype=tf.float32)).numpy()
        for start in range(0, len(images), batch_size)
    ]
    maps = np.concatenate(out).astype(np.float32) if out else np.empty((0, height, width), np.float32)
    return Heatmaps(maps, outside_share(maps))


def seeded_sample(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, per_outcome: int, seed: int
) -> dict[str, np.ndarray]:
    """Up to `per_outcome` indices of each of TP, FP, FN and TN, drawn with `seed` (the same every time)."""
    rng = np.random.default_rng(seed)
    outcomes = np.array([outcome_of(y, p, threshold) for y, p in zip(labels, probabilities, strict=True)])
    picked = {}
    for outcome in OUTCOMES:
        members = np.flatnonzero(outcomes == outcome)
        picked[outcome] = np.sort(rng.choice(members, size=min(per_outcome, len(members)), replace=False))
    return picked
