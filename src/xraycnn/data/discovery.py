"""Find the dataset and list its files: which folder, which split, which class.

Accepted layouts (class and split names case-insensitive):

    ROOT/{train,test}/{COVID19,NORMAL}/*.jpg             (cxr-covid)
    ROOT/DataSet/Data/{train,test}/{COVID19,NORMAL}/*    (the published notebook's archive)

Anything else is a `DataLayoutError` that names the path and shows the expected layout, raised before
anything is decoded or logged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xraycnn import paths
from xraycnn.errors import DataLayoutError

# Index = label: COVID19 is the positive class (1) everywhere.
CLASS_NAMES: tuple[str, str] = ("NORMAL", "COVID19")
SPLITS: tuple[str, str] = ("train", "test")
NOTEBOOK_PREFIX = ("DataSet", "Data")

EXPECTED_LAYOUT = (
    "expected layout: DATA/train/COVID19/*.jpg, DATA/train/NORMAL/*.jpg, DATA/test/COVID19/*.jpg, "
    "DATA/test/NORMAL/*.jpg (or DATA/DataSet/Data/train|test/...; names case-insensitive)"
)


@dataclass(frozen=True)
class LabeledFile:
    path: Path
    label: int  # index into CLASS_NAMES

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


@dataclass(frozen=True)
class DatasetFiles:
    """Every candidate image of a dataset, in a stable order (split, class, file name)."""

    root: Path  # the folder that holds train/ and test/
    train: tuple[LabeledFile, ...]
    test: tuple[LabeledFile, ...]
    ignored: tuple[Path, ...] = ()  # files xraycnn writes (heatmaps) found among the films, left out

    def relative(self, file: LabeledFile) -> str:
        return file.path.relative_to(self.root).as_posix()


@dataclass(frozen=True)
class Films:
    """The films of some folders, and the files in them that xraycnn wrote (left out, to be said)."""

    files: tuple[Path, ...]
    ignored: tuple[Path, ...] = ()


def _films_in(folder: Path) -> Films:
    """`folder`'s non-hidden files in name order, without those xraycnn writes (`paths.is_derived`)."""
    found = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name)
    return Films(tuple(p for p in found if not paths.is_derived(p)), tuple(p for p in found if paths.is_derived(p)))


def ignored_note(ignored: Sequence[Path]) -> str | None:
    """One line naming the derived files discovery left out, or None."""
    if not ignored:
        return None
    shown = ", ".join(str(p) for p in ignored[:3]) + (f" and {len(ignored) - 3} more" if len(ignored) > 3 else "")
    return f"ignored {len(ignored)} file(s) xraycnn writes (Grad-CAM heatmaps), not films: {shown}"


def _children_by_lower_name(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in folder.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            if child.name.lower() in found:
                raise DataLayoutError(
                    f"{folder}: both {found[child.name.lower()].name}/ and {child.name}/ exist; class and split "
                    f"names are case-insensitive, keep one. {EXPECTED_LAYOUT}"
                )
            found[child.name.lower()] = child
    return found


def _split_root(root: Path) -> Path:
    """`root`, or the notebook's `root/DataSet/Data` when that is where train/ and test/ are."""
    folder = root
    for part in NOTEBOOK_PREFIX:
        child = _children_by_lower_name(folder).get(part.lower())
        if child is None:
            return root
        folder = child
    return folder


def _list_split(split_dir: Path) -> tuple[tuple[LabeledFile, ...], tuple[Path, ...]]:
    """The split's labelled films, and the derived files left out."""
    classes = _children_by_lower_name(split_dir)
    wanted = {name.lower(): label for label, name in enumerate(CLASS_NAMES)}
    unknown = sorted(name for lower, name in ((k, v.name) for k, v in classes.items()) if lower not in wanted)
    if unknown:
        raise DataLayoutError(
            f"{split_dir}: unknown class folder(s) {', '.join(unknown)}; only {' and '.join(CLASS_NAMES)} are "
            f"used (move the others out). {EXPECTED_LAYOUT}"
        )
    files: list[LabeledFile] = []
    ignored: list[Path] = []
    for lower, label in sorted(wanted.items(), key=lambda kv: kv[1], reverse=True):
        folder = classes.get(lower)
        if folder is None:
            raise DataLayoutError(f"{split_dir}: class folder {CLASS_NAMES[label]}/ is missing. {EXPECTED_LAYOUT}")
        films = _films_in(folder)
        if not films.files:
            raise DataLayoutError(f"{folder}: class folder is empty. {EXPECTED_LAYOUT}")
        files.extend(LabeledFile(p, label) for p in films.files)
        ignored.extend(films.ignored)
    return tuple(files), tuple(ignored)


def discover(root: str | Path) -> DatasetFiles:
    """List `root`'s images by split and class; raise `DataLayoutError` on any other layout."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataLayoutError(f"dataset folder {root} does not exist. {EXPECTED_LAYOUT}")
    if not root.is_dir():
        raise DataLayoutError(f"dataset path {root} is not a folder. {EXPECTED_LAYOUT}")
    root = root.resolve()
    base = _split_root(root)
    splits = _children_by_lower_name(base)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataLayoutError(f"{base}: {' and '.join(m + '/' for m in missing)} missing. {EXPECTED_LAYOUT}")
    train, ignored_train = _list_split(splits["train"])
    test, ignored_test = _list_split(splits["test"])
    return DatasetFiles(base, train, test, ignored_train + ignored_test)


def resolve_data_root(cli: str | Path | None = None, in_experiment: str | Path | None = None) -> Path:
    """The dataset folder: the CLI's --data, then $XRAYCNN_DATA, then the experiment's data.root, then the
    repo's data/, then ../shared/data/cxr-covid beside the repo."""
    for explicit in (cli, os.environ.get(paths.DATA_ENV) or None, in_experiment):
        if explicit:
            return Path(explicit).expanduser()
    candidates = paths.default_data_candidates()
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DataLayoutError(
        "no dataset found: looked in " + ", ".join(str(c) for c in candidates) + f"; set ${paths.DATA_ENV}, "
        "pass --data DIR or set data.root in the experiment file. " + EXPECTED_LAYOUT
    )


FOLDER_LAYOUT = (
    "expected layout: DIR/COVID19/*.jpg and DIR/NORMAL/*.jpg (names case-insensitive; optional DIR/MANIFEST.csv "
    "with columns file and source), or a training layout, whose test/ is used"
)


def discover_labeled_folder(root: str | Path) -> tuple[Path, tuple[LabeledFile, ...], tuple[Path, ...]]:
    """An evaluation set: `root`'s class folders, or the test split of a training layout. Returns the folder
    the class folders are in, the files in a stable order and the derived files left out."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataLayoutError(f"evaluation folder {root} does not exist or is not a folder. {FOLDER_LAYOUT}")
    root = root.resolve()
    children = _children_by_lower_name(root)
    if any(name.lower() in children for name in CLASS_NAMES):
        return root, *_list_split(root)
    base = _split_root(root)
    split = _children_by_lower_name(base).get("test")
    if split is not None:
        return split, *_list_split(split)
    raise DataLayoutError(f"{root}: no {' or '.join(n + '/' for n in CLASS_NAMES)} class folder. {FOLDER_LAYOUT}")


def discover_films(folder: str | Path) -> tuple[Path, Films]:
    """The films of one unlabelled folder (a site's normal films): every non-hidden file in it but those
    xraycnn writes, in name order. Raises `DataLayoutError` when there is none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataLayoutError(
            f"film folder {folder} does not exist or is not a folder; give the folder that holds the films"
        )
    folder = folder.resolve()
    films = _films_in(folder)
    if not films.files:
        inside = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = f" (it holds the folder(s) {', '.join(inside[:5])}: give the one with the films)" if inside else ""
        raise DataLayoutError(f"{folder}: no film in this folder{hint}")
    return folder, films
