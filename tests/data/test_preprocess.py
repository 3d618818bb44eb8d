"""Preprocessing: the layer a registered model carries equals OpenCV's equalisation and the arrays training
caches, crops and masks where it says, and its outputs are cached per preprocessing."""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import build_dataset
from xraycnn.config import DataConfig
from xraycnn.data import cache, dataset, preprocess
from xraycnn.data.dataset import prepare_data
from xraycnn.data.discovery import discover
from xraycnn.data.preprocess import (
    FilmPreprocessing,
    FilmSteps,
    equalize_clahe,
    equalize_global,
    film_preprocessing_model,
    film_region_of,
    preprocess_films,
    preprocessing_key_of,
)


def films(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Chest-like films: a bright body, darker lungs, a few bright marks and noise, unequal histograms."""
    rng = np.random.default_rng(seed)
    x = np.mgrid[0:height, 0:width][1]
    out = []
    for _ in range(n):
        body = 60 + 120 * np.exp(-(((x - width / 2) / (0.35 * width)) ** 2)) + rng.normal(0, 15, (height, width))
        body[rng.integers(0, height, 8), rng.integers(0, width, 8)] = 255
        out.append(np.clip(body * rng.uniform(0.5, 1.0), 0, 255).astype(np.uint8))
    return np.stack(out)[..., None]


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 50), (97, 80)])
def test_global_equalisation_is_opencvs(height: int, width: int) -> None:
    images = np.concatenate([films(6, height, width), np.full((1, height, width, 1), 7, np.uint8)])
    ours = equalize_global(tf.constant(images, tf.float32)).numpy()[..., 0]
    theirs = np.stack([cv2.equalizeHist(image[..., 0]) for image in images])
    np.testing.assert_array_equal(ours, theirs)  # a one-valued film stays as it is in both


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 50), (97, 80)])
@pytest.mark.parametrize(("clip", "tiles"), [(2.0, 8), (4.0, 4), (40.0, 3)])
def test_clahe_is_opencvs(height: int, width: int, clip: float, tiles: int) -> None:
    images = films(4, height, width, seed=tiles)
    ours = equalize_clahe(tf.constant(images, tf.float32), clip, tiles).numpy()[..., 0]
    theirs = np.stack([cv2.createCLAHE(clip, (tiles, tiles)).apply(image[..., 0]) for image in images])
    np.testing.assert_array_equal(ours, theirs)


def test_crop_and_mask_follow_the_box() -> None:
    image = np.arange(40 * 40, dtype=np.float32).reshape(1, 40, 40, 1) % 256
    box = (0.25, 0.75, 0.1, 0.6)
    cropped = FilmPreprocessing.of(FilmSteps(crop=True, box=box))(image).numpy()
    np.testing.assert_array_equal(cropped, image[:, 10:30, 4:24])
    masked = FilmPreprocessing.of(FilmSteps(mask=True, box=box))(image).numpy()
    np.testing.assert_array_equal(masked[:, 10:30, 4:24], image[:, 10:30, 4:24])
    assert masked.sum() == image[:, 10:30, 4:24].sum()
    assert FilmSteps(crop=True, box=box).output_size(40, 40) == (20, 20)
    assert FilmSteps(crop=True, box=box).film_region(40, 40) == (10, 30, 4, 24)
    assert not FilmSteps().active and FilmSteps().key() == "none"
    assert FilmSteps(crop=True, equalize="clahe").key() == "crop-eq_clahe2x8"


@pytest.mark.parametrize(
    "steps",
    [FilmSteps(crop=True, equalize="clahe"), FilmSteps(crop=True, equalize="global"), FilmSteps(mask=True)],
    ids=lambda s: s.key(),
)
def test_training_arrays_equal_what_the_saved_model_computes(tmp_path: Path, steps: FilmSteps) -> None:
    images = films(5, 64, 64)
    cached = preprocess_films(images, steps)
    assert cached.dtype == np.uint8 and cached.shape == (5, *steps.output_size(64, 64), 1)
    model = keras.Sequential([keras.Input((64, 64, 1)), film_preprocessing_model(steps, 64, 64, 1)])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)  # no custom object: stock Keras
    assert preprocessing_key_of(loaded) == steps.key()
    assert film_region_of(loaded, 64, 64) == steps.film_region(64, 64)
    np.testing.assert_array_equal(loaded.predict(images.astype(np.float32), verbose=0), cached.astype(np.float32))
    # models registered before carry the FilmPreprocessing layer: the same arithmetic
    older = FilmPreprocessing.of(steps)(images.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(older), cached.astype(np.float32))


def test_preprocessed_splits_are_cached_per_preprocessing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_dataset(tmp_path / "d", {"train": 10, "test": 3}, real=False)
    data = prepare_data(discover(root), DataConfig(image_size=32), seed=1)
    monkeypatch.setattr(dataset, "_PREPROCESSED", {})
    steps = FilmSteps(crop=True, equalize="global")
    pre = data.preprocessed(steps)
    assert pre.input_shape == (24, 24, 1) and pre.steps_key == "crop-eq_global"
    np.testing.assert_array_equal(pre.val.images, preprocess_films(data.val.images, steps))
    assert pre.val.files == data.val.files and (pre.test.labels == data.test.labels).all()
    assert data.preprocessed(FilmSteps()) is data
    entry = cache.entry_path(data.digest, 32, 1, variant="crop-eq_global-p1")
    assert entry.is_file()  # on disk, under a key that names the steps
    monkeypatch.setattr(dataset, "_PREPROCESSED", {})

    def refuse(*args: object) -> None:
        raise AssertionError("a cache hit must not preprocess again")

    monkeypatch.setattr(preprocess, "preprocess_films", refuse)
    again = data.preprocessed(steps)
    np.testing.assert_array_equal(again.train.images, pre.train.images)
    monkeypatch.undo()
    other = data.preprocessed(FilmSteps(equalize="global"))
    assert other.input_shape == (32, 32, 1) and other.steps_key == "eq_global"
