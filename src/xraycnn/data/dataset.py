"""The dataset in memory: decoded once, split into train / validation / test, with a digest.

Every trial of a search trains on the same uint8 arrays; nothing is decoded per epoch or per trial, and a
later search of the same files at the same size reads the arrays from the disk cache (data.cache). The
validation set is a stratified, seeded share of train; test is only ever used for reporting.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import train_test_split

from xraycnn.config import DataConfig
from xraycnn.data import cache
from xraycnn.data.discovery import CLASS_NAMES, DatasetFiles, LabeledFile
from xraycnn.data.images import SkippedFile, decode_files, default_workers
from xraycnn.errors import DataUnusableError

if TYPE_CHECKING:
    from xraycnn.data.preprocess import FilmSteps

MIN_PER_CLASS = 2  # per class and split: fewer makes AUC undefined or a stratified split impossible


@dataclass(frozen=True, eq=False)
class Split:
    images: np.ndarray  # uint8 (n, size, size, channels)
    labels: np.ndarray  # int32 (n,), 1 = COVID19
    files: tuple[str, ...]  # relative to the dataset root

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.labels.tolist())
        return {name: counts.get(label, 0) for label, name in reversed(list(enumerate(CLASS_NAMES)))}

    def subset(self, indices: np.ndarray) -> Split:
        return Split(self.images[indices], self.labels[indices], tuple(self.files[i] for i in indices))


@dataclass(frozen=True, eq=False)
class PreparedData:
    """The splits of a dataset. As prepared, their images are the films (`image_size` a side, what a
    registered model takes); `preprocessed(steps)` gives the same splits as the network's inputs."""

    root: str
    digest: str
    image_size: int
    channels: int
    train: Split
    val: Split
    test: Split
    skipped: tuple[SkippedFile, ...] = field(default=())
    train_indices: np.ndarray | None = None  # of `train` and `val` in the decoded train split
    val_indices: np.ndarray | None = None
    steps_key: str = "none"  # the preprocessing its images went through

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image of the splits."""
        if self.train is None:
            return (self.image_size, self.image_size, self.channels)
        return tuple(int(d) for d in self.train.images.shape[1:])  # type: ignore[return-value]

    def preprocessed(self, steps: FilmSteps) -> PreparedData:
        """The same splits, each film through `steps` (computed once per process and cached on disk)."""
        if not steps.active:
            return self
        key = (self.digest, self.image_size, self.channels, steps.key())
        if key not in _PREPROCESSED:
            from xraycnn.data.preprocess import PREPROCESS_VERSION, preprocess_films

            entry = cache.entry_path(
                self.digest, self.image_size, self.channels, variant=f"{steps.key()}-p{PREPROCESS_VERSION}"
            )
            arrays = cache.load(entry)
            if arrays is None:
                decoded = _DECODED[(self.digest, self.image_size, self.channels)]
                arrays = cache.CachedArrays(
                    {name: preprocess_films(getattr(decoded, name).images, steps) for name in ("train", "test")},
                    {name: getattr(decoded, name).labels for name in ("train", "test")},
                    {name: list(getattr(decoded, name).files) for name in ("train", "test")},
                    [],
                )
                cache.save(entry, arrays)
            _PREPROCESSED[key] = arrays
        arrays = _PREPROCESSED[key]

        def split(name: str, indices: np.ndarray | None) -> Split:
            images, labels = arrays.images[name], arrays.labels[name]
            files = tuple(arrays.files[name])
            if indices is not None:
                return Split(images[indices], labels[indices], tuple(files[i] for i in indices))
            return Split(images, labels, files)

        return replace(
            self,
            train=split("train", self.train_indices),
            val=split("train", self.val_indices),
            test=split("test", None),
            steps_key=steps.key(),
        )

    def summary(self) -> dict[str, Any]:
        """What runs log as params next to the experiment's own settings."""
        return {
            "data.digest": self.digest,
            "data.resolved_root": self.root,
            "data.channels": self.channels,
            "data.train_images": len(self.train),
            "data.val_images": len(self.val),
            "data.test_images": len(self.test),
            "data.skipped_files": len(self.skipped),
        }


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_digest(files: DatasetFiles) -> str:
    """32 hex digits over every file's split, class, relative path and bytes: changes when any image does.

    (MLflow's default digest of a numpy dataset hashes only its first rows: less than one image here.)
    """
    entries = [("train", f) for f in files.train] + [("test", f) for f in files.test]
    return files_digest(entries, files.root)


def files_digest(entries: list[tuple[str, LabeledFile]], root: Path) -> str:
    """The digest of (group, labelled file) entries, paths taken relative to `root`."""
    with ThreadPoolExecutor(default_workers()) as pool:  # hashlib releases the GIL on large buffers
        hashes = list(pool.map(lambda e: _file_sha256(e[1].path), entries))
    digest = hashlib.sha256()
    for (group, file), file_hash in zip(entries, hashes, strict=True):
        digest.update(f"{group}/{file.label}/{file.path.relative_to(root).as_posix()}/{file_hash}\n".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True, eq=False)
class _Decoded:
    train: Split
    test: Split
    skipped: tuple[SkippedFile, ...]


# One decode per dataset content, image size and colour mode for the life of the process (and, through
# data.cache, across processes).
_DECODED: dict[tuple[str, int, int], _Decoded] = {}
# The decoded splits through one preprocessing, keyed by (digest, size, channels, steps): data.preprocess.
_PREPROCESSED: dict[tuple[str, int, int, str], cache.CachedArrays] = {}


def _decode(files: DatasetFiles, size: int, channels: int) -> cache.CachedArrays:
    arrays = cache.CachedArrays({}, {}, {}, [])
    for name, listed in (("train", files.train), ("test", files.test)):
        images, kept, skipped = decode_files([f.path for f in listed], size, channels)
        arrays.images[name] = images
        arrays.labels[name] = np.array([listed[i].label for i in kept], dtype=np.int32)
        arrays.files[name] = [files.relative(listed[i]) for i in kept]
        arrays.skipped.extend((Path(s.path).relative_to(files.root).as_posix(), s.reason) for s in skipped)
    return arrays


def _decoded(files: DatasetFiles, digest: str, size: int, channels: int) -> _Decoded:
    """The decoded dataset: from this process's memory, else the disk cache, else decoded (and cached)."""
    key = (digest, size, channels)
    if key not in _DECODED:
        entry = cache.entry_path(digest, size, channels)
        arrays = cache.load(entry)
        if arrays is None:
            arrays = _decode(files, size, channels)
            cache.save(entry, arrays)
        split = {s: Split(arrays.images[s], arrays.labels[s], tuple(arrays.files[s])) for s in ("train", "test")}
        skipped = tuple(SkippedFile(str(files.root / rel), reason) for rel, reason in arrays.skipped)
        _DECODED[key] = _Decoded(split["train"], split["test"], skipped)
    return _DECODED[key]


def _check_usable(splits: dict[str, Split], root: Path, skipped: tuple[SkippedFile, ...]) -> None:
    problems = [
        f"{name} has {count} {class_name} image(s)"
        for name, split in splits.items()
        for class_name, count in split.class_counts().items()
        if count < MIN_PER_CLASS
    ]
    if problems:
        examples = "; ".join(f"{os.path.relpath(s.path, root)}: {s.reason}" for s in skipped[:3])
        raise DataUnusableError(
            f"{root}: too few readable images to train and evaluate ({'; '.join(problems)}; at least "
            f"{MIN_PER_CLASS} per class and split are needed, {len(skipped)} file(s) were unreadable"
            f"{f', e.g. {examples}' if examples else ''}). Add images or fix the unreadable ones."
        )


def prepare_data(files: DatasetFiles, config: DataConfig, seed: int) -> PreparedData:
    """Decode (once per process), drop unreadable files, and split train into train and validation."""
    digest = dataset_digest(files)
    decoded = _decoded(files, digest, config.image_size, config.channels)
    train = decoded.train
    _check_usable({"train": train, "test": decoded.test}, files.root, decoded.skipped)
    val_count = max(2 * MIN_PER_CLASS, round(config.validation_split * len(train)))
    try:
        fit_idx, val_idx = train_test_split(
            np.arange(len(train)), test_size=val_count, stratify=train.labels, random_state=seed, shuffle=True
        )
    except ValueError as exc:
        raise DataUnusableError(
            f"{files.root}: cannot hold out a stratified {config.validation_split:.0%} of train for validation "
            f"({exc}); add training images or change data.validation_split"
        ) from exc
    fit_idx, val_idx = np.sort(fit_idx), np.sort(val_idx)
    splits = {"train": train.subset(fit_idx), "validation": train.subset(val_idx)}
    _check_usable(splits, files.root, decoded.skipped)
    return PreparedData(
        root=str(files.root),
        digest=digest,
        image_size=config.image_size,
        channels=config.channels,
        train=splits["train"],
        val=splits["validation"],
        test=decoded.test,
        skipped=decoded.skipped,
        train_indices=fit_idx,
        val_indices=val_idx,
    )
