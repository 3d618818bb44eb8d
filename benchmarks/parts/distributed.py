"""A distributed search with 2 workers against 1 on the same budget, and what a logged metric costs through
a tracking server against SQLite directly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import timed_search

DISTRIBUTED_EXPERIMENT = """
seed = 21
[data]
image_size = 64
[space]
conv_blocks = 2
filters = [16, 32]
kernel_size = 3
dropout = { values = [0.1, 0.2, 0.3] }
dense_units = 64
learning_rate = { min = 1e-3, max = 3e-3 }
batch_size = 32
epochs = 2
[tuner]
algorithm = "random"
[budget]
max_trials = 4
max_epochs = 2
[registry]
model_name = "bench-distributed"
"""


_WARM_CACHE = """
from xraycnn.config import DataConfig
from xraycnn.data.dataset import prepare_data
from xraycnn.data.discovery import discover
prepare_data(discover({root!r}), DataConfig(image_size=64), 21)
"""


def _metric_cost(workdir: Path) -> dict[str, float]:
    """Milliseconds per metric of per-epoch `log_batch` calls (10 metrics each, as a trial logs them)."""
    from mlflow.tracking import MlflowClient

    from xraycnn.tracking.runs import RunLogger
    from xraycnn.tracking.server import tracking_server

    def per_metric_ms(uri: str) -> float:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment(f"cost-{time.time_ns()}")
        runs = RunLogger(client)
        run_id = client.create_run(experiment_id).info.run_id
        calls, names = 100, [f"m{i}" for i in range(10)]
        started = time.perf_counter()
        for step in range(calls):
            runs.log_metrics(run_id, dict.fromkeys(names, 0.5), step=step)
        return 1000 * (time.perf_counter() - started) / (calls * len(names))

    db = workdir / "cost" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    direct = per_metric_ms(f"sqlite:///{db}")
    with tracking_server(f"sqlite:///{db}", workdir / "cost" / "artifacts", workdir / "cost" / "server.log") as url:
        served = per_metric_ms(url)
    return {"metric_ms_sqlite_direct": direct, "metric_ms_tracking_server": served}


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
    """The same 4-trial budget through `xraycnn search --workers 1` and `--workers 2` (tracking server,
    chief, workers: the real CLI), and what one logged metric costs through a tracking server vs SQLite."""
    experiment = workdir / "distributed.toml"
    experiment.write_text(DISTRIBUTED_EXPERIMENT)
    env = {**os.environ, "XRAYCNN_CACHE": str(workdir / "cache")}
    # Decode once into the cache first, so neither side pays for it.
    subprocess.run([sys.executable, "-c", _WARM_CACHE.format(root=str(data_root))], env=env, check=True)
    result: dict[str, Any] = {"trials": 4, "epochs_per_trial": 2}
    for workers in (1, 2):
        store = workdir / f"w{workers}"
        result[f"wall_seconds_{workers}_workers"] = timed_search(
            experiment,
            data_root,
            store / "tuner",
            env,
            "--workers",
            str(workers),
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
        )
    result |= _metric_cost(workdir)
    return result


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    d = result
    figures |= {
        "distributed_wall_seconds_1_worker": d["wall_seconds_1_workers"],
        "distributed_wall_seconds_2_workers": d["wall_seconds_2_workers"],
        "distributed_speedup_2_over_1": d["wall_seconds_1_workers"] / d["wall_seconds_2_workers"],
        "metric_ms_sqlite_direct": d["metric_ms_sqlite_direct"],
        "metric_ms_tracking_server": d["metric_ms_tracking_server"],
    }
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    table.add_row(
        "distributed: 2 workers over 1, same 4-trial budget",
        f"{figures['distributed_speedup_2_over_1']:.2f}x",
        f"{figures['distributed_wall_seconds_1_worker']:.0f} s vs "
        f"{figures['distributed_wall_seconds_2_workers']:.0f} s wall, `xraycnn search --workers N` "
        f"(server, chief, workers) on {machine['cores']} cores",
    )
    table.add_row(
        "ms per logged metric: tracking server / SQLite direct",
        f"{figures['metric_ms_tracking_server']:.2f} / {figures['metric_ms_sqlite_direct']:.2f}",
        "per-epoch log_batch of 10 metrics, 100 calls",
    )
