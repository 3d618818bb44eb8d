from __future__ import annotations

from pathlib import Path

import pytest

from xraycnn.errors import DataLayoutError
from xraycnn.jobs.heatmaps import check_images, heatmap_dir, heatmap_paths


def _films(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        out.append(path)
    return out


def test_films_of_one_name_in_two_folders_keep_a_heatmap_each(tmp_path: Path) -> None:
    films = _films(tmp_path / "data", "a/x.jpg", "b/x.jpg", "b/y.png")
    out = tmp_path / "maps"
    targets = heatmap_paths(films, out)
    assert targets == [out / "a" / "x.gradcam.png", out / "b" / "x.gradcam.png", out / "b" / "y.gradcam.png"]
    assert heatmap_paths(films[:1], out) == [out / "x.gradcam.png"]


def test_the_default_folder_is_new_and_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    films = _films(tmp_path / "data", "NORMAL/x.jpg")
    monkeypatch.chdir(tmp_path)
    assert heatmap_dir(films, None) == tmp_path / "heatmaps"
    (tmp_path / "heatmaps").mkdir()
    assert heatmap_dir(films, None) == tmp_path / "heatmaps-2"


@pytest.mark.parametrize("inside", ["", "sub"])
def test_a_folder_of_films_is_refused(tmp_path: Path, inside: str) -> None:
    films = _films(tmp_path / "data", "NORMAL/x.jpg", "COVID19/y.jpg")
    with pytest.raises(DataLayoutError, match="heatmaps never go among the films"):
        heatmap_dir(films, films[1].parent / inside)
    assert heatmap_dir(films, tmp_path / "data" / "maps") == (tmp_path / "data" / "maps").resolve()


def test_missing_images_and_folders_are_named(tmp_path: Path) -> None:
    (tmp_path / "films").mkdir()
    with pytest.raises(DataLayoutError, match=r"no such file: .*nosuch\.jpg"):
        check_images([tmp_path / "nosuch.jpg"])
    with pytest.raises(DataLayoutError, match="a folder, not an image file"):
        check_images([tmp_path / "films"])
