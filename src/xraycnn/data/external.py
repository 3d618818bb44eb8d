"""A labelled folder to evaluate a model on (an external hospital's films, or any test set): decoded at the
model's input geometry, unreadable files skipped and listed, and where each image comes from when the folder
has a `MANIFEST.csv` with a `source` column."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xraycnn.data.dataset import MIN_PER_CLASS, Split, files_digest
from xraycnn.data.discovery import CLASS_NAMES, FOLDER_LAYOUT, discover_labeled_folder
from xraycnn.data.images import SkippedFile, decode_files
from xraycnn.errors import DataLayoutError, DataUnusableError

MANIFEST = "MANIFEST.csv"
FILE_COLUMNS = ("file", "path", "filename", "image")
SOURCE_COLUMNS = ("source", "source_repo", "site", "hospital")  # the first one present names the source
UNKNOWN_SOURCE = "unknown"


@dataclass(frozen=True, eq=False)
class LabeledImages:
    root: Path  # the folder that holds the class folders
    digest: str
    split: Split
    sources: tuple[str, ...] | None  # one per image of `split`, when a manifest names them
    skipped: tuple[SkippedFile, ...]

    @property
    def name(self) -> str:
        """A short name for run names and tags: the folder, or `parent/test` for a training layout's test/."""
        return self.root.name if self.root.name.lower() != "test" else f"{self.root.parent.name}/test"


def _manifest_folder(root: Path) -> Path | None:
    for folder in (root, root.parent, root.parent.parent):
        if (folder / MANIFEST).is_file():
            return folder
    return None


def read_sources(root: Path, files: list[Path]) -> tuple[str, ...] | None:
    """The `source` of each file from MANIFEST.csv (matched by relative path, else by file name), or None
    without a manifest. Files the manifest does not list are `unknown`."""
    folder = _manifest_folder(root)
    if folder is None:
        return None
    path = folder / MANIFEST
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {c.lower().strip(): c for c in reader.fieldnames or []}
        file_column = next((columns[c] for c in FILE_COLUMNS if c in columns), None)
        source_column = next((columns[c] for c in SOURCE_COLUMNS if c in columns), None)
        if source_column is None or file_column is None:
            raise DataLayoutError(
                f"{path}: needs a source column ({', '.join(SOURCE_COLUMNS)}) and a file column "
                f"({', '.join(FILE_COLUMNS)}); it has {', '.join(reader.fieldnames or []) or 'no header'}"
            )
        rows = [(r[file_column].strip(), r[source_column].strip()) for r in reader]
    by_path = {name.replace("\\", "/").lstrip("./"): source for name, source in rows}
    by_name = {Path(name).name: source for name, source in rows}
    out = []
    for file in files:
        relative = file.relative_to(folder).as_posix()
        out.append(by_path.get(relative) or by_name.get(file.name) or UNKNOWN_SOURCE)
    return tuple(out)


def load_labeled_folder(root: str | Path, size: int, channels: int) -> LabeledImages:
    """Decode a labelled folder for a model taking (size, size, channels) images."""
    folder, listed, _ = discover_labeled_folder(root)
    digest = files_digest([("eval", f) for f in listed], folder)
    images, kept, skipped = decode_files([f.path for f in listed], size, channels)
    labels = np.array([listed[i].label for i in kept], dtype=np.int32)
    split = Split(images, labels, tuple(listed[i].path.relative_to(folder).as_posix() for i in kept))
    counts = {name: int((labels == label).sum()) for label, name in enumerate(CLASS_NAMES)}
    if min(counts.values()) < MIN_PER_CLASS:
        raise DataUnusableError(
            f"{folder}: too few readable images to evaluate ({', '.join(f'{k} {v}' for k, v in counts.items())}; "
            f"at least {MIN_PER_CLASS} per class are needed, {len(skipped)} file(s) were unreadable). {FOLDER_LAYOUT}"
        )
    sources = read_sources(folder, [listed[i].path for i in kept])
    return LabeledImages(folder, digest, split, sources, tuple(skipped))
