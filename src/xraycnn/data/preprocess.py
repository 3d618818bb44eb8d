"""Per-image preprocessing of a film: crop to a box, histogram equalisation (global or CLAHE), masking outside
the box. One implementation, `apply_steps`, in Keras operations:

- training runs it once over the decoded films (the outputs are cached with them, `data.dataset`);
- the registered model carries the same operations as its first layer (a sub-model of stock Keras
  operations, `film_preprocessing_model`), so `predict`, `evaluate`, `prepare_images` + a Keras or pyfunc
  load and the assessment all apply exactly these steps to a film, and `mlflow.keras.load_model` needs
  nothing of xraycnn.

Every step maps whole-number pixel values to whole numbers (crop and mask keep them, equalisation looks them
up in a table), so the cached uint8 outputs equal what the layer computes inside the model, bit for bit.
Equalisation follows OpenCV's `equalizeHist` and `createCLAHE` (the tests hold the two side by side); it is
written here in Keras operations because a registered model must carry it. Standardisation is not a
step of this layer: it is the network's own first layer (`model.hypermodel`), being a float rescaling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from xraycnn.regions import LUNG_BOX, Box, box_mask, box_pixels

BINS = 256
PREPROCESS_VERSION = 1  # part of every cache key: bump when a step changes what it returns


@dataclass(frozen=True)
class FilmSteps:
    """The steps of one preprocessing: what an experiment (or one trial of it) chose."""

    crop: bool = False
    equalize: str = "none"  # "none", "global" or "clahe"
    mask: bool = False
    box: Box = LUNG_BOX
    clahe_clip_limit: float = 2.0
    clahe_tiles: int = 8

    @property
    def active(self) -> bool:
        """False when the layer would hand the film on unchanged (the model then carries no layer)."""
        return self.crop or self.mask or self.equalize != "none"

    def key(self) -> str:
        """A short name for cache keys and tags, e.g. `crop-eq_clahe2x8` (`none` for no step)."""
        parts = []
        if self.crop:
            parts.append("crop")
        if self.equalize == "global":
            parts.append("eq_global")
        elif self.equalize == "clahe":
            parts.append(f"eq_clahe{self.clahe_clip_limit:g}x{self.clahe_tiles}")
        if self.mask and not self.crop:  # after a crop to the same box there is nothing left to mask
            parts.append("mask")
        if (self.crop or self.mask) and tuple(self.box) != LUNG_BOX:
            parts.append("box" + "_".join(f"{v:g}" for v in self.box))
        return "-".join(parts) or "none"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.crop:
            return height, width
        r0, r1, c0, c1 = box_pixels(self.box, height, width)
        return r1 - r0, c1 - c0

    def film_region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) of the film that the output covers: where a heatmap of the output lies."""
        return box_pixels(self.box, height, width) if self.crop else (0, height, 0, width)


def _round_to_bins(values: Any) -> Any:
    return ops.cast(ops.clip(ops.round(values), 0, BINS - 1), "int32")


def _planes(images: Any) -> tuple[Any, Any]:
    """(batch, height, width, channels) -> (batch * channels, height, width) int32 values, and the undo."""
    height, width, channels = (int(d) for d in images.shape[1:])
    # transposed as floats: oneDNN's int32 transpose needs AVX-512 and says so on stderr where it falls back
    planes = _round_to_bins(ops.reshape(ops.transpose(images, (0, 3, 1, 2)), (-1, height, width)))

    def back(planes_out: Any) -> Any:
        return ops.transpose(ops.reshape(planes_out, (-1, channels, height, width)), (0, 2, 3, 1))

    return planes, back


def equalize_global(images: Any) -> Any:
    """Per image and channel, as OpenCV's equalizeHist: value v -> round((cdf(v) - cdf(v0)) * 255 / (n - cdf(v0)))
    with v0 the darkest value present; a one-valued image is left as it is."""
    planes, back = _planes(images)
    height, width = int(planes.shape[1]), int(planes.shape[2])
    count = height * width
    flat = ops.reshape(planes, (-1, count))
    hist = ops.bincount(flat, minlength=BINS)
    cdf = ops.cumsum(hist, axis=-1)
    first = ops.min(ops.where(ops.greater(cdf, 0), cdf, count), axis=-1, keepdims=True)  # hist of the darkest
    rest = count - first
    scale = ops.divide(np.float32(BINS - 1), ops.cast(ops.maximum(rest, 1), "float32"))
    lut = ops.clip(ops.round(ops.cast(cdf - first, "float32") * scale), 0, BINS - 1)
    lut = ops.where(ops.greater(rest, 0), lut, np.arange(BINS, dtype=np.float32)[None, :])
    out = ops.take_along_axis(lut, flat, axis=-1)
    return back(ops.reshape(out, (-1, height, width)))


def _clip_histograms(hist: Any, limit: int) -> Any:
    """OpenCV's CLAHE clipping: counts above `limit` are cut, the excess spread evenly over all bins, and the
    remainder one by one over every `256 // remainder`-th bin from the first."""
    excess = ops.sum(ops.maximum(hist - limit, 0), axis=-1, keepdims=True)
    hist = ops.minimum(hist, limit) + ops.floor_divide(excess, BINS)
    residual = ops.mod(excess, BINS)
    step = ops.maximum(ops.floor_divide(BINS, ops.maximum(residual, 1)), 1)
    bins = np.arange(BINS, dtype=np.int32)[None, :]
    extra = ops.logical_and(ops.equal(ops.mod(bins, step), 0), ops.less(ops.floor_divide(bins, step), residual))
    return hist + ops.cast(extra, "int32")


def _axis_weights(size: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel along one axis: the two neighbouring tiles and the weight of the second (OpenCV's float32)."""
    position = np.arange(size, dtype=np.float32) * np.float32(1.0 / tile) - np.float32(0.5)
    first = np.floor(position).astype(np.int32)
    weight = (position - first).astype(np.float32)
    return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), weight


def equalize_clahe(images: Any, clip_limit: float, tiles: int) -> Any:
    """Contrast-limited adaptive histogram equalisation, as OpenCV's createCLAHE(clip_limit, (tiles, tiles)):
    a clipped equalisation table per tile (the image extended by reflection to whole tiles), blended
    bilinearly between the four nearest tiles at every pixel."""
    planes, back = _planes(images)
    height, width = int(images.shape[1]), int(images.shape[2])
    pad_h, pad_w = 0, 0
    if height % tiles or width % tiles:  # OpenCV then extends both sides, a divisible one by a whole tile
        pad_h, pad_w = tiles - height % tiles, tiles - width % tiles
    # OpenCV's BORDER_REFLECT_101; tiled as floats (an int32 transpose falls back from oneDNN, noisily)
    extended = ops.pad(ops.cast(planes, "float32"), ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    tile_h, tile_w = (height + pad_h) // tiles, (width + pad_w) // tiles
    area = tile_h * tile_w
    by_tile = ops.reshape(extended, (-1, tiles, tile_h, tiles, tile_w))
    by_tile = ops.cast(ops.reshape(ops.transpose(by_tile, (0, 1, 3, 2, 4)), (-1, area)), "int32")
    hist = _clip_histograms(ops.bincount(by_tile, minlength=BINS), max(int(clip_limit * area / BINS), 1))
    cdf = ops.cast(ops.cumsum(hist, axis=-1), "float32")
    lut = ops.clip(ops.round(cdf * np.float32((BINS - 1) / area)), 0, 255)
    lut = ops.reshape(lut, (-1, tiles * tiles * BINS))  # per plane: tile (row, col), then value

    row1, row2, row_w = _axis_weights(height, tile_h, tiles)
    col1, col2, col_w = _axis_weights(width, tile_w, tiles)
    flat = ops.reshape(planes, (-1, height * width))

    def looked_up(rows: np.ndarray, cols: np.ndarray) -> Any:
        offset = ((rows[:, None] * tiles + cols[None, :]) * BINS).reshape(-1).astype(np.int32)
        return ops.take_along_axis(lut, flat + offset[None, :], axis=-1)

    xa = np.broadcast_to(col_w[None, :], (height, width)).reshape(-1)
    ya = np.broadcast_to(row_w[:, None], (height, width)).reshape(-1)
    top = looked_up(row1, col1) * (1 - xa) + looked_up(row1, col2) * xa
    bottom = looked_up(row2, col1) * (1 - xa) + looked_up(row2, col2) * xa
    out = ops.clip(ops.round(top * (1 - ya) + bottom * ya), 0, 255)
    return back(ops.reshape(out, (-1, height, width)))


def apply_steps(images: Any, steps: FilmSteps) -> Any:
    """float32 (batch, height, width, channels) films, values 0-255 -> the network's input, values 0-255.

    Keras operations only (`keras.ops` and a stock `Cropping2D`): on tensors they compute, on a `keras.Input`
    they build the graph a registered model carries (`film_preprocessing_model`), loadable without xraycnn.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    if steps.crop:
        r0, r1, c0, c1 = box_pixels(steps.box, height, width)
        images = keras.layers.Cropping2D(((r0, height - r1), (c0, width - c1)), dtype="float32", name="crop")(images)
    if steps.equalize == "global":
        images = equalize_global(images)
    elif steps.equalize == "clahe":
        images = equalize_clahe(images, steps.clahe_clip_limit, steps.clahe_tiles)
    if steps.mask and not steps.crop:
        images = images * box_mask(steps.box, height, width)[None, :, :, None].astype(np.float32)
    return images


PREPROCESSING_PREFIX = "film_preprocessing"  # the sub-model's name: this, "_", then `FilmSteps.key()`


def film_preprocessing_model(steps: FilmSteps, height: int, width: int, channels: int) -> keras.Model:
    """The steps as a Keras model of stock operations, films in: the first layer of a registered model.
    Unlike the `FilmPreprocessing` layer of earlier versions, it loads in any Keras without xraycnn."""
    film = keras.Input(shape=(height, width, channels), name="film")
    return keras.Model(
        film, apply_steps(ops.cast(film, "float32"), steps), name=f"{PREPROCESSING_PREFIX}_{steps.key()}"
    )


@keras.saving.register_keras_serializable(package="xraycnn")
class FilmPreprocessing(keras.layers.Layer):
    """The preprocessing layer of models registered before `film_preprocessing_model`: kept so they load
    (after `import xraycnn.model`), and to run the steps on decoded films (`preprocess_films`)."""

    def __init__(
        self,
        crop: bool = False,
        equalize: str = "none",
        mask: bool = False,
        box: Box = LUNG_BOX,
        clahe_clip_limit: float = 2.0,
        clahe_tiles: int = 8,
        **kwargs: Any,
    ) -> None:
        kwargs["dtype"] = "float32"  # histograms and look-up tables in bfloat16 would lose whole grey levels
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if equalize not in ("none", "global", "clahe"):
            raise ValueError(f"equalize must be 'none', 'global' or 'clahe', got {equalize!r}")
        self.steps = FilmSteps(bool(crop), equalize, bool(mask), tuple(box), float(clahe_clip_limit), int(clahe_tiles))

    @classmethod
    def of(cls, steps: FilmSteps, **kwargs: Any) -> FilmPreprocessing:
        return cls(**asdict(steps), **kwargs)

    def call(self, inputs: Any) -> Any:
        return apply_steps(ops.cast(inputs, "float32"), self.steps)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        height, width = self.steps.output_size(int(input_shape[1]), int(input_shape[2]))
        return (input_shape[0], height, width, input_shape[3])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.steps).items()})
        return config


_COMPILED: dict[tuple[FilmSteps, tuple[int, ...]], Any] = {}  # one traced model per preprocessing and film shape


def preprocess_films(films: np.ndarray, steps: FilmSteps, batch_size: int = 512) -> np.ndarray:
    """uint8 films -> uint8 network inputs, by the same operations a registered model carries."""
    if not steps.active:
        return films
    key = (steps, tuple(films.shape[1:]))
    if key not in _COMPILED:
        _COMPILED[key] = tf.function(film_preprocessing_model(steps, *films.shape[1:]), reduce_retracing=True)
    run = _COMPILED[key]
    height, width = steps.output_size(films.shape[1], films.shape[2])
    out = np.empty((len(films), height, width, films.shape[3]), dtype=np.uint8)
    for start in range(0, len(films), batch_size):
        chunk = tf.convert_to_tensor(films[start : start + batch_size], dtype=tf.float32)
        out[start : start + batch_size] = run(chunk).numpy().astype(np.uint8)
    return out


def _preprocessing_layer(model: keras.Model) -> keras.layers.Layer | None:
    for layer in model.layers:
        if isinstance(layer, FilmPreprocessing) or layer.name.startswith(PREPROCESSING_PREFIX + "_"):
            return layer
    return None


def preprocessing_key_of(model: keras.Model) -> str:
    """`FilmSteps.key()` of the steps a model applies to its films (`none` when it takes the network's input)."""
    layer = _preprocessing_layer(model)
    if layer is None:
        return "none"
    if isinstance(layer, FilmPreprocessing):
        return layer.steps.key()
    return layer.name[len(PREPROCESSING_PREFIX) + 1 :]


def film_region_of(model: keras.Model, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of a `height` x `width` film that the network behind the model's
    preprocessing sees: where a heatmap of the network's input lies on the film."""
    layer = _preprocessing_layer(model)
    if isinstance(layer, FilmPreprocessing):
        return layer.steps.film_region(height, width)
    crops = [inner for inner in getattr(layer, "layers", []) if isinstance(inner, keras.layers.Cropping2D)]
    if not crops:
        return 0, height, 0, width
    (top, bottom), (left, right) = crops[0].cropping
    return top, height - bottom, left, width - right
