"""The training pipeline: augmentation traced once per set of values, whatever the number of trials, and the
batches it gives are `augment` of the shuffled films with the per-batch seeds."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from xraycnn.data.augment import AugmentValues, augment
from xraycnn.data.dataset import Split
from xraycnn.data.pipeline import augmentation_function, training_batches


def test_every_trials_pipeline_shares_one_trace_and_augments_as_augment_does() -> None:
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (10, 24, 24, 1), dtype=np.uint8), rng.integers(0, 2, 10).astype(np.int32), ())
    values = AugmentValues(zoom=0.1, rotate=5.0, contrast=0.2, noise=0.1, erase=0.5)
    first = [x.numpy() for x, _ in training_batches(split, 4, values, seed=5)]
    keras.backend.clear_session()  # what Keras Tuner does between trials
    second = [x.numpy() for x, _ in training_batches(split, 4, values, seed=5)]
    assert augmentation_function(values).experimental_get_tracing_count() == 1

    plain = [x for x, _ in training_batches(split, 4, AugmentValues(), seed=5)]  # same shuffle, no augmentation
    seeds = list(tf.data.Dataset.random(seed=5, rerandomize_each_iteration=True).batch(2).take(3))
    assert len(first) == len(second) == len(plain) == 3
    for got, again, films, batch_seed in zip(first, second, plain, seeds, strict=False):
        np.testing.assert_array_equal(got, again)
        np.testing.assert_allclose(got, augment(films, values, batch_seed).numpy(), atol=1e-3)
        assert not np.allclose(got, films.numpy())


def test_films_of_another_size_get_their_own_trace() -> None:
    # a searched crop changes the image size between trials; the geometry needs the static height and width
    values = AugmentValues(zoom=0.1, rotate=5.0)
    rng = np.random.default_rng(1)
    for side in (24, 16, 24):
        split = Split(rng.integers(0, 256, (6, side, side, 1), dtype=np.uint8), np.zeros(6, np.int32), ())
        batches = [x.numpy() for x, _ in training_batches(split, 3, values, seed=2)]
        assert [b.shape for b in batches] == [(3, side, side, 1)] * 2
    assert augmentation_function(values).experimental_get_tracing_count() == 2
