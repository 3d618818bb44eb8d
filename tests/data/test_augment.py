"""Augmentation: every kind changes the films within 0-255, reproducibly from the seed; erasing touches only
corners and borders; nothing changes when all are off."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from xraycnn.data.augment import AugmentValues, augment
from xraycnn.regions import LUNG_BOX, box_mask

STRENGTHS = {
    "zoom": 0.2,
    "horizontal_flip": True,
    "translate": 0.1,
    "crop": 0.3,
    "rotate": 10.0,
    "brightness": 0.2,
    "contrast": 0.3,
    "gamma": 0.4,
    "noise": 0.2,
    "blur": 1.5,
    "erase": 1.0,
}


@pytest.fixture(scope="module")
def images() -> tf.Tensor:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48]
    films = [
        np.clip(80 + 100 * np.sin(x / (3 + i)) * np.cos(y / 5) + rng.normal(0, 5, (48, 48)), 0, 255) for i in range(8)
    ]
    return tf.constant(np.stack(films)[..., None], tf.float32)


def seed(a: int) -> tf.Tensor:
    return tf.constant([a, 7], tf.int64)


@pytest.mark.parametrize("name", sorted(STRENGTHS))
def test_each_augmentation_changes_the_films_within_range_and_reproducibly(images: tf.Tensor, name: str) -> None:
    values = AugmentValues(**{name: STRENGTHS[name]})
    out = augment(images, values, seed(1)).numpy()
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, images.numpy(), atol=0.5)
    np.testing.assert_array_equal(out, augment(images, values, seed(1)).numpy())
    assert not np.array_equal(out, augment(images, values, seed(2)).numpy())


def test_nothing_changes_when_every_augmentation_is_off(images: tf.Tensor) -> None:
    assert not AugmentValues().active
    np.testing.assert_array_equal(augment(images, AugmentValues(), seed(1)).numpy(), images.numpy())


def test_erasing_touches_only_corners_and_border_strips(images: tf.Tensor) -> None:
    out = augment(images, AugmentValues(erase=1.0), seed(3)).numpy()
    changed = (out != images.numpy())[..., 0]
    centre = box_mask((0.25, 0.75, 0.25, 0.75), 48, 48)
    assert changed.any(axis=(1, 2)).all()  # every film lost a corner and a strip
    assert not changed[:, centre].any()
    assert changed[:, ~box_mask(LUNG_BOX, 48, 48)].sum() > 0


def test_all_together_is_one_pipeline(images: tf.Tensor) -> None:
    values = AugmentValues(**STRENGTHS)
    run = tf.function(lambda x, s: augment(x, values, s))
    out = run(images, seed(4)).numpy()
    assert out.shape == images.shape and np.isfinite(out).all()
    assert values.only("blur") == AugmentValues(blur=1.5)
