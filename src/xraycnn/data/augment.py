"""Training-batch augmentation against acquisition shortcuts, in TensorFlow ops for the tf.data pipeline.

Films from different hospitals differ in framing (where the patient sits, how much border, which markers
and where), in exposure and processing (brightness, contrast, gamma, noise, sharpness). A network that
sees the same film framed, exposed and marked in many ways cannot use those as a label. Per image:

- geometry, as one affine resampling (reflecting at the edges): zoom, random crop (a window resized back),
  translation, small rotation, horizontal flip;
- intensity, each on the image's own scale so it works on raw or equalised films alike: gamma, contrast,
  brightness, blur, sharpening (an unsharp mask, as many hospitals' processing applies), noise; clipped back
  to 0-255 as a detector would;
- erasing: a random corner square and a random border strip (where text and laterality markers sit),
  filled with the image's mean.

All randomness is stateless and drawn from a per-batch seed, so an epoch is reproducible from the trial seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import tensorflow as tf


@dataclass(frozen=True)
class AugmentValues:
    """One trial's augmentation strengths (0 / False: off); see config.Augmentation for their meaning."""

    zoom: float = 0.0
    horizontal_flip: bool = False
    translate: float = 0.0
    crop: float = 0.0
    rotate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    erase: float = 0.0
    sharpen: float = 0.0

    @property
    def active(self) -> bool:
        return any(bool(getattr(self, f.name)) for f in fields(self))

    @property
    def geometric(self) -> bool:
        return bool(self.zoom or self.horizontal_flip or self.translate or self.crop or self.rotate)

    def only(self, name: str) -> AugmentValues:
        """These values with every augmentation but `name` turned off (the bench times them one by one)."""
        return AugmentValues(**{name: getattr(self, name)})


def _uniform(seed: tf.Tensor, salt: int, shape: tf.Tensor, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform(
        shape, tf.random.experimental.stateless_fold_in(seed, salt), minval=low, maxval=high
    )


def _geometry(images: tf.Tensor, values: AugmentValues, seed: tf.Tensor) -> tf.Tensor:
    """One affine map per image from output to input pixels: p_in = c + M (p_out - c - t), with
    M = F R(-angle) / scale (F: the flip, R: a rotation) and t the content's shift in pixels."""
    batch = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    shape = tf.stack([batch])
    scale = tf.ones(shape)
    if values.zoom:  # the notebook's ImageDataGenerator: coordinates scaled by u in [1-z, 1+z]
        scale = scale / _uniform(seed, 1, shape, 1 - values.zoom, 1 + values.zoom)
    shift_x, shift_y = tf.zeros(shape), tf.zeros(shape)
    if values.crop:  # a window of w in [1-c, 1] of the side, anywhere inside the film, blown up to full size
        window = _uniform(seed, 2, shape, 1 - values.crop, 1.0)
        scale = scale / window
        room = (1 / window - 1) / 2
        shift_x += _uniform(seed, 3, shape, -1, 1) * room * width
        shift_y += _uniform(seed, 4, shape, -1, 1) * room * height
    if values.translate:
        shift_x += _uniform(seed, 5, shape, -values.translate, values.translate) * width
        shift_y += _uniform(seed, 6, shape, -values.translate, values.translate) * height
    angle = tf.zeros(shape)
    if values.rotate:
        limit = math.radians(values.rotate)
        angle = _uniform(seed, 7, shape, -limit, limit)
    flip = tf.ones(shape)
    if values.horizontal_flip:
        flip = tf.where(_uniform(seed, 8, shape, 0, 1) < 0.5, -1.0, 1.0)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    m00, m01, m10, m11 = flip * cos, flip * sin, -sin, cos
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ox, oy = cx + shift_x, cy + shift_y
    transforms = tf.stack(
        [m00, m01, cx - (m00 * ox + m01 * oy), m10, m11, cy - (m10 * ox + m11 * oy), tf.zeros(shape), tf.zeros(shape)],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant([height, width]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _per_image(images: tf.Tensor, reduce: object) -> tf.Tensor:
    return reduce(images, axis=[1, 2, 3], keepdims=True)  # type: ignore[operator]


def _gaussian(images: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """A Gaussian blur of its own `sigma` (batch,) per image: every image of the batch becomes a channel of one
    depthwise convolution, each with its own kernel."""
    batch = tf.shape(images)[0]
    height, width, channels = (int(d) for d in images.shape[1:])
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(taps[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # (batch, taps)
    kernel = tf.repeat(kernel, channels, axis=0)  # (batch * channels, taps)
    planes = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, height, width, -1])
    pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
    planes = tf.pad(planes, pad, mode="REFLECT")
    along_x = tf.transpose(kernel)[None, :, :, None]  # (1, taps, planes, 1)
    along_y = tf.transpose(kernel)[:, None, :, None]  # (taps, 1, planes, 1)
    planes = tf.nn.depthwise_conv2d(planes, along_x, [1, 1, 1, 1], "VALID")
    planes = tf.nn.depthwise_conv2d(planes, along_y, [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(planes, [height, width, batch, channels]), [2, 0, 1, 3])


def _blur(images: tf.Tensor, max_sigma: float, seed: tf.Tensor) -> tf.Tensor:
    """A Gaussian blur of sigma in [0, max_sigma], drawn per image."""
    sigma = tf.maximum(_uniform(seed, 9, tf.stack([tf.shape(images)[0]]), 0.0, max_sigma), 1e-3)
    return _gaussian(images, sigma, max(1, math.ceil(3 * max_sigma)))


SHARPEN_SIGMA = (0.5, 1.5)  # the unsharp mask's radius in pixels, drawn per image


def _sharpen(images: tf.Tensor, max_amount: float, seed: tf.Tensor) -> tf.Tensor:
    """An unsharp mask, x + a (x - blur(x)), with amount a in [0, max_amount] and the blur's sigma in
    SHARPEN_SIGMA, drawn per image: the edge enhancement of many hospitals' processing."""
    shape = tf.stack([tf.shape(images)[0]])
    sigma = _uniform(seed, 15, shape, *SHARPEN_SIGMA)
    amount = _uniform(seed, 16, shape, 0.0, max_amount)[:, None, None, None]
    smooth = _gaussian(images, sigma, math.ceil(3 * SHARPEN_SIGMA[1]))
    return images + amount * (images - smooth)


def _erase(images: tf.Tensor, chance: float, seed: tf.Tensor) -> tf.Tensor:
    """With probability `chance` each: a corner square (10-25 % of the side) and a border strip (3-12 %)."""
    batch = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    shape = tf.stack([batch])
    rows = tf.range(height, dtype=tf.float32)[None, :, None] / height  # (1, h, 1)
    cols = tf.range(width, dtype=tf.float32)[None, None, :] / width  # (1, 1, w)

    def column(values: tf.Tensor) -> tf.Tensor:
        return values[:, None, None]

    side = column(_uniform(seed, 20, shape, 0.10, 0.25))
    corner = column(tf.floor(_uniform(seed, 21, shape, 0, 4)))
    at_bottom, at_right = corner >= 2, tf.math.floormod(corner, 2) >= 1
    in_rows = tf.where(at_bottom, rows >= 1 - side, rows < side)
    in_cols = tf.where(at_right, cols >= 1 - side, cols < side)
    erase_corner = in_rows & in_cols & column(_uniform(seed, 22, shape, 0, 1) < chance)

    depth = column(_uniform(seed, 23, shape, 0.03, 0.12))
    edge = column(tf.floor(_uniform(seed, 24, shape, 0, 4)))
    strip = tf.where(
        edge < 1,
        rows < depth,
        tf.where(edge < 2, rows >= 1 - depth, tf.where(edge < 3, cols < depth, cols >= 1 - depth)),
    )
    erase_strip = strip & column(_uniform(seed, 25, shape, 0, 1) < chance)
    erased = (erase_corner | erase_strip)[..., None]
    return tf.where(erased, _per_image(images, tf.reduce_mean), images)


def augment(images: tf.Tensor, values: AugmentValues, seed: tf.Tensor) -> tf.Tensor:
    """float32 (batch, height, width, channels), values 0-255 -> the same, augmented; `seed`: int64 (2,)."""
    if values.geometric:
        images = _geometry(images, values, seed)
    batch = tf.shape(images)[0]
    shape = tf.stack([batch, 1, 1, 1])
    if values.gamma or values.contrast or values.brightness or values.noise or values.blur or values.sharpen:
        low, high = _per_image(images, tf.reduce_min), _per_image(images, tf.reduce_max)
        spread = tf.maximum(high - low, 1.0)
        if values.gamma:
            gamma = tf.exp(_uniform(seed, 10, shape, -values.gamma, values.gamma))
            # x ** gamma as exp(gamma log x): TensorFlow's pow runs 4-5x slower on the CPU (its exp and log are
            # vectorised; `make bench --only cuts`); the same to 1e-7, and 0 stays 0 (log 0 = -inf, gamma > 0)
            unit = tf.clip_by_value((images - low) / spread, 0.0, 1.0)
            images = low + spread * tf.exp(gamma * tf.math.log(unit))
        if values.contrast:
            mean = _per_image(images, tf.reduce_mean)
            images = mean + (images - mean) * _uniform(seed, 11, shape, 1 - values.contrast, 1 + values.contrast)
        if values.brightness:
            images = images + _uniform(seed, 12, shape, -values.brightness, values.brightness) * spread
        if values.blur:
            images = _blur(images, values.blur, seed)
        if values.sharpen:
            images = _sharpen(images, values.sharpen, seed)
        if values.noise:
            sd = _per_image(images, tf.math.reduce_std) * _uniform(seed, 13, shape, 0.0, values.noise)
            noise = tf.random.stateless_normal(tf.shape(images), tf.random.experimental.stateless_fold_in(seed, 14))
            images = images + noise * sd
        images = tf.clip_by_value(images, 0.0, 255.0)
    if values.erase:
        images = _erase(images, values.erase, seed)
    return images


def fixed_augmentation(augmentation: object) -> AugmentValues:
    """The values of a config's [data.augmentation] whose entries are all fixed (a training job's, the bench's);
    a searched entry is refused: its value belongs to a trial."""
    from xraycnn.config import Augmentation, Fixed

    assert isinstance(augmentation, Augmentation)
    values = {}
    for name, spec in augmentation.items():
        if not isinstance(spec, Fixed):
            raise ValueError(f"data.augmentation.{name} is searched ({spec.describe()}); give it one value")
        values[name] = spec.value
    return AugmentValues(**values)  # type: ignore[arg-type]
