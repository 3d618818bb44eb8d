"""Inference images per second of registered models loaded by name."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import SIZE, notebook_network, peak_rss_mib


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
    """Images/s of a model loaded by name from the registry: the notebook's network registered in a
    temporary store, and the project's own champion when there is one."""
    from xraycnn.runtime import threads

    threads.configure()
    import mlflow
    import numpy as np

    from xraycnn import paths
    from xraycnn.data.discovery import discover
    from xraycnn.data.images import decode_files
    from xraycnn.errors import ModelNotFoundError
    from xraycnn.registry import Selection, load_keras_model, log_and_register
    from xraycnn.runtime.precision import apply_policy
    from xraycnn.tracking.store import resolve_store

    apply_policy("auto")
    files = discover(data_root)
    test_paths = [f.path for f in files.test]
    result: dict[str, Any] = {"images": len(test_paths)}

    def rate(model: Any, size: int, channels: int) -> float:
        images = decode_files(test_paths, size, channels)[0].astype(np.float32)
        model.predict(images[:256], batch_size=256, verbose=0)  # warm up: tracing, allocation
        started = time.perf_counter()
        model.predict(images, batch_size=256, verbose=0)
        return len(images) / (time.perf_counter() - started)

    resolve_store(f"sqlite:///{workdir / 'store' / 'mlflow.db'}")
    model, _ = notebook_network(1, augment_in_model=False)
    with mlflow.start_run():
        log_and_register(
            model,
            model_name="bench-notebook",
            objective="val_auc",
            selection=Selection(0.5),
            direction="max",
            tags={},
            description="bench",
        )
    loaded = load_keras_model("models:/bench-notebook@champion")
    result["notebook_150px_images_per_s"] = rate(loaded, SIZE, 1)

    project_store = f"sqlite:///{paths.mlruns_dir() / 'mlflow.db'}"
    if (paths.mlruns_dir() / "mlflow.db").is_file():
        resolve_store(project_store)
        try:
            champion = load_keras_model("models:/xraycnn@champion")
        except ModelNotFoundError:  # no champion yet: the row says so
            champion = None
        if champion is not None:
            from xraycnn.data.images import input_shape_of

            size, _, channels = input_shape_of(champion)
            result["champion_size"] = size
            result["champion_images_per_s"] = rate(champion, size, channels)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    figures |= {f"inference_{k}": v for k, v in result.items() if k.endswith("per_s")}
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    i = result
    table.add_row(
        "inference img/s: registered notebook net, loaded by name",
        f"{i['notebook_150px_images_per_s']:.0f}",
        f"{i['images']} test films, {SIZE}px, batch 256",
    )
    if "champion_images_per_s" in i:
        table.add_row(
            "inference img/s: models:/xraycnn@champion",
            f"{i['champion_images_per_s']:.0f}",
            f"{i['champion_size']}px",
        )
