"""Images that are not frontal chest films, made here (no download), to measure the input guard on: what a
user may send by mistake and what the network would still give a confident probability for.

- blank: black, white and greys;
- noise: uniform, Gaussian and salt-and-pepper noise, and noise smoothed to blobs;
- pattern: gradients, stripes, a checkerboard, rings;
- photo: the photographs that ship with matplotlib (Grace Hopper) and scikit-learn (a temple, a flower), in
  crops, mirrored and as grey;
- body_part: other images of the body: an MRI slice of a head (matplotlib's sample), the Shepp-Logan head
  phantom drawn here, and a forearm radiograph drawn here (two bones in soft tissue);
- document: a page of text drawn by matplotlib.

Each kind comes back as films of the model's size and channels, as `data.images.decode_image` gives them.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
from PIL import Image

from xraycnn.data.images import resize_film

KINDS = ("blank", "noise", "pattern", "photo", "body_part", "document")


def _as_film(gray: np.ndarray, size: int, channels: int) -> np.ndarray:
    """A float image in [0, 1] (any size) as a film of `size` and `channels`, the way decoding makes one."""
    array = np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)
    film = array[..., None] if channels == 1 else np.repeat(array[..., None], 3, axis=-1)
    return resize_film(film, size)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]) / 255.0


def _blank() -> list[np.ndarray]:
    return [np.full((256, 256), level) for level in (0.0, 0.25, 0.5, 0.75, 1.0)]


def _noise(rng: np.random.Generator) -> list[np.ndarray]:
    from scipy.ndimage import gaussian_filter

    images = []
    for _ in range(3):
        images.append(rng.uniform(size=(256, 256)))
        images.append(np.clip(rng.normal(0.5, 0.2, size=(256, 256)), 0, 1))
        images.append((rng.uniform(size=(256, 256)) > 0.5).astype(float))
        blobs = gaussian_filter(rng.normal(size=(256, 256)), 8)
        images.append((blobs - blobs.min()) / (np.ptp(blobs) or 1.0))
    return images


def _pattern() -> list[np.ndarray]:
    y, x = np.mgrid[0:256, 0:256] / 255.0
    r = np.hypot(x - 0.5, y - 0.5)
    return [
        x,
        y,
        1 - x,
        (x + y) / 2,
        (np.sin(x * 40) > 0).astype(float),
        (np.sin(y * 25) > 0).astype(float),
        ((np.floor(x * 8) + np.floor(y * 8)) % 2).astype(float),
        0.5 + 0.5 * np.sin(r * 60),
        np.clip(1 - 2 * r, 0, 1),
    ]


def _photos() -> list[np.ndarray]:
    from matplotlib import cbook
    from sklearn.datasets import load_sample_images

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    images = []
    for rgb in (hopper, *load_sample_images().images):
        gray = _gray(rgb)
        h, w = gray.shape
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crops = [gray, gray[:s, :s], gray[h - s :, w - s :], gray[top : top + s, left : left + s]]
        crops += [c[:, ::-1] for c in crops[1:]]
        images += crops
    return images


def _ellipses(shapes: list[tuple[float, float, float, float, float, float]], n: int = 256) -> np.ndarray:
    """Ellipses (value, semi-axis a, semi-axis b, centre x, centre y, angle in degrees) added on [-1, 1]^2."""
    y, x = np.mgrid[1 : -1 : n * 1j, -1 : 1 : n * 1j]
    image = np.zeros((n, n))
    for value, a, b, x0, y0, angle in shapes:
        t = np.deg2rad(angle)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        image[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += value
    return image


def shepp_logan() -> np.ndarray:
    """The Shepp-Logan head phantom (the modified contrast of Toft), in [0, 1]."""
    image = _ellipses(
        [
            (1.0, 0.69, 0.92, 0, 0, 0),
            (-0.8, 0.6624, 0.874, 0, -0.0184, 0),
            (-0.2, 0.11, 0.31, 0.22, 0, -18),
            (-0.2, 0.16, 0.41, -0.22, 0, 18),
            (0.1, 0.21, 0.25, 0, 0.35, 0),
            (0.1, 0.046, 0.046, 0, 0.1, 0),
            (0.1, 0.046, 0.046, 0, -0.1, 0),
            (0.1, 0.046, 0.023, -0.08, -0.605, 0),
            (0.1, 0.023, 0.023, 0, -0.606, 0),
            (0.1, 0.023, 0.046, 0.06, -0.605, 0),
        ]
    )
    return np.clip(image, 0, 1)


def forearm(angle: float = 0.0) -> np.ndarray:
    """A forearm radiograph drawn with ellipses: soft tissue, and radius and ulna with their marrow darker."""
    image = _ellipses(
        [
            (0.35, 0.42, 1.2, 0, 0, angle),
            (0.45, 0.09, 1.1, -0.15, 0, angle + 3),
            (-0.25, 0.045, 1.05, -0.15, 0, angle + 3),
            (0.45, 0.08, 1.1, 0.16, 0, angle - 3),
            (-0.25, 0.04, 1.05, 0.16, 0, angle - 3),
        ]
    )
    return np.clip(image, 0, 1)


def _mri_head() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("s1045.ima.gz") as f:
        raw = gzip.decompress(f.read()) if not isinstance(f, gzip.GzipFile) else f.read()
    slice_ = np.frombuffer(raw, np.uint16).astype(np.float64).reshape(256, 256)
    return slice_ / slice_.max()


def _body_parts() -> list[np.ndarray]:
    mri = _mri_head()
    phantom = shepp_logan()
    images = [mri, 1 - mri, phantom, phantom[::-1], np.clip(phantom * 1.5, 0, 1)]
    images += [forearm(a) for a in (0, 20, -35, 90)]
    return images


def _document() -> list[np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    images = []
    for size in (8, 12):
        fig = Figure(figsize=(4, 4), dpi=64)
        words = "The patient was admitted with a cough and fever; the chest film was read as normal. " * 6
        fig.text(0.05, 0.95, "\n".join(words[i : i + 40] for i in range(0, len(words), 40)), va="top", size=size)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        images.append(_gray(np.asarray(Image.open(buffer).convert("RGB"))))
    return images


def not_films(size: int, channels: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Each kind's images (`KINDS`) as films of `size` x `size` x `channels` (uint8)."""
    rng = np.random.default_rng(seed)
    made = {
        "blank": _blank(),
        "noise": _noise(rng),
        "pattern": _pattern(),
        "photo": _photos(),
        "body_part": _body_parts(),
        "document": _document(),
    }
    return {kind: np.stack([_as_film(g, size, channels) for g in images]) for kind, images in made.items()}
