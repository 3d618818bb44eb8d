"""Evaluation folders: class folders or a training layout's test/, and where each image comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import synthetic_xray
from xraycnn.data.external import UNKNOWN_SOURCE, load_labeled_folder
from xraycnn.errors import DataLayoutError, DataUnusableError


def folder(root: Path, per_class: int = 3) -> Path:
    for label in ("COVID19", "NORMAL"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            synthetic_xray(label, i, 48).save(root / label / f"{label.lower()}_{i}.png")
    return root


def test_class_folders_with_a_manifest(tmp_path: Path) -> None:
    root = folder(tmp_path / "ext")
    (root / "MANIFEST.csv").write_text(
        "File,Source\nCOVID19/covid19_0.png,hospital-a\ncovid19_1.png,hospital-b\nNORMAL/normal_0.png,hospital-a\n"
    )
    data = load_labeled_folder(root, 32, 1)
    assert data.split.images.shape == (6, 32, 32, 1) and data.split.labels.sum() == 3
    sources = dict(zip(data.split.files, data.sources, strict=True))
    assert sources["COVID19/covid19_0.png"] == "hospital-a"
    assert sources["COVID19/covid19_1.png"] == "hospital-b"  # matched by file name
    assert sources["NORMAL/normal_2.png"] == UNKNOWN_SOURCE
    assert data.name == "ext" and len(data.digest) == 32


def test_a_training_layout_gives_its_test_split(tmp_path: Path) -> None:
    folder(tmp_path / "cxr" / "test")
    folder(tmp_path / "cxr" / "train")
    data = load_labeled_folder(tmp_path / "cxr", 32, 1)
    assert data.root == (tmp_path / "cxr" / "test").resolve() and data.name == "cxr/test" and data.sources is None


def test_bad_folders_and_manifests_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="does not exist"):
        load_labeled_folder(tmp_path / "nope", 32, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataLayoutError, match="no NORMAL/ or COVID19/ class folder"):
        load_labeled_folder(tmp_path / "empty", 32, 1)
    root = folder(tmp_path / "ext")
    (root / "MANIFEST.csv").write_text("file,ward\nCOVID19/covid19_0.png,a\n")
    with pytest.raises(DataLayoutError, match=r"needs a source column \(source, source_repo"):
        load_labeled_folder(root, 32, 1)
    few = folder(tmp_path / "few", per_class=1)
    with pytest.raises(DataUnusableError, match="too few readable images"):
        load_labeled_folder(few, 32, 1)
