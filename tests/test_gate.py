"""The shortcut gate through the real CLI: films whose only class signal is a burned-in marker in a corner.
A network that sees the whole film reads the marker (the best val_auc, and a borders-only AUC near 1); one
that crops to the lungs cannot. Under `max_borders_only_auc = 0.6` the cropping network is the champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.tiny_search import seed_store, xraycnn

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)

EXPERIMENT = """
seed = 11
[data]
root = "{root}"
image_size = 64
[data.preprocess]
crop = {{ values = [false, true] }}
[data.augmentation]
zoom = 0.0
horizontal_flip = false
[space]
conv_blocks = 1
filters = 8
kernel_size = 3
dropout = 0.0
dense_units = 16
learning_rate = 1e-3
batch_size = 8
epochs = 4
[tuner]
algorithm = "random"
max_borders_only_auc = 0.6
[budget]
max_trials = 2
max_epochs = 4
[training]
early_stopping_patience = 4
precision = "float32"
[registry]
model_name = "gated"
"""


def marker_films(root: Path, per_class: dict[str, int]) -> Path:
    """Dark noise films; every NORMAL one carries a bright 'L' marker in its top-right corner, outside
    the lung box (as one hospital's films do in cxr-covid); nothing else tells the classes apart."""
    rng = np.random.default_rng(3)
    for split, n in per_class.items():
        for label in ("COVID19", "NORMAL"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                film = rng.normal(30, 10, (128, 128))
                if label == "NORMAL":
                    film[0:9, 114:118] = 255  # the L's stem, in the top-right corner
                    film[5:9, 114:127] = 255  # and foot
                Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).save(folder / f"{label}-{i}.png")
    return root


def test_a_trial_over_the_gate_never_becomes_champion(tmp_path: Path) -> None:
    root = marker_films(tmp_path / "films", {"train": 30, "test": 10})
    (tmp_path / "gated.toml").write_text(EXPERIMENT.format(root=root))
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    seed_store(uri)  # an empty store as MLflow makes it, made once
    result = xraycnn(
        "search",
        str(tmp_path / "gated.toml"),
        "--tuner-dir",
        str(tmp_path / "tuner"),
        "--reports-dir",
        str(tmp_path / "reports"),
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr
    assert "Selection: trials ranked by val_auc (max) on validation, gated: a trial whose validation AUC" in " ".join(
        result.stdout.split()
    )
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("xraycnn-gated")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    trials = {r.data.params["preprocess_crop"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    whole, cropped = trials["False"], trials["True"]
    # the whole film reads the marker: the best val_auc of the two, and its borders alone carry it
    assert whole.data.metrics["best_val_auc"] > cropped.data.metrics["best_val_auc"]
    assert whole.data.metrics["best_val_borders_only_auc"] > 0.9 and whole.data.tags["xraycnn.gate"] == "fail"
    assert cropped.data.metrics["best_val_borders_only_auc"] == 0.5 and cropped.data.tags["xraycnn.gate"] == "pass"
    # every epoch carries its borders-only AUC and the gated score the tuner ranked it by
    steps = client.get_metric_history(whole.info.run_id, "val_gated_auc")
    auc = {m.step: m.value for m in client.get_metric_history(whole.info.run_id, "val_auc")}
    borders = {m.step: m.value for m in client.get_metric_history(whole.info.run_id, "val_borders_only_auc")}
    assert len(steps) == 4 and all(
        m.value == (auc[m.step] - 100 if borders[m.step] > 0.6 else auc[m.step]) for m in steps
    )

    version = client.get_model_version_by_alias("gated", "champion")
    assert version.tags["xraycnn.trial_run_id"] == cropped.info.run_id
    assert (
        version.tags["xraycnn.val_borders_only_auc"] == "0.5"
        and version.tags["xraycnn.gate_max_borders_only_auc"] == "0.6"
    )
    assert parent.data.tags["xraycnn.best_run_id"] == cropped.info.run_id
    assert (
        "gated" in parent.data.tags["xraycnn.selection_rule"]
        and parent.data.params["tuner.max_borders_only_auc"] == "0.6"
    )
    assert parent.data.metrics["best_val_auc"] == cropped.data.metrics["best_val_auc"]
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))
    assert list(table["run_id"]) == [cropped.info.run_id, whole.info.run_id]  # over the gate: ranked last
    assert list(table["gate"]) == ["pass", "fail"]
