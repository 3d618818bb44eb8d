"""Peak memory and wall time of the default search's first trials, through the real CLI."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, timed_search


def measure(data_root: Path, workdir: Path, trials: str) -> dict[str, Any]:
    """Peak memory of `xraycnn search experiments/default.toml` (its first `trials` trials, the real CLI)."""
    text = (REPO / "experiments" / "default.toml").read_text()
    capped = re.sub(r"(?m)^max_trials = \d+", f"max_trials = {trials}", text)
    experiment = workdir / "default.toml"
    experiment.write_text(capped)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'store' / 'mlflow.db'}",
        "XRAYCNN_CACHE": str(workdir / "cache"),
    }
    wall = timed_search(experiment, data_root, workdir / "tuner", env)
    return {
        "trials": int(trials),
        "wall_seconds": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def children(options: Any) -> list[tuple[str | None, list[str]]]:
    return [(None, [str(options.memory_trials)])]


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    figures["search_peak_rss_mib"] = result["peak_rss_mib"]
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    mem = result
    table.add_row(
        "peak memory of the default search (target < 4 GiB)",
        f"{mem['peak_rss_mib'] / 1024:.2f} GiB",
        f"`xraycnn search experiments/default.toml`, first {mem['trials']} trial(s), {mem['wall_seconds']:.0f} s",
    )
