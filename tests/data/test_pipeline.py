"""The training pipeline: augmentation traced once per set of values, whatever the number of trials, and the
batches it gives are `augment` of the shuffled films with the per-batch seeds."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from xraycnn.data.augment import AugmentValues, augment
from xraycnn.data.dataset import Split
from xraycnn.data.pipeline import augmentation_function, training_batches, training_stream


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


def test_a_trial_streams_whole_reshuffled_epochs_through_one_iterator_when_executions_fit_an_epoch() -> None:
    # labels number the films, so a batch says which films it holds
    split = Split(np.zeros((12, 8, 8, 1), np.uint8), np.arange(12, dtype=np.int32), ())
    values = AugmentValues(noise=0.1)
    stream, steps = training_stream(split, 2, values, seed=4, steps_per_execution=3)
    assert steps == 6  # 6 batches an epoch, 2 executions of 3
    assert stream.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    batches = [y.numpy() for _, y in stream.take(3 * steps)]
    epochs = [np.concatenate(batches[i * steps : (i + 1) * steps]) for i in range(3)]
    for epoch in epochs:  # every film once an epoch ...
        assert sorted(epoch) == list(range(12))
    assert len({tuple(epoch) for epoch in epochs}) == 3  # ... in a new order each time
    # the very batches, augmentation included, that a new iterator per epoch gives (each trial builds its own
    # datasets; a dataset's shuffle moves on with every iteration of it): the same training
    fresh, _ = training_stream(split, 2, values, seed=4, steps_per_execution=3)
    finite = training_batches(split, 2, values, seed=4)
    per_epoch = [batch for _ in range(3) for batch in finite]
    for (x, y), (x_again, y_again) in zip(fresh.take(3 * steps), per_epoch, strict=True):
        np.testing.assert_array_equal(y.numpy(), y_again.numpy())
        np.testing.assert_array_equal(x.numpy(), x_again.numpy())

    # 6 batches do not make whole executions of 4: one pass per epoch, fit counts its batches
    single, steps = training_stream(split, 2, values, seed=4, steps_per_execution=4)
    assert steps is None and single.cardinality().numpy() == 6
