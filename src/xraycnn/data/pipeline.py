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
from xraycnn.data.preprocess import FilmSteps, apply_steps


@functools.lru_cache(maxsize=16)
def augmentation_function(
    values: AugmentValues, steps: FilmSteps | None = None
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """`augment` with `values` as one traced function, shared by every pipeline with those values: each trial
    builds its own pipeline, and tracing the augmentation graph again is a cost per trial. One trace per image
    shape (a searched crop changes it): the geometry needs the static height and width. With `steps`, the
    images are films: augmented, rounded to whole grey levels as a stored film is, then preprocessed."""
    if steps is None:
        return tf.function(lambda images, seed: augment(images, values, seed))
    return tf.function(lambda images, seed: apply_steps(tf.round(augment(images, values, seed)), steps))


def training_batches(
    split: Split, batch_size: int, values: AugmentValues, seed: int, steps: FilmSteps | None = None
) -> tf.data.Dataset:
    """float32 images (0-255) and labels, reshuffled every epoch, augmented with `values`. With `steps`,
    `split` holds films, augmented before `steps` make them the network's input (`values` must be active)."""
    dataset = (
        tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        .shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )
    if not values.active:
        if steps is not None:
            raise ValueError("films are augmented before their preprocessing; without augmentation, pass the inputs")
        return dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE
        )
    # One stateless seed per batch, a new stream every epoch: reproducible from `seed`, whatever the parallelism.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    # keyed as the tests and the bench call it: the same values share one traced function
    augment_batch = augmentation_function(values) if steps is None else augmentation_function(values, steps)

    def augmented(batch: tuple[tf.Tensor, tf.Tensor], batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        return augment_batch(tf.cast(images, tf.float32), batch_seed), labels

    return (
        tf.data.Dataset.zip((dataset, seeds))
        .map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_stream(
    split: Split,
    batch_size: int,
    values: AugmentValues,
    seed: int,
    steps_per_execution: int,
    steps: FilmSteps | None = None,
) -> tuple[tf.data.Dataset, int | None]:
    """`training_batches` as `fit` takes them, and the `steps_per_epoch` to pass with them.

    Where an epoch is a whole number of executions (`steps_per_execution` steps), the epochs follow one
    another in one repeated dataset, so `fit` keeps one iterator for the whole trial: a new iterator per epoch
    sets up the augmentation's function again and starts its prefetching cold (2-6 % of an epoch of the
    default search, `make bench --only cuts`). Each epoch is still one reshuffled pass over every film.
    Otherwise one pass per epoch (`steps_per_epoch` None): an execution running past the epoch's end would
    take the next epoch's batches."""
    dataset = training_batches(split, batch_size, values, seed, steps)
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
