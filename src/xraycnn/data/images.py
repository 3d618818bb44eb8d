"""Turn image files into the arrays the networks take, the same way for training, evaluation and serving.

One path from file to array: EXIF orientation, 16-bit data min-max scaled to 8 bit, alpha composited on
black, grayscale or RGB, the whole image resized to a square (no crop, like the dataset's own conversion).
Files that cannot be used raise `UnreadableImageError` with the reason; `decode_files` collects them
instead of failing, so one bad file never stops a search.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xraycnn.runtime.threads import usable_cores

MIN_SIDE = 16  # smaller than this is not an X-ray (icons, 1x1 tracking pixels)
MAX_PIXELS = 8192 * 8192  # decompression-bomb guard: 64 Mpx is far beyond any radiograph export

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class UnreadableImageError(ValueError):
    """A file that is not a usable image; the message says why."""


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float images min-max scaled to 8 bit (a plain convert('L') would clip them to white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image


def _flatten_alpha(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


def pixel_count(data: bytes) -> int | None:
    """Width x height from an image's header, without decoding it; None when the header cannot be read
    (`decode_image` then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return width * height


def decode_image(source: str | Path | bytes, size: int, channels: int) -> np.ndarray:
    """uint8 (size, size, channels) array of one file (a path, or its bytes as a server receives them), or
    `UnreadableImageError`."""
    in_memory = isinstance(source, bytes | bytearray | memoryview)
    if in_memory and not len(source):
        raise UnreadableImageError("empty file (0 bytes)")
    opener: Any = io.BytesIO(bytes(source)) if in_memory else Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opener) as opened:
                width, height = opened.size
                if width * height > MAX_PIXELS:
                    raise UnreadableImageError(
                        f"{width}x{height} pixels is over the {MAX_PIXELS:,}-pixel decompression-bomb limit"
                    )
                if min(width, height) < MIN_SIDE:
                    raise UnreadableImageError(f"{width}x{height} is too small (at least {MIN_SIDE} px a side)")
                # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale straight from the DCT: several times
                # faster for large files, and still at least `size` pixels a side before the resize.
                opened.draft("L" if channels == 1 else "RGB", (size, size))
                image = ImageOps.exif_transpose(opened)
                image.load()
    except UnreadableImageError:
        raise
    except FileNotFoundError as exc:
        raise UnreadableImageError("file not found") from exc
    except UnidentifiedImageError as exc:
        empty = not in_memory and opener.stat().st_size == 0
        reason = "empty file (0 bytes)" if empty else "not an image file PIL can read"
        raise UnreadableImageError(reason) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError(f"over the decompression-bomb limit: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise UnreadableImageError(f"corrupt or truncated image: {exc}") from exc

    image = _flatten_alpha(_to_8bit(image))
    image = image.convert("L" if channels == 1 else "RGB")  # CMYK, P, LA ... land here too
    return _square(image, size, channels)


def _square(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """The whole image resized to `size` x `size` (no crop, like the dataset's own conversion)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def resize_film(film: np.ndarray, size: int) -> np.ndarray:
    """A uint8 (height, width, channels) film resized to `size` pixels a side as `decode_image` resizes a file."""
    channels = film.shape[-1]
    image = Image.fromarray(film[..., 0] if channels == 1 else film)
    return _square(image, size, channels)


def default_workers() -> int:
    # PIL releases the GIL while decoding and resizing: threads scale with the cores this process may use.
    return min(8, usable_cores())


def decode_files(
    files: Sequence[str | Path], size: int, channels: int, workers: int | None = None
) -> tuple[np.ndarray, list[int], list[SkippedFile]]:
    """Decode `files` in parallel: (uint8 array of the readable ones, their indices in `files`, skipped)."""
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)

    def one(index: int) -> SkippedFile | None:
        try:
            out[index] = decode_image(files[index], size, channels)
            return None
        except UnreadableImageError as exc:
            return SkippedFile(str(files[index]), str(exc))

    with ThreadPoolExecutor(workers or default_workers()) as pool:
        results = list(pool.map(one, range(len(files))))
    kept = [i for i, r in enumerate(results) if r is None]
    skipped = [r for r in results if r is not None]
    return (out if len(kept) == len(files) else out[kept]), kept, skipped


def input_shape_of(model: Any) -> tuple[int, int, int]:
    """(height, width, channels) a Keras model takes; of an MLflow pyfunc model, the shape its metadata
    records (this project's models) or its tensor signature gives."""
    if getattr(model, "inputs", None):
        shape = tuple(model.inputs[0].shape[1:])
    elif hasattr(model, "metadata"):  # mlflow.pyfunc.PyFuncModel
        recorded = (model.metadata.metadata or {}).get("input_shape")
        schema = model.metadata.get_input_schema()
        if recorded is not None:
            shape = tuple(recorded)
        elif schema is not None and schema.is_tensor_spec():
            shape = tuple(schema.inputs[0].shape[1:])
        else:
            raise ValueError("the MLflow model records no input shape and has no tensor signature to read it from")
    else:
        shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"expected a model over fixed-size images, its input shape is {shape}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def prepare_images(paths: Sequence[str | Path], model_or_shape: Any) -> np.ndarray:
    """float32 (n, size, size, channels) arrays, values 0-255, ready for a model from this project.

    `model_or_shape` is the model itself or its input shape (height, width, channels). Raises
    `UnreadableImageError` naming the first file that cannot be used.
    """
    shape = tuple(model_or_shape) if isinstance(model_or_shape, tuple | list) else input_shape_of(model_or_shape)
    height, width, channels = (int(d) for d in shape)
    if height != width or channels not in (1, 3):
        raise ValueError(f"expected a square 1- or 3-channel input shape, got {shape}")
    arrays = []
    for path in paths:
        try:
            arrays.append(decode_image(path, height, channels))
        except UnreadableImageError as exc:
            raise UnreadableImageError(f"{path}: {exc}") from exc
    return np.stack(arrays).astype(np.float32) if arrays else np.empty((0, *shape), np.float32)
