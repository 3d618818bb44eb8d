"""The pyfunc flavour's answers, without a server: one row per image, failures named by index."""

from __future__ import annotations

import base64
import io

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from xraycnn.serving.model import OUTPUT_COLUMNS, ImageModel, model_config


def _png(size: tuple[int, int], value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def served(tmp_path) -> ImageModel:
    """A network whose output is the mean pixel / 255 (so each answer is known), loaded as MLflow would."""
    network = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    network.layers[-1].set_weights([np.array([[1 / 255]]), np.zeros(1)])
    path = tmp_path / "model.keras"
    network.save(path)
    return ImageModel.load(str(path), model_config(0.5, "fixed") | {"model_version": "7"})


def test_each_image_gets_its_probability_call_threshold_and_version(served: ImageModel) -> None:
    answers = served.predict(pd.DataFrame({"image": [_png((32, 32), 255), _png((20, 20), 51)]}))
    assert list(answers.columns) == list(OUTPUT_COLUMNS)
    assert answers["probability_covid19"].tolist() == pytest.approx([1.0, 0.2])
    assert answers["call"].tolist() == ["COVID19", "NORMAL"]
    assert answers["threshold"].tolist() == [0.5, 0.5]
    assert answers["model_version"].tolist() == ["7", "7"]
    assert answers["error"].tolist() == [None, None]


def test_a_bad_image_among_good_ones_gets_its_reason_and_nulls(served: ImageModel) -> None:
    answers = served.predict(pd.DataFrame({"image": [_png((32, 32), 255), b"", _png((4, 4))]}))
    assert answers["probability_covid19"].tolist()[0] == pytest.approx(1.0)
    assert answers["probability_covid19"].tolist()[1:] == [None, None]
    assert answers["call"].tolist() == ["COVID19", None, None]
    assert answers["error"].tolist()[1] == "image 1: empty file (0 bytes)"
    assert answers["error"].tolist()[2].startswith("image 2: 4x4 is too small")


def test_a_request_with_no_usable_image_is_refused_naming_each(served: ImageModel) -> None:
    with pytest.raises(MlflowException, match=r"image 0: not an image file PIL can read; image 1: empty") as err:
        served.predict(pd.DataFrame({"image": [b"text", b""]}))
    assert err.value.get_http_status_code() == 400


def test_a_request_without_the_image_column_is_refused(served: ImageModel) -> None:
    with pytest.raises(MlflowException, match="expected a column 'image'") as err:
        served.predict(pd.DataFrame({"picture": [_png((32, 32))]}))
    assert err.value.get_http_status_code() == 400


def test_base64_text_is_an_image_and_other_text_says_the_format(served: ImageModel) -> None:
    png = _png((32, 32), 255)
    encoded = base64.b64encode(png)
    as_text = served.predict(pd.DataFrame({"image": [encoded.decode(), encoded]}))
    assert as_text["probability_covid19"].tolist() == pytest.approx([1.0, 1.0])
    mixed = served.predict(pd.DataFrame({"image": [png, "not base64!"]}))
    assert mixed["error"].tolist()[1].startswith("image 1: text that is not base64: send the image files' bytes")


def test_an_empty_request_is_refused_whatever_its_form(served: ImageModel) -> None:
    for empty in (pd.DataFrame({"image": []}), pd.DataFrame()):
        with pytest.raises(MlflowException, match=r"no image|expected a column 'image'") as err:
            served.predict(empty)
        assert err.value.get_http_status_code() == 400 and "dataframe_split" in str(err.value)


def _bilevel_png(size: tuple[int, int]) -> bytes:
    """A large image in a small file (1 bit per pixel, all black: a few KB for tens of megapixels)."""
    buffer = io.BytesIO()
    Image.new("1", size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(served: ImageModel) -> None:
    huge = _bilevel_png((8000, 8000))
    assert len(huge) < 100_000  # a small file: the bytes limit alone would let it in
    answers = served.predict(pd.DataFrame({"image": [huge, _png((32, 32), 255)]}))
    assert answers["error"].tolist()[0].startswith("image 0: 64,000,000 pixels is over this server's limit")
    assert answers["probability_covid19"].tolist()[1] == pytest.approx(1.0)


def test_a_request_over_the_pixel_budget_is_refused_whole(tmp_path) -> None:
    network = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    network.save(tmp_path / "model.keras")
    config = model_config(0.5, "fixed") | {"max_request_pixels": 10_000}
    small = ImageModel.load(str(tmp_path / "model.keras"), config)
    assert len(small.predict(pd.DataFrame({"image": [_png((80, 80))]}))) == 1  # 6,400 pixels: within
    with pytest.raises(MlflowException, match="hold 12,800 pixels; this server decodes at most 10,000") as err:
        small.predict(pd.DataFrame({"image": [_png((80, 80)), _png((80, 80))]}))
    assert err.value.get_http_status_code() == 400
