"""A real `xraycnn search` run by a benchmark in a throwaway folder (its own tuner state, SQLite store and
reports, so that nothing of the project's store is touched), and its runs read back from that store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def search_command(experiment: str | Path, workdir: Path, overrides: list[str]) -> list[str]:
    """The command line of a fresh search of `experiment` inside `workdir`, with `--set` overrides."""
    return [
        sys.executable,
        "-m",
        "xraycnn",
        "search",
        str(experiment),
        "--fresh",
        "--tuner-dir",
        str(workdir / "tuner"),
        "--tracking-uri",
        store_uri(workdir),
        "--reports-dir",
        str(workdir / "reports"),
        *[arg for override in overrides for arg in ("--set", override)],
    ]


def store_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def search_runs(workdir: Path) -> tuple[Any, list[Any], list[Any]]:
    """(client, the trial runs, the search's parent runs) of the store in `workdir`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(workdir))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10_000)
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("xraycnn.kind") == "search"]
    return client, trials, parents
