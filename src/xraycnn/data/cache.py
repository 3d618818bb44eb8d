"""Decoded datasets on disk, shared by every search on this machine.

Keyed by the dataset digest (every file's path, label and bytes), the image geometry, the decoder's
version and, for preprocessed arrays, the preprocessing's steps and version, so a hit is always the same
arrays a fresh decode (and preprocessing) would give. Written atomically (temporary file,
then rename); a file that cannot be read is ignored and rewritten, never trusted.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xraycnn import paths

DECODER_VERSION = 1  # bump when images.decode_image changes what it returns
KEEP_ENTRIES = 8  # the least recently used entries beyond this are deleted


@dataclass(frozen=True, eq=False)
class CachedArrays:
    """What one decode of a dataset produced: uint8 images and labels per split, kept file names, skips."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    files: dict[str, list[str]]  # relative to the dataset root
    skipped: list[tuple[str, str]]  # (path relative to the dataset root, reason)


def entry_path(digest: str, size: int, channels: int, directory: Path | None = None, variant: str = "") -> Path:
    """The entry of a decode; `variant` names what was done to the decoded images (a preprocessing)."""
    directory = directory or paths.cache_dir()
    suffix = f"-{variant}" if variant else ""
    return directory / f"decoded-{digest}-{size}px-{channels}ch-v{DECODER_VERSION}{suffix}.npz"


def load(path: Path) -> CachedArrays | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            splits = meta["splits"]
            arrays = CachedArrays(
                images={s: npz[f"{s}_images"] for s in splits},
                labels={s: npz[f"{s}_labels"] for s in splits},
                files=meta["files"],
                skipped=[tuple(x) for x in meta["skipped"]],
            )
        if any(len(arrays.images[s]) != len(arrays.files[s]) for s in splits):
            return None
        os.utime(path)  # recently used: evicted last
        return arrays
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # unreadable or from an older layout: decode again and overwrite it


def save(path: Path, arrays: CachedArrays) -> None:
    """Write `arrays` to `path` atomically; a cache that cannot be written only costs the next decode."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"splits": list(arrays.images), "files": arrays.files, "skipped": arrays.skipped}
        payload = {f"{s}_images": a for s, a in arrays.images.items()}
        payload |= {f"{s}_labels": a for s, a in arrays.labels.items()}
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npz", delete=False) as tmp:
            tmp_name = tmp.name
            np.savez(tmp, meta=np.array(json.dumps(meta)), **payload)
        os.replace(tmp_name, path)
    except OSError:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        return
    _evict(path.parent)


def _evict(directory: Path) -> None:
    entries = sorted(directory.glob("decoded-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP_ENTRIES:]:
        old.unlink(missing_ok=True)
