"""Per-image preprocessing of a film: crop to a box, histogram equalisation (global or CLAHE), masking outside
the box. One implementation, in TensorFlow ops, inside one Keras layer:

- training runs the layer once over the decoded films (the outputs are cached with them, `data.dataset`);
- the registered model carries the same layer as its first layer, so `predict`, `evaluate`,
  `prepare_images` + a Keras or pyfunc load and the assessment all apply exactly these steps to a film.

Every step maps whole-number pixel values to whole numbers (crop and mask keep them, equalisation looks them
up in a table), so the cached uint8 outputs equal what the layer computes inside the model, bit for bit.
Equalisation follows OpenCV's `equalizeHist` and `createCLAHE` (the tests hold the two side by side); it is
written here in TensorFlow because a registered model must carry it as a layer. Standardisation is not a
step of this layer: it is the network's own first layer (`model.hypermodel`), being a float rescaling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xraycnn.data.regions import LUNG_BOX, Box, box_mask, box_pixels

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


def _round_to_bins(values: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(values), 0, BINS - 1), tf.int32)


def _planes(images: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """(batch, height, width, channels) -> (batch * channels, height, width) int32 values, and the undo."""
    shape = tf.shape(images)
    # transposed as floats: oneDNN's int32 transpose needs AVX-512 and says so on stderr where it falls back
    planes = _round_to_bins(tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [-1, shape[1], shape[2]]))

    def back(planes_out: tf.Tensor) -> tf.Tensor:
        out = tf.reshape(planes_out, [shape[0], shape[3], shape[1], shape[2]])
        return tf.transpose(out, [0, 2, 3, 1])

    return planes, back


def equalize_global(images: tf.Tensor) -> tf.Tensor:
    """Per image and channel, as OpenCV's equalizeHist: value v -> round((cdf(v) - cdf(v0)) * 255 / (n - cdf(v0)))
    with v0 the darkest value present; a one-valued image is left as it is."""
    planes, back = _planes(images)
    count = tf.shape(planes)[1] * tf.shape(planes)[2]
    flat = tf.reshape(planes, [tf.shape(planes)[0], count])
    hist = tf.math.bincount(flat, minlength=BINS, maxlength=BINS, axis=-1)
    cdf = tf.cumsum(hist, axis=-1)
    first = tf.reduce_min(tf.where(cdf > 0, cdf, count), axis=-1, keepdims=True)  # hist of the darkest value
    rest = count - first
    scale = tf.cast(BINS - 1, tf.float32) / tf.cast(tf.maximum(rest, 1), tf.float32)
    lut = tf.clip_by_value(tf.round(tf.cast(cdf - first, tf.float32) * scale), 0, BINS - 1)
    identity = tf.broadcast_to(tf.range(BINS, dtype=tf.float32), tf.shape(lut))
    lut = tf.where(rest > 0, lut, identity)
    out = tf.gather(lut, flat, batch_dims=1)
    return back(tf.reshape(out, tf.shape(planes)))


def _clip_histograms(hist: tf.Tensor, limit: int) -> tf.Tensor:
    """OpenCV's CLAHE clipping: counts above `limit` are cut, the excess spread evenly over all bins, and the
    remainder one by one over every `256 // remainder`-th bin from the first."""
    excess = tf.reduce_sum(tf.maximum(hist - limit, 0), axis=-1, keepdims=True)
    hist = tf.minimum(hist, limit) + excess // BINS
    residual = excess % BINS
    step = tf.maximum(BINS // tf.maximum(residual, 1), 1)
    bins = tf.range(BINS)[None, :]
    extra = tf.logical_and(bins % step == 0, bins // step < residual)
    return hist + tf.cast(extra, hist.dtype)


def _axis_weights(size: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel along one axis: the two neighbouring tiles and the weight of the second (OpenCV's float32)."""
    position = np.arange(size, dtype=np.float32) * np.float32(1.0 / tile) - np.float32(0.5)
    first = np.floor(position).astype(np.int32)
    weight = (position - first).astype(np.float32)
    return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), weight


def equalize_clahe(images: tf.Tensor, clip_limit: float, tiles: int) -> tf.Tensor:
    """Contrast-limited adaptive histogram equalisation, as OpenCV's createCLAHE(clip_limit, (tiles, tiles)):
    a clipped equalisation table per tile (the image extended by reflection to whole tiles), blended
    bilinearly between the four nearest tiles at every pixel."""
    planes, back = _planes(images)
    height, width = int(images.shape[1]), int(images.shape[2])
    pad_h, pad_w = 0, 0
    if height % tiles or width % tiles:  # OpenCV then extends both sides, a divisible one by a whole tile
        pad_h, pad_w = tiles - height % tiles, tiles - width % tiles
    # OpenCV's BORDER_REFLECT_101; tiled as floats (an int32 transpose falls back from oneDNN, noisily)
    extended = tf.pad(tf.cast(planes, tf.float32), [[0, 0], [0, pad_h], [0, pad_w]], mode="REFLECT")
    tile_h, tile_w = (height + pad_h) // tiles, (width + pad_w) // tiles
    area = tile_h * tile_w
    by_tile = tf.reshape(extended, [-1, tiles, tile_h, tiles, tile_w])
    by_tile = tf.cast(tf.reshape(tf.transpose(by_tile, [0, 1, 3, 2, 4]), [-1, area]), tf.int32)
    hist = tf.math.bincount(by_tile, minlength=BINS, maxlength=BINS, axis=-1)
    hist = _clip_histograms(hist, max(int(clip_limit * area / BINS), 1))
    lut = tf.clip_by_value(
        tf.round(tf.cast(tf.cumsum(hist, axis=-1), tf.float32) * np.float32((BINS - 1) / area)), 0, 255
    )
    lut = tf.reshape(lut, [-1, tiles * tiles * BINS])  # per plane: tile (row, col), then value

    row1, row2, row_w = _axis_weights(height, tile_h, tiles)
    col1, col2, col_w = _axis_weights(width, tile_w, tiles)
    flat = tf.reshape(planes, [tf.shape(planes)[0], height * width])

    def looked_up(rows: np.ndarray, cols: np.ndarray) -> tf.Tensor:
        offset = ((rows[:, None] * tiles + cols[None, :]) * BINS).reshape(-1)
        return tf.gather(lut, flat + offset[None, :], batch_dims=1)

    xa = np.broadcast_to(col_w[None, :], (height, width)).reshape(-1)
    ya = np.broadcast_to(row_w[:, None], (height, width)).reshape(-1)
    top = looked_up(row1, col1) * (1 - xa) + looked_up(row1, col2) * xa
    bottom = looked_up(row2, col1) * (1 - xa) + looked_up(row2, col2) * xa
    out = tf.clip_by_value(tf.round(top * (1 - ya) + bottom * ya), 0, 255)
    return back(tf.reshape(out, tf.shape(planes)))


def apply_steps(images: tf.Tensor, steps: FilmSteps) -> tf.Tensor:
    """float32 (batch, height, width, channels) films, values 0-255 -> the network's input, values 0-255."""
    height, width = int(images.shape[1]), int(images.shape[2])
    if steps.crop:
        r0, r1, c0, c1 = box_pixels(steps.box, height, width)
        images = images[:, r0:r1, c0:c1, :]
    if steps.equalize == "global":
        images = equalize_global(images)
    elif steps.equalize == "clahe":
        images = equalize_clahe(images, steps.clahe_clip_limit, steps.clahe_tiles)
    if steps.mask and not steps.crop:
        images = images * tf.constant(box_mask(steps.box, height, width)[None, :, :, None], tf.float32)
    return images


@keras.saving.register_keras_serializable(package="xraycnn")
class FilmPreprocessing(keras.layers.Layer):
    """The experiment's preprocessing as the first layer of a registered model: films in, network input out.

    Loading a model that carries it needs this class registered: `import xraycnn.model` first.
    """

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

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return apply_steps(tf.cast(inputs, tf.float32), self.steps)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        height, width = self.steps.output_size(int(input_shape[1]), int(input_shape[2]))
        return (input_shape[0], height, width, input_shape[3])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.steps).items()})
        return config


_COMPILED: dict[FilmSteps, Any] = {}  # one traced function per preprocessing, reused for every call


def preprocess_films(films: np.ndarray, steps: FilmSteps, batch_size: int = 512) -> np.ndarray:
    """uint8 films -> uint8 network inputs, by the same layer a registered model carries."""
    if not steps.active:
        return films
    if steps not in _COMPILED:
        _COMPILED[steps] = tf.function(FilmPreprocessing.of(steps).call, reduce_retracing=True)
    run = _COMPILED[steps]
    height, width = steps.output_size(films.shape[1], films.shape[2])
    out = np.empty((len(films), height, width, films.shape[3]), dtype=np.uint8)
    for start in range(0, len(films), batch_size):
        chunk = tf.convert_to_tensor(films[start : start + batch_size], dtype=tf.float32)
        out[start : start + batch_size] = run(chunk).numpy().astype(np.uint8)
    return out


def film_preprocessing_of(model: keras.Model) -> FilmSteps | None:
    """The steps a model applies to its films, or None when it takes the network's input directly."""
    for layer in model.layers:
        if isinstance(layer, FilmPreprocessing):
            return layer.steps
    return None
