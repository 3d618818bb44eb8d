"""FusedBatchNormalization is Keras' BatchNormalization, computed by TensorFlow's fused kernel."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import xraycnn.model  # noqa: F401  registers the layer for loading
from xraycnn.model.layers import FusedBatchNormalization


def _pair(channels: int = 8) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    rng = np.random.default_rng(3)
    keras_bn, fused = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    for layer in (keras_bn, fused):
        layer.build((None, 12, 12, channels))
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.normal(0, 1, channels)
    for layer in (keras_bn, fused):
        layer.gamma.assign(gamma.astype(np.float32))
        layer.beta.assign(beta.astype(np.float32))
    return keras_bn, fused


def test_it_trains_and_infers_as_keras_batch_norm_does() -> None:
    keras_bn, fused = _pair()
    x = tf.constant(np.random.default_rng(0).normal(3, 2, (32, 12, 12, 8)).astype(np.float32))
    for step in range(3):  # the moving statistics follow the same path, step after step
        batch = x * (1 + step)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(batch)
            outputs = [layer(batch, training=True) for layer in (keras_bn, fused)]
            losses = [tf.reduce_sum(tf.square(o)) for o in outputs]
        np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
        for wrt in (batch, keras_bn.gamma, keras_bn.beta):
            targets = [wrt, fused.gamma if wrt is keras_bn.gamma else fused.beta if wrt is keras_bn.beta else wrt]
            expected = tape.gradient(losses[0], targets[0])
            got = tape.gradient(losses[1], targets[1])
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fused.moving_mean, keras_bn.moving_mean, atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(fused(x, training=False), keras_bn(x, training=False), atol=1e-5)


def test_under_mixed_bfloat16_it_computes_in_float32_and_returns_the_policy_s_dtype() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = FusedBatchNormalization()
        out = layer(tf.random.uniform((4, 6, 6, 3)), training=True)
        assert out.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_network_with_it_saves_and_loads_in_safe_mode(tmp_path) -> None:
    network = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            FusedBatchNormalization(momentum=0.9),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    x = np.random.default_rng(1).uniform(0, 1, (5, 12, 12, 1)).astype(np.float32)
    network.layers[1](network.layers[0](x), training=True)  # moving statistics off their initial values
    network.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded.layers[1]) is FusedBatchNormalization
    np.testing.assert_allclose(loaded.predict(x, verbose=0), network.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 8), (4, 3, 3, 3, 2)])
def test_what_the_fused_kernel_does_not_cover_goes_to_keras(shape: tuple[int, ...]) -> None:
    keras_bn, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    x = tf.random.uniform(shape)
    np.testing.assert_allclose(fused(x, training=True), keras_bn(x, training=True), atol=1e-6)
