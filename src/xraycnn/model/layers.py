"""Layers of the searched networks that Keras lacks in the form the CPU needs.

`FusedBatchNormalization` is Keras' `BatchNormalization` (the same weights, config, moving statistics and
float32 arithmetic under mixed precision) computed by TensorFlow's fused kernel: one op forward and one
backward instead of Keras' separate moments, normalisation and their gradients. At the searched networks'
sizes batch normalisation is memory-bound and cost as much of a training step as the convolutions (`make
bench --only breakdown`). Registered models carry Keras' own layer instead (`stock_layers`): the same
weights and arithmetic, loadable without xraycnn; `import xraycnn.model` loads models that carry this one.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="xraycnn")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        axis = self.axis if isinstance(self.axis, int) else None
        rank = len(inputs.shape)
        if mask is not None or self.renorm or rank != 4 or axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)  # what the fused kernel does not cover
        x = tf.cast(inputs, tf.float32)  # as Keras does: statistics in float32 under mixed precision
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            # The kernel returns the unbiased variance (n / (n - 1)); Keras' moving variance uses the biased one.
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(
                self.moving_mean * momentum + tf.cast(mean, self.moving_mean.dtype) * (1 - momentum)
            )
            self.moving_variance.assign(
                self.moving_variance * momentum + tf.cast(variance, self.moving_variance.dtype) * (1 - momentum)
            )
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


def as_keras_batch_normalization(layer: FusedBatchNormalization) -> keras.layers.BatchNormalization:
    """Keras' own layer with `layer`'s config and weights (moving statistics included)."""
    config = layer.get_config()
    stock = keras.layers.BatchNormalization.from_config(config)
    stock.build(tuple(layer.input.shape))  # the layer of a built network: its input is known
    stock.set_weights(layer.get_weights())
    return stock


def stock_layers(network: keras.Model) -> list[keras.layers.Layer]:
    """The network's layers, each `FusedBatchNormalization` replaced by Keras' `BatchNormalization` with its
    weights: a model of these saves as stock Keras."""
    return [
        as_keras_batch_normalization(layer) if isinstance(layer, FusedBatchNormalization) else layer
        for layer in network.layers
    ]
