"""The first epoch's one-off costs: the digest of every file, and decoding into the cache."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import SIZE, peak_rss_mib


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
    """First-epoch cost of the project's pipeline: digest, decode and cache write of the whole dataset at the
    default search's and the notebook's size, then the cache read a later search pays instead."""
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    from xraycnn.config import DataConfig
    from xraycnn.data import dataset
    from xraycnn.data.discovery import discover

    files = discover(data_root)
    result: dict[str, Any] = {"images": len(files.train) + len(files.test)}
    started = time.perf_counter()
    dataset.dataset_digest(files)
    result["digest_seconds"] = time.perf_counter() - started
    for size in (64, SIZE):
        config = DataConfig(image_size=size)
        started = time.perf_counter()
        dataset.prepare_data(files, config, seed=1)
        cold = time.perf_counter() - started
        dataset._DECODED.clear()
        started = time.perf_counter()
        dataset.prepare_data(files, config, seed=1)
        warm = time.perf_counter() - started
        result[f"cold_{size}px_seconds"], result[f"cached_{size}px_seconds"] = cold, warm
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    d = result
    figures |= {f"decode_{k}": v for k, v in d.items() if k.endswith("seconds")}
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    d = result
    table.add_row("first-epoch cost: digest of all files", f"{d['digest_seconds']:.1f} s", f"{d['images']} images")
    for size in (64, SIZE):
        table.add_row(
            f"first-epoch cost: decode + cache, {size}px",
            f"{d[f'cold_{size}px_seconds']:.1f} s",
            f"a later search reads the cache in {d[f'cached_{size}px_seconds']:.1f} s (digest included)",
        )
