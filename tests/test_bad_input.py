"""Bad input through the real CLI: a data folder full of broken and odd files, folder layouts that are
wrong, and data with too little left to use. Each gets one clear message, and a layout or data problem is
found before anything is written to MLflow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests import image_zoo
from tests.conftest import build_dataset
from tests.tiny_search import xraycnn

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)

# One trial of one epoch on a tiny network: the data handling is what is under test.
EXPERIMENT = """
seed = 5
[data]
image_size = 32
[space]
conv_blocks = 1
filters = [4]
kernel_size = 3
dropout = 0.1
dense_units = 8
learning_rate = 1e-3
batch_size = 16
epochs = 1
[tuner]
algorithm = "random"
[budget]
max_trials = 1
max_epochs = 1
[registry]
model_name = "xraycnn-zoo"
"""


def search(
    tmp_path: Path, root: Path, experiment: str = EXPERIMENT, name: str = "zoo.toml", isolated: bool = False
) -> tuple:
    (tmp_path / name).write_text(experiment)
    db = tmp_path / "store" / "mlflow.db"
    result = xraycnn(
        "search",
        str(tmp_path / name),
        "--data",
        str(root),
        "--tuner-dir",
        str(tmp_path / "tuner"),
        "--reports-dir",
        str(tmp_path / "reports"),
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
        isolated=isolated,
    )
    return result, db


def one_clear_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def test_broken_files_are_skipped_listed_and_logged(small_dataset: Path, tmp_path: Path) -> None:
    root = shutil.copytree(small_dataset, tmp_path / "data")
    unusable = image_zoo.write(root / "train" / "COVID19", image_zoo.UNUSABLE)
    unusable += image_zoo.write(root / "test" / "NORMAL", {"cut.jpg": image_zoo.UNUSABLE["truncated.jpg"]})
    image_zoo.write(root / "train" / "NORMAL", image_zoo.UNUSUAL)

    result, db = search(tmp_path, root)
    assert result.returncode == 0, result.stderr
    assert f"Skipped {len(unusable)} unreadable file(s)" in result.stdout

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("xraycnn-zoo")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`xraycnn.kind` = 'search'")
    assert parent.info.status == "FINISHED"
    skipped = pd.read_csv(client.download_artifacts(parent.info.run_id, "data/skipped_files.csv", str(tmp_path)))
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert set(reasons) == {str(p) for p in unusable}
    for path in unusable:
        name = "truncated.jpg" if path.name == "cut.jpg" else path.name
        assert image_zoo.UNUSABLE[name][1] in reasons[str(path)]
    # every readable file is used, the odd-but-valid ones included
    params = parent.data.params
    train_files = sum(1 for split in ("COVID19", "NORMAL") for _ in (small_dataset / "train" / split).iterdir())
    test_files = sum(1 for split in ("COVID19", "NORMAL") for _ in (small_dataset / "test" / split).iterdir())
    assert int(params["data.train_images"]) + int(params["data.val_images"]) == train_files + len(image_zoo.UNUSUAL)
    assert int(params["data.test_images"]) == test_files
    assert params["data.skipped_files"] == str(len(unusable))


def test_too_little_left_is_one_clear_error_before_logging(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "data", {"train": 4, "test": 2}, real=False)
    for image in (root / "test" / "COVID19").iterdir():
        image.write_bytes(b"")
    image_zoo.write(root / "test" / "COVID19", {"text.png": image_zoo.UNUSABLE["text.png"]})

    result, db = search(tmp_path, root, isolated=True)  # a process of its own: nothing on stderr but our line
    assert result.returncode == 2
    line = one_clear_line(result.stderr)
    assert "too few readable images" in line and "test has 0 COVID19 image(s)" in line
    assert "3 file(s) were unreadable, e.g. test/COVID19/" in line and "empty file (0 bytes)" in line
    assert not db.exists()


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: shutil.rmtree(r / "train"), "train/ missing"),
        (lambda r: shutil.rmtree(r / "test"), "test/ missing"),
        (lambda r: shutil.rmtree(r / "test" / "COVID19"), "class folder COVID19/ is missing"),
        (lambda r: [p.unlink() for p in (r / "train" / "NORMAL").iterdir()], "class folder is empty"),
        (lambda r: (r / "train" / "PNEUMONIA").mkdir(), "unknown class folder(s) PNEUMONIA"),
        (lambda r: shutil.rmtree(r), "does not exist"),
    ],
    ids=["no-train", "no-test", "one-class-only", "empty-class", "extra-class", "no-such-path"],
)
def test_bad_layout_is_one_clear_error_before_logging(tmp_path: Path, breakage, message: str) -> None:
    root = build_dataset(tmp_path / "data", {"train": 2, "test": 2}, real=False)
    breakage(root)
    result, db = search(tmp_path, root)
    assert result.returncode == 2
    line = one_clear_line(result.stderr)
    assert message in line and str(root.resolve()) in line
    if message != "does not exist":
        assert "expected layout" in line
    assert not db.exists()  # the store is not even opened


def test_input_is_checked_before_tensorflow_is_imported(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[space]\nconv_blocks = { min = 3, max = 2 }\n")
    probe = (
        "import sys\nfrom xraycnn.cli import main\n"
        f"code = main(['search', {str(tmp_path / 'bad.toml')!r}])\n"
        "assert code == 2, code\nassert 'tensorflow' not in sys.modules and 'mlflow' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "bad.toml: space.conv_blocks: min (3) must be smaller than max (2)" in one_clear_line(result.stderr)


def test_a_missing_image_is_named_before_tensorflow_is_imported(tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom xraycnn.cli import main\n"
        f"code = main(['predict', {str(tmp_path / 'nosuch.jpg')!r}])\n"
        "assert code == 2, code\nassert 'tensorflow' not in sys.modules and 'mlflow' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"no such file: {tmp_path / 'nosuch.jpg'}" in one_clear_line(result.stderr)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[data.preprocess]\nsharpen = true\n", "bad.toml: data.preprocess.sharpen: unknown key"),
        ("[data.augmentation]\nmixup = 0.2\n", "bad.toml: data.augmentation.mixup: unknown key"),
        ("[tuner]\nmax_borders_only_auc = 0.3\n", "bad.toml: tuner.max_borders_only_auc: Input should be greater"),
        (
            "[data]\nimage_size = 18\n[data.preprocess]\ncrop = true\n",
            "bad.toml: data.preprocess.box: [0.1, 0.85, 0.12, 0.88] crops a 18px film to 13x14 pixels",
        ),
    ],
    ids=["preprocess-key", "augmentation-key", "gate", "crop-box"],
)
def test_bad_preprocessing_augmentation_or_gate_is_one_line_and_logs_nothing(
    small_dataset: Path, tmp_path: Path, text: str, message: str
) -> None:
    result, db = search(tmp_path, small_dataset, text, "bad.toml")
    assert result.returncode == 2
    assert message in one_clear_line(result.stderr)
    assert not db.exists() and not (tmp_path / "tuner").exists()
