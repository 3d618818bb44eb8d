"""Shared fixtures: seeded runs, a small dataset, a temporary MLflow store.

The dataset fixture copies a small real subset of ../shared/data/cxr-covid when it is there and generates
images otherwise, so the suite passes on a fresh machine without the data too.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite never reads or fills the user's cache of decoded datasets (subprocesses inherit this too).
os.environ["XRAYCNN_CACHE"] = tempfile.mkdtemp(prefix="xraycnn-test-cache-")

import numpy as np
import pytest
from PIL import Image

from xraycnn import paths

REPO = Path(__file__).resolve().parents[1]

# `make test` runs the suite on 2 processes, a file to each at a time (pytest-xdist, --dist loadfile), handing
# out files in collection order (--no-loadscope-reorder: xdist would otherwise hand out the files with the most
# tests first). The longest files go first, so that the last files handed out are short and neither process
# idles at the end while the other finishes a long one: first the file that makes the tiny search the read-only
# files share (so that it is ready before the other process asks for it), then the chaos files (mostly waiting,
# on outages, kills and restarts: the other process runs the rest of the suite beside them), then the longest
# end-to-end files, from the durations pytest prints. A file that grows long belongs in this list.
LONGEST_FIRST = (
    "test_search_integration.py",
    "test_tracking_outages.py",
    "test_distributed_outages.py",
    "test_reliability.py",
    "test_distributed.py",
    "test_disk_full.py",
    "test_experiments.py",
    "test_site_calibration.py",
    "test_browser.py",
    "test_registry.py",
    "test_search.py",
    "test_hypermodel.py",
    "test_bad_input.py",
    "test_gate.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


SHARED_DATA = paths.default_data_candidates()[1]
CLASSES = ("COVID19", "NORMAL")


@pytest.fixture(scope="session", autouse=True)
def _threads_as_the_command_line_sets_them() -> None:
    """TensorFlow's thread pools sized as `xraycnn` sizes them, before any test runs an operation: they cannot
    change afterwards, and the tests run the command line in this process too (tests/tiny_search.py)."""
    from xraycnn.runtime import threads

    threads.configure()


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(0)
    np.random.seed(0)


def synthetic_xray(label: str, index: int, size: int = 128) -> Image.Image:
    """A chest-like film: a bright body, two darker lung fields beside a bright mediastinum, grain that is
    smooth rather than per-pixel (per-pixel noise would make uniform noise look like a film to the input
    guard fitted on these); COVID19 ones carry bright blotches in the lung fields (learnable)."""
    rng = np.random.default_rng(index * 2 + (label == "COVID19"))
    y, x = np.mgrid[0:size, 0:size] / size
    body = 150 + 60 * np.exp(-((x - 0.5) ** 2) / 0.01) - 30 * (y < 0.08)
    for side in (0.3, 0.7):
        lung = ((x - side) / 0.16) ** 2 + ((y - 0.5) / 0.32) ** 2
        body -= 80 * np.clip(1.2 - lung, 0, 1)
    coarse = Image.fromarray(rng.normal(0, 6, (size // 8, size // 8)).astype(np.float32), mode="F")
    grain = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR))
    body += grain + rng.normal(0, 2, (size, size))
    if label == "COVID19":
        for _ in range(6):
            cx, cy, r = rng.choice((0.3, 0.7)) + rng.uniform(-0.08, 0.08), rng.uniform(0.3, 0.7), rng.uniform(0.04, 0.1)
            body += 70 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return Image.fromarray(np.clip(body, 0, 255).astype(np.uint8), mode="L")


def _real_sources() -> dict[str, str]:
    with (SHARED_DATA / "MANIFEST.csv").open(newline="") as handle:
        return {row["file"]: row["source_repo"] for row in csv.DictReader(handle)}


def build_dataset(root: Path, per_class: dict[str, int], real: bool = SHARED_DATA.is_dir()) -> Path:
    """ROOT/{train,test}/{COVID19,NORMAL}/ with `per_class[split]` images each: real ones when available, and
    a MANIFEST.csv naming each image's source (the real dataset's repositories, or two made-up sites)."""
    sources = _real_sources() if real and (SHARED_DATA / "MANIFEST.csv").is_file() else {}
    manifest = ["file,source"]
    for split, n in per_class.items():
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            if real:
                # from both ends of the sorted names: files are named by source, so two sources at least
                names = sorted((SHARED_DATA / split / label).iterdir())
                for src in names[: n - n // 2] + names[len(names) - n // 2 :]:
                    shutil.copyfile(src, folder / src.name)
                    relative = f"{split}/{label}/{src.name}"
                    manifest.append(f"{relative},{sources.get(relative, 'unknown')}")
            else:
                for i in range(n):
                    name = f"{label.lower()}_{i:03d}.jpg"
                    synthetic_xray(label, i + (1000 if split == "test" else 0)).save(folder / name)
                    manifest.append(f"{split}/{label}/{name},site-{'ab'[i % 2]}")
    (root / "MANIFEST.csv").write_text("\n".join(manifest) + "\n")
    return root


def _small(folder: Path) -> Path:
    """36 train and 12 test images per class, in `folder`/cxr."""
    return build_dataset(folder / "cxr", {"train": 36, "test": 12})


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 train and 12 test images per class."""
    return _small(tmp_path_factory.mktemp("small"))


@pytest.fixture
def store_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite MLflow store for one test, made the current one through $MLFLOW_TRACKING_URI."""
    from tests.tiny_search import seed_store

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    seed_store(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="session")
def search(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str):  # -> tiny_search.Search
    """A finished tiny search through the real CLI, shared by the tests that only read what it left. Under
    pytest-xdist it is made once for all the test processes (each works on its own copy)."""
    from tests.tiny_search import run_tiny_search, shared_tiny_search

    if worker_id == "master":
        return run_tiny_search(small_dataset, tmp_path_factory.mktemp("search"))
    shared = tmp_path_factory.getbasetemp().parent / "tiny-search"  # the folder every test process shares
    return shared_tiny_search(_small, shared, tmp_path_factory.mktemp("search"))
