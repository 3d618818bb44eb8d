"""The pyfunc flavour of a registered model: a DataFrame column of image bytes in (MLflow's scoring protocol
carries a binary column as base64), per image the probability of COVID-19, the call at the model's threshold
(or a site's: the request's `params.site`, or the server's default site), the threshold and the model version
out. An image the input guard (model.input_guard) finds unlike a chest film gets no probability and no call,
and the reason in `error`. The probability is calibrated: the Platt scaling fitted on validation is part of
the network's output layer (model.calibration).

Images are decoded with the code training used (`data.images.decode_image`: EXIF orientation, 16-bit, alpha,
palette, resize); the Keras model inside carries the experiment's preprocessing as its first layer. An image
that cannot be used gets its reason in the `error` column and no probability, and the others their answers;
a request none of whose images can be used is refused as a whole (HTTP 400 from the server).
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from xraycnn.data.discovery import CLASS_NAMES

IMAGE_COLUMN = "image"
KERAS_ARTIFACT = "keras_model"  # the key of the .keras file among the pyfunc model's artifacts
OUTPUT_COLUMNS = ("probability_covid19", "call", "threshold", "model_version", "error")


SITE_PARAM = "site"  # a request's params: {"site": NAME} calls at that site's threshold

# What one request may make the server decode, in pixels (bytes say little: a 264 KB PNG can hold 64 Mpx).
MAX_FILM_PIXELS = 6000 * 6000  # per image: chest films are exported at up to ~4,300 x 3,500
MAX_REQUEST_PIXELS = 200_000_000  # all images of one request together
# Images decoded at once in this process, whatever the number of requests in flight: a decode's memory is
# many times its file's size.
_DECODES = threading.BoundedSemaphore(2)


def model_config(threshold: float, threshold_rule: str) -> dict[str, Any]:
    """What the pyfunc flavour is logged with. Filled in when loaded to serve (`xraycnn serve` does it from the
    registry): `model_version`, `model_name`, `sites` (name -> threshold, `xraycnn calibrate`) and `site` (the
    default site of requests that name none)."""
    return {
        "threshold": float(threshold),
        "threshold_rule": threshold_rule,
        "model_version": "",
        "model_name": "",
        "sites": {},
        "site": "",
    }


def serving_signature() -> ModelSignature:
    """Image bytes in; per image its probability, call, threshold, model version and error (if any) out."""
    return ModelSignature(
        params=ParamSchema([ParamSpec(SITE_PARAM, DataType.string, None)]),
        inputs=Schema([ColSpec(DataType.binary, IMAGE_COLUMN)]),
        outputs=Schema(
            [
                ColSpec(DataType.double, "probability_covid19", required=False),
                ColSpec(DataType.string, "call", required=False),
                ColSpec(DataType.double, "threshold"),
                ColSpec(DataType.string, "model_version", required=False),
                ColSpec(DataType.string, "error", required=False),
            ]
        ),
    )


class ImageModel:
    """The Keras network behind a column of image bytes, with its threshold, sites and version from the
    model config (`model_config` above, which whoever loads or serves the model may override: `xraycnn
    serve` sets the version it resolved). What `mlflow.pyfunc.load_model` builds (`serving.loader`)."""

    def __init__(self, network: Any, config: dict[str, Any] | None = None, guard: Any = None) -> None:
        from xraycnn.data.images import input_shape_of
        from xraycnn.model.input_guard import GuardedNetwork

        self._network = network
        self._screen = GuardedNetwork(network, guard)  # guard: None for a version registered without one
        self._shape: tuple[int, int, int] = input_shape_of(network)
        config = config or {}
        self.threshold = float(config.get("threshold", 0.5))
        self.model_version = str(config.get("model_version") or "")
        self.sites: dict[str, float] = {str(k): float(v) for k, v in (config.get("sites") or {}).items()}
        self.site = str(config.get("site") or "")
        self.max_film_pixels = int(config.get("max_film_pixels") or MAX_FILM_PIXELS)
        self.max_request_pixels = int(config.get("max_request_pixels") or MAX_REQUEST_PIXELS)
        if self.site and self.site not in self.sites:
            raise MlflowException(f"default site {self.site!r} has no threshold; {self._known_sites()}")

    @classmethod
    def load(cls, keras_file: str, config: dict[str, Any] | None = None) -> ImageModel:
        """The network from `keras_file`, loaded in Keras safe mode, and the input guard saved beside it."""
        import keras

        import xraycnn.model  # noqa: F401  the layers of versions registered before they were stock Keras
        from xraycnn.model.input_guard import load_guard_beside

        return cls(keras.saving.load_model(keras_file, safe_mode=True), config, load_guard_beside(keras_file))

    # `model_input` unannotated on purpose: MLflow would derive a signature from its annotation.
    def predict(self, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.answer(_image_column(model_input), self.threshold_for((params or {}).get(SITE_PARAM)))

    def _known_sites(self) -> str:
        return f"sites with a threshold: {', '.join(sorted(self.sites)) or 'none'} (set one with `xraycnn calibrate`)"

    def threshold_for(self, site: str | None) -> float:
        """The threshold of `site`, else of the default site, else the model's own."""
        site = site or self.site
        if not site:
            return self.threshold
        if site not in self.sites:
            raise MlflowException(f"unknown site {str(site)[:64]!r}: {self._known_sites()}", INVALID_PARAMETER_VALUE)
        return self.sites[site]

    def _within_pixel_budget(self, images: list[Any], errors: list[str | None]) -> list[tuple[int, bytes]]:
        """(index, bytes) of the images to decode; an image over the per-image pixel limit gets its reason in
        `errors`, and a request whose images hold more pixels than the request limit is refused whole."""
        from xraycnn.data.images import UnreadableImageError, pixel_count

        kept: list[tuple[int, bytes]] = []
        total = 0
        for index, image in enumerate(images):
            try:
                data = _as_bytes(image)
            except UnreadableImageError as exc:
                errors[index] = f"image {index}: {exc}"
                continue
            pixels = pixel_count(data) or 0
            if pixels > self.max_film_pixels:
                errors[index] = (
                    f"image {index}: {pixels:,} pixels is over this server's limit of {self.max_film_pixels:,} per "
                    "image (resize it first)"
                )
                continue
            total += pixels
            kept.append((index, data))
        if total > self.max_request_pixels:
            raise MlflowException(
                f"the request's images hold {total:,} pixels; this server decodes at most {self.max_request_pixels:,} "
                "per request: send fewer images per request",
                INVALID_PARAMETER_VALUE,
            )
        return kept

    def answer(self, images: list[Any], threshold: float | None = None) -> pd.DataFrame:
        """One row per image, in order, called at `threshold` (default: the model's own); see the module's
        docstring."""
        threshold = self.threshold if threshold is None else threshold
        from xraycnn.data.images import UnreadableImageError, decode_image

        height, _, channels = self._shape
        decoded: list[np.ndarray] = []
        good: list[int] = []
        errors: list[str | None] = [None] * len(images)
        if not images:
            raise MlflowException(f"the request holds no image; {ACCEPTED_FORMAT}", INVALID_PARAMETER_VALUE)
        for index, data in self._within_pixel_budget(images, errors):
            try:
                with _DECODES:
                    decoded.append(decode_image(data, height, channels))
                good.append(index)
            except UnreadableImageError as exc:
                errors[index] = f"image {index}: {exc}"
        probabilities = np.full(len(images), np.nan)
        if good:
            scored, scores = self._screen(np.stack(decoded).astype(np.float32))
            for k, index in enumerate(good):
                if scores is not None and self._screen.guard.refused(scores[k]):
                    errors[index] = f"image {index}: {self._screen.guard.reason(float(scores[k]))}"
                else:
                    probabilities[index] = scored[k]
        if np.isnan(probabilities).all():
            raise MlflowException("; ".join(e for e in errors if e), INVALID_PARAMETER_VALUE)
        calls = [None if np.isnan(p) else CLASS_NAMES[int(p >= threshold)] for p in probabilities]
        column = {
            "probability_covid19": [None if np.isnan(p) else float(p) for p in probabilities],
            "call": calls,
            "threshold": [threshold] * len(images),
            "model_version": [self.model_version or None] * len(images),
            "error": errors,
        }
        # object columns: a failed image's fields are JSON null, not NaN (pandas would make floats or str of them)
        return pd.DataFrame({name: pd.Series(column[name], dtype=object) for name in OUTPUT_COLUMNS})


class ImageServingModel(PythonModel):
    """How versions registered before `serving.loader` were logged ("models from code": their artifact holds
    `pyfunc_entry.py`, which builds this). Kept so they load; new versions carry no code."""

    _skip_type_hint_validation = True  # the signature was given when logged; no second one from annotations

    def __init__(self) -> None:
        self.model: ImageModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = ImageModel.load(context.artifacts[KERAS_ARTIFACT], context.model_config)

    # `model_input` unannotated on purpose: MLflow would derive a signature from its annotation.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        assert self.model is not None, "load_context first"
        return self.model.predict(model_input, params)


def _image_column(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            columns = [str(c)[:40] for c in list(model_input.columns)[:5]]
            raise MlflowException(
                f"expected a column {IMAGE_COLUMN!r} of image bytes, got columns {columns}; {ACCEPTED_FORMAT}",
                INVALID_PARAMETER_VALUE,
            )
        return model_input[IMAGE_COLUMN].tolist()
    if isinstance(model_input, dict) and IMAGE_COLUMN in model_input:
        return list(model_input[IMAGE_COLUMN])
    raise MlflowException(
        f"expected a DataFrame with a column {IMAGE_COLUMN!r} of image bytes, got {type(model_input).__name__}; "
        f"{ACCEPTED_FORMAT}",
        INVALID_PARAMETER_VALUE,
    )


ACCEPTED_FORMAT = (
    "send the image files' bytes base64-encoded in a column 'image': "
    '{"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}} or '
    '{"dataframe_records": [{"image": "<base64>"}, ...]} (also "instances" / "inputs" with the same records)'
)


def _as_bytes(image: Any) -> bytes:
    """An image's bytes: as given, or decoded from base64 (MLflow hands a binary column's base64 over as text,
    or as the text's bytes, in `instances`, `inputs` and CSV bodies; an image file is never all base64)."""
    from xraycnn.data.images import UnreadableImageError

    if isinstance(image, str):
        try:
            return base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise UnreadableImageError(f"text that is not base64: {ACCEPTED_FORMAT}") from None
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        try:
            return base64.b64decode(data, validate=True) if data else data
        except (binascii.Error, ValueError):
            return data
    raise UnreadableImageError(f"expected image bytes, got {type(image).__name__}: {ACCEPTED_FORMAT}")
