"""tf.data pipelines over the decoded arrays: shuffled, augmented training batches and plain eval batches.

Augmentation runs in the input pipeline on whole batches, in parallel with the model's step (prefetch), so
the network itself stays free of preprocessing layers and the registered model takes plain images.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from xraycnn.config import Augmentation
from xraycnn.data.dataset import Split


def _augmenter(augmentation: Augmentation, seed: int) -> keras.Sequential | None:
    layers: list[keras.layers.Layer] = []
    if augmentation.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augmentation.zoom > 0:
        # ImageDataGenerator(zoom_range=z) of the notebook: scale in [1-z, 1+z], edges filled by the nearest row
        layers.append(
            keras.layers.RandomZoom((-augmentation.zoom, augmentation.zoom), fill_mode="nearest", seed=seed + 1)
        )
    return keras.Sequential(layers, name="augmentation") if layers else None


def training_batches(split: Split, batch_size: int, augmentation: Augmentation, seed: int) -> tf.data.Dataset:
    """float32 images (0-255) and labels, reshuffled every epoch, augmented when the experiment says so."""
    dataset = (
        tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        .shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )
    augmenter = _augmenter(augmentation, seed)

    def to_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        if augmenter is not None:
            images = augmenter(images, training=True)
        return images, labels

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_batches(split: Split, batch_size: int) -> tf.data.Dataset:
    """float32 images (0-255) and labels in file order, never augmented."""
    return (
        tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        .batch(batch_size)
        .map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
