"""Files a real data folder ends up holding besides clean 8-bit JPEGs: ones that cannot be used (with the
reason the decoder must give) and unusual ones that must be read correctly. Shared by the decoder's tests
and the CLI's bad-input tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from xraycnn.data.images import MAX_PIXELS


def gradient(size: int = 64) -> np.ndarray:
    return np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))


def _truncated_jpeg(path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128), np.uint8), "L").save(path, "JPEG", quality=95)
    path.write_bytes(path.read_bytes()[:600])


def _bomb(path: Path) -> None:
    side = int(MAX_PIXELS**0.5) + 64
    Image.new("1", (side, side)).save(path, "PNG", optimize=True)  # a few KB on disk, 68 Mpx canvas


def _rgba(path: Path) -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = gradient()[..., None]
    rgba[:, :32, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(path, "PNG")


# name -> (writer, the reason the decoder gives)
UNUSABLE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated.jpg": (_truncated_jpeg, "corrupt or truncated"),
    "zero-bytes.jpg": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "text.png": (lambda p: p.write_text("this is not a PNG\n"), "not an image file"),
    "notes.docx": (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(200)), "not an image file"),
    "one-pixel.png": (lambda p: Image.new("L", (1, 1)).save(p, "PNG"), "too small"),
    "bomb.png": (_bomb, "decompression-bomb limit"),
}

# name -> writer: odd but valid, so they are used
UNUSUAL: dict[str, Callable[[Path], None]] = {
    "rgba.png": _rgba,
    "sixteen-bit.png": lambda p: Image.fromarray(gradient().astype(np.uint16) * 200).save(p, "PNG"),  # I;16
    "cmyk.jpg": lambda p: Image.fromarray(np.stack([gradient()] * 3, -1), "RGB").convert("CMYK").save(p, "JPEG"),
}


def write(folder: Path, names: dict[str, Callable[[Path], None]] | dict[str, tuple]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entry in names.items():
        writer = entry[0] if isinstance(entry, tuple) else entry
        writer(folder / name)
        written.append(folder / name)
    return written
