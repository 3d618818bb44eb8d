from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tests import image_zoo
from tests.image_zoo import gradient
from xraycnn.data.images import (
    UnreadableImageError,
    decode_files,
    decode_image,
    input_shape_of,
    prepare_images,
)


def test_grayscale_and_rgb_shapes(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(gradient(), "L").save(path)
    gray, rgb = decode_image(path, 32, 1), decode_image(path, 32, 3)
    assert gray.shape == (32, 32, 1) and gray.dtype == np.uint8
    assert rgb.shape == (32, 32, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert gray[0, 0, 0] < 10 and gray[0, -1, 0] > 245  # resized, not cropped


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(gradient().astype(np.uint16) * 200).save(path)  # mode I;16
    x = decode_image(path, 64, 1)[..., 0]
    assert x.min() == 0 and x.max() == 255 and len(np.unique(x)) > 60  # a plain convert("L") clips to 255


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :16, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(path)
    x = decode_image(path, 32, 1)[..., 0]
    assert x[:, :12].min() >= 190 and x[:, 20:].max() == 0


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    array = np.zeros((32, 64), np.uint8)
    array[:, :32] = 255  # bright left half, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(array, "L").save(path, exif=exif, quality=95)
    x = decode_image(path, 32, 1)[..., 0]
    assert x[:8].mean() > 200 and x[-8:].mean() < 50  # the bright half is now on top


@pytest.mark.parametrize("name", sorted(image_zoo.UNUSUAL))
def test_unusual_files_decode(tmp_path: Path, name: str) -> None:
    (path,) = image_zoo.write(tmp_path, {name: image_zoo.UNUSUAL[name]})
    assert decode_image(path, 32, 1).shape == (32, 32, 1)
    assert decode_image(path, 32, 3).shape == (32, 32, 3)


@pytest.mark.parametrize("name", sorted(image_zoo.UNUSABLE))
def test_unusable_files_say_why(tmp_path: Path, name: str) -> None:
    (path,) = image_zoo.write(tmp_path, {name: image_zoo.UNUSABLE[name]})
    with pytest.raises(UnreadableImageError, match=re.escape(image_zoo.UNUSABLE[name][1])):
        decode_image(path, 32, 1)


def test_decode_files_keeps_the_good_and_lists_the_bad(tmp_path: Path) -> None:
    good = [tmp_path / f"{i}.png" for i in range(3)]
    for i, p in enumerate(good):
        Image.fromarray(gradient() // (i + 1), "L").save(p)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    images, kept, skipped = decode_files([good[0], bad, good[1], good[2]], 16, 1, workers=2)
    assert kept == [0, 2, 3] and images.shape == (3, 16, 16, 1)
    np.testing.assert_array_equal(images[1], decode_image(good[1], 16, 1))
    assert [(s.path, s.reason) for s in skipped] == [(str(bad), "empty file (0 bytes)")]


def test_prepare_images_for_a_model(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(gradient(), "L").save(path)
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    assert input_shape_of(model) == (24, 24, 3)
    x = prepare_images([path, path], model)
    assert x.shape == (2, 24, 24, 3) and x.dtype == np.float32 and x.max() > 200
    np.testing.assert_array_equal(prepare_images([path], (24, 24, 3)), x[:1])
    with pytest.raises(UnreadableImageError, match=r"missing\.png: file not found"):
        prepare_images([tmp_path / "missing.png"], model)
