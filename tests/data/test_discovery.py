from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import build_dataset
from xraycnn import paths
from xraycnn.data.discovery import (
    CLASS_NAMES,
    discover,
    discover_films,
    discover_labeled_folder,
    ignored_note,
    resolve_data_root,
)
from xraycnn.errors import DataLayoutError


def test_covid19_is_label_one() -> None:
    assert CLASS_NAMES.index("COVID19") == 1 and CLASS_NAMES.index("NORMAL") == 0


def test_lists_both_splits_with_labels(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "d", {"train": 3, "test": 2}, real=False)
    files = discover(root)
    assert files.root == root.resolve()
    assert len(files.train) == 6 and len(files.test) == 4
    assert {f.class_name for f in files.train} == {"COVID19", "NORMAL"}
    for f in files.train + files.test:
        assert f.label == (1 if f.path.parent.name == "COVID19" else 0)
    assert files.relative(files.test[0]).startswith("test/")


def test_accepts_the_notebook_layout_and_any_case(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    build_dataset(root / "DataSet" / "Data", {"train": 2, "test": 2}, real=False)
    (root / "DataSet" / "Data" / "train" / "COVID19").rename(root / "DataSet" / "Data" / "train" / "covid19")
    (root / "DataSet" / "Data" / "test").rename(root / "DataSet" / "Data" / "Test")
    files = discover(root)
    assert files.root == (root / "DataSet" / "Data").resolve()
    assert sum(f.label for f in files.train) == 2 and sum(f.label for f in files.test) == 2


def test_hidden_files_are_not_images(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "d", {"train": 2, "test": 2}, real=False)
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    assert len(discover(root).train) == 4


def test_heatmaps_among_the_films_are_left_out_and_named(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "d", {"train": 2, "test": 2}, real=False)
    heatmap = root / "test" / "NORMAL" / "n0.gradcam.png"
    heatmap.write_bytes(b"png")
    files = discover(root)
    assert len(files.test) == 4 and files.ignored == (heatmap.resolve(),)
    _, listed, ignored = discover_labeled_folder(root / "test")
    assert len(listed) == 4 and ignored == (heatmap.resolve(),)
    _, films = discover_films(root / "test" / "NORMAL")
    assert heatmap.resolve() not in films.files and films.ignored == (heatmap.resolve(),)
    note = ignored_note(films.ignored)
    assert note is not None and "n0.gradcam.png" in note and "1 file(s)" in note
    assert ignored_note(()) is None


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: __import__("shutil").rmtree(r / "test"), "test/ missing"),
        (lambda r: __import__("shutil").rmtree(r / "train" / "NORMAL"), "class folder NORMAL/ is missing"),
        (lambda r: [p.unlink() for p in (r / "test" / "COVID19").iterdir()], "class folder is empty"),
        (lambda r: (r / "train" / "PNEUMONIA").mkdir(), "unknown class folder(s) PNEUMONIA"),
        (lambda r: (r / "train" / "normal").mkdir(), "names are case-insensitive"),
    ],
)
def test_bad_layouts_name_the_path_and_the_expected_layout(tmp_path: Path, breakage, message: str) -> None:
    root = build_dataset(tmp_path / "d", {"train": 2, "test": 2}, real=False)
    breakage(root)
    with pytest.raises(DataLayoutError) as error:
        discover(root)
    assert message in str(error.value)
    assert str(root.resolve()) in str(error.value) and "expected layout" in str(error.value)


def test_a_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="does not exist"):
        discover(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataLayoutError, match="is not a folder"):
        discover(tmp_path / "file.txt")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "repo"))
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    with pytest.raises(DataLayoutError, match="no dataset found"):
        resolve_data_root()
    shared = tmp_path / "shared" / "data" / "cxr-covid"
    shared.mkdir(parents=True)
    assert resolve_data_root() == shared
    (tmp_path / "repo" / "data").mkdir(parents=True)
    assert resolve_data_root() == tmp_path / "repo" / "data"
    assert resolve_data_root(in_experiment=tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "env"))
    assert resolve_data_root(in_experiment=tmp_path / "x") == tmp_path / "env"
    assert resolve_data_root(cli=tmp_path / "cli") == tmp_path / "cli"
