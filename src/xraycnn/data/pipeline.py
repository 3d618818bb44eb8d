"""tf.data pipelines over the decoded arrays: shuffled, augmented training batches and plain eval batches.

Augmentation (data.augment) runs in the input pipeline on whole batches, in parallel with the model's step
(prefetch), so the network itself stays free of augmentation layers and the registered model takes plain
films.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import tensorflow as tf

from xraycnn.data.augment import AugmentValues, augment
from xraycnn.data.dataset import Split


@functools.lru_cache(maxsize=16)
def augmentation_function(values: AugmentValues) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """`augment` with `values` as one traced function, shared by every pipeline with those values: each trial
    builds its own pipeline, and tracing the augmentation graph again cost ~0.2-0.4 s a trial. One trace per
    image shape (a searched crop changes it): the geometry needs the static height and width."""
    return tf.function(lambda images, seed: augment(images, values, seed))


def training_batches(split: Split, batch_size: int, values: AugmentValues, seed: int) -> tf.data.Dataset:
    """float32 images (0-255) and labels, reshuffled every epoch, augmented with `values`."""
    dataset = (
        tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        .shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )
    if not values.active:
        return dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE
        )
    # One stateless seed per batch, a new stream every epoch: reproducible from `seed`, whatever the parallelism.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    augment_batch = augmentation_function(values)

    def augmented(batch: tuple[tf.Tensor, tf.Tensor], batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        return augment_batch(tf.cast(images, tf.float32), batch_seed), labels

    return (
        tf.data.Dataset.zip((dataset, seeds))
        .map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_stream(
    split: Split, batch_size: int, values: AugmentValues, seed: int, steps_per_execution: int
) -> tuple[tf.data.Dataset, int | None]:
    """`training_batches` as `fit` takes them, and the `steps_per_epoch` to pass with them.

    Where an epoch is a whole number of executions (`steps_per_execution` steps), the epochs follow one
    another in one repeated dataset, so `fit` keeps one iterator for the whole trial: a new iterator per epoch
    sets up the augmentation's function again and starts its prefetching cold (2-6 % of an epoch of the
    default search, `make bench --only cuts`). Each epoch is still one reshuffled pass over every film.
    Otherwise one pass per epoch (`steps_per_epoch` None): an execution running past the epoch's end would
    take the next epoch's batches."""
    dataset = training_batches(split, batch_size, values, seed)
    batches = math.ceil(len(split) / batch_size)
    if batches % steps_per_execution:
        return dataset, None
    return dataset.repeat(), batches


def eval_batches(split: Split, batch_size: int) -> tf.data.Dataset:
    """float32 images (0-255) and labels in file order, never augmented."""
    return (
        tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        .batch(batch_size)
        .map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
