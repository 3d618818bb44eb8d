from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build_dataset
from xraycnn.config import DataConfig
from xraycnn.data import cache, dataset
from xraycnn.data.dataset import dataset_digest, prepare_data
from xraycnn.data.discovery import discover
from xraycnn.errors import DataUnusableError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_dataset(tmp_path / "d", {"train": 10, "test": 3}, real=False)


def test_validation_is_a_stratified_seeded_share_of_train(root: Path) -> None:
    data = prepare_data(discover(root), DataConfig(image_size=16), seed=5)
    assert data.val.class_counts() == {"COVID19": 2, "NORMAL": 2}
    assert data.train.class_counts() == {"COVID19": 8, "NORMAL": 8}
    assert data.test.class_counts() == {"COVID19": 3, "NORMAL": 3}
    assert not set(data.val.files) & set(data.train.files)
    assert all(f.startswith("train/") for f in data.val.files)
    again = prepare_data(discover(root), DataConfig(image_size=16), seed=5)
    other = prepare_data(discover(root), DataConfig(image_size=16), seed=6)
    assert again.val.files == data.val.files and other.val.files != data.val.files
    for split in (data.train, data.val, data.test):
        assert split.images.shape == (len(split), 16, 16, 1) and split.images.dtype == np.uint8
        assert split.labels.tolist() == [int("/COVID19/" in f) for f in split.files]
    assert data.summary()["data.val_images"] == 4 and data.input_shape == (16, 16, 1)


def test_each_image_is_decoded_once_per_process(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset, "_DECODED", {})
    calls = []
    real = dataset.decode_files
    monkeypatch.setattr(dataset, "decode_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    config = DataConfig(image_size=20, color_mode="rgb")
    first = prepare_data(discover(root), config, seed=1)
    second = prepare_data(discover(root), config, seed=2)
    assert len(calls) == 2  # train and test, the first time only
    assert first.test.images is second.test.images


def test_digest_follows_the_bytes_and_the_labels(root: Path) -> None:
    digest = dataset_digest(discover(root))
    assert len(digest) == 32 and digest == dataset_digest(discover(root))
    image = next((root / "train" / "NORMAL").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    changed = dataset_digest(discover(root))
    assert changed != digest
    image.rename(root / "train" / "COVID19" / image.name)
    assert dataset_digest(discover(root)) not in (digest, changed)


def test_unreadable_files_are_skipped_and_listed(root: Path) -> None:
    (root / "train" / "COVID19" / "empty.jpg").write_bytes(b"")
    (root / "test" / "NORMAL" / "notes.png").write_text("not an image")
    data = prepare_data(discover(root), DataConfig(image_size=16), seed=1)
    assert len(data.train) + len(data.val) == 20 and len(data.test) == 6
    assert sorted(Path(s.path).name for s in data.skipped) == ["empty.jpg", "notes.png"]
    assert data.summary()["data.skipped_files"] == 2


def test_too_few_readable_images_is_a_clear_error(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "d", {"train": 10, "test": 2}, real=False)
    for p in list((root / "test" / "COVID19").iterdir())[:1]:
        p.write_bytes(b"")
    with pytest.raises(DataUnusableError, match=r"test has 1 COVID19 image\(s\).*1 file\(s\) were unreadable"):
        prepare_data(discover(root), DataConfig(image_size=16), seed=1)


def test_a_later_process_reads_the_decoded_arrays_from_disk(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = DataConfig(image_size=24)
    monkeypatch.setattr(dataset, "_DECODED", {})
    (root / "test" / "NORMAL" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    first = prepare_data(discover(root), config, seed=1)
    entry = cache.entry_path(first.digest, 24, 1)
    assert entry.is_file()

    monkeypatch.setattr(dataset, "_DECODED", {})  # a new process, as far as the data is concerned
    monkeypatch.setattr(dataset, "decode_files", lambda *a, **k: pytest.fail("decoded again"))
    second = prepare_data(discover(root), config, seed=1)
    np.testing.assert_array_equal(second.test.images, first.test.images)
    assert second.val.files == first.val.files and second.skipped == first.skipped

    entry.write_bytes(b"truncated")  # a damaged cache entry is never trusted: decode again and rewrite it
    monkeypatch.undo()
    monkeypatch.setattr(dataset, "_DECODED", {})
    third = prepare_data(discover(root), config, seed=1)
    np.testing.assert_array_equal(third.train.images, first.train.images)
    assert cache.load(entry) is not None
