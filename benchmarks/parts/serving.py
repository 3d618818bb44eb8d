"""`xraycnn serve` over the default search's champion: one-image latency, images per second one image per
request and in batches, against `xraycnn predict` on the same films."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import default_champion

SERVING_SEQUENTIAL = 300  # one-image requests, one after another, for the latency percentiles


SERVING_CONCURRENT = 400  # one-image requests from SERVING_CLIENTS clients at once


SERVING_CLIENTS = 4


SERVING_BATCH = 32


SERVING_BATCHES = 20


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
    """`xraycnn serve` on the default search's champion (127.0.0.1): latency of one-image requests, throughput
    with 4 concurrent clients and with batches of 32 images per request; `xraycnn predict`'s in-process rate
    on the same films for reference, and the largest difference between their probabilities."""
    import base64
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from xraycnn.runtime.local_http import free_port, wait_until_answering

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'store' / 'mlflow.db'}",
        "XRAYCNN_CACHE": str(workdir / "cache"),
    }
    search_started = time.perf_counter()
    model_uri = default_champion(data_root, workdir, env)
    search_seconds = time.perf_counter() - search_started
    films = sorted((data_root / "test").glob("*/*.jpg"))[: SERVING_BATCH * SERVING_BATCHES]
    payloads = [base64.b64encode(f.read_bytes()).decode() for f in films]

    def body(images: list[str]) -> bytes:
        return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}).encode()

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def post(data: bytes) -> list[dict[str, Any]]:
        request = urllib.request.Request(f"{url}/invocations", data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["predictions"]

    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("xraycnn")), "serve", "--model", model_uri, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        wait_until_answering(f"{url}/ping", server, 300, "xraycnn serve")
        startup_seconds = time.perf_counter() - started
        for i in range(10):  # warm-up: the first calls trace the network
            post(body([payloads[i]]))
        latencies = []
        for i in range(SERVING_SEQUENTIAL):
            t0 = time.perf_counter()
            post(body([payloads[i % len(payloads)]]))
            latencies.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SERVING_CLIENTS) as pool:
            list(pool.map(lambda i: post(body([payloads[i % len(payloads)]])), range(SERVING_CONCURRENT)))
        concurrent_seconds = time.perf_counter() - t0
        batches = [payloads[i : i + SERVING_BATCH] for i in range(0, len(payloads), SERVING_BATCH)]
        t0 = time.perf_counter()
        served = [answer for batch in batches for answer in post(body(batch))]
        batch_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SERVING_CLIENTS) as pool:
            list(pool.map(lambda batch: post(body(batch)), batches))
        batch_concurrent_seconds = time.perf_counter() - t0
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    from rich.console import Console

    from xraycnn.jobs.predict import run_predict

    quiet = Console(file=io.StringIO())
    run_predict(model_uri, films[:SERVING_BATCH], console=quiet)  # loads and traces, like the warm-up above
    t0 = time.perf_counter()
    predicted = run_predict(model_uri, films, console=quiet)
    predict_seconds = time.perf_counter() - t0
    differences = [abs(a["probability_covid19"] - p.probability) for a, p in zip(served, predicted, strict=True)]
    calls_equal = all(a["call"] == p.label for a, p in zip(served, predicted, strict=True))
    import numpy as np

    def percentile(q: float) -> float:
        return float(np.percentile(latencies, q))

    return {
        "model": model_uri,
        "search_seconds": search_seconds,
        "films": len(films),
        "film_bytes_mean": sum(f.stat().st_size for f in films) / len(films),
        "startup_seconds": startup_seconds,
        "latency_ms_p50": percentile(50),
        "latency_ms_p95": percentile(95),
        "latency_ms_p99": percentile(99),
        "latency_ms_mean": sum(latencies) / len(latencies),
        "single_concurrent_images_per_s": SERVING_CONCURRENT / concurrent_seconds,
        "batch_images_per_s": len(films) / batch_seconds,
        "batch_concurrent_images_per_s": len(films) / batch_concurrent_seconds,
        "predict_images_per_s": len(films) / predict_seconds,
        "max_abs_difference_from_predict": max(differences),
        "calls_equal_predict": calls_equal,
        "clients": SERVING_CLIENTS,
        "batch": SERVING_BATCH,
    }


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    kept = ("per_s", "_ms_p50", "_ms_p95", "_ms_p99", "from_predict")
    figures |= {f"serving_{k}": float(v) for k, v in result.items() if k.endswith(kept)}
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    v = result
    table.add_row(
        "serve: one-image request latency p50 / p95 / p99 (target p95 <= 50 ms)",
        f"{v['latency_ms_p50']:.1f} / {v['latency_ms_p95']:.1f} / {v['latency_ms_p99']:.1f} ms",
        f"{v['model']} of the default search, real JPEG films ({v['film_bytes_mean'] / 1024:.0f} KiB mean), "
        "one server process, one client",
    )
    table.add_row(
        f"serve: img/s, one image per request, {v['clients']} clients",
        f"{v['single_concurrent_images_per_s']:.0f}",
        "",
    )
    table.add_row(
        f"serve: img/s, {v['batch']} images per request (target >= 300)",
        f"{v['batch_images_per_s']:.0f}",
        f"{v['batch_concurrent_images_per_s']:.0f} with {v['clients']} clients",
    )
    table.add_row(
        "xraycnn predict img/s on the same films (reference)",
        f"{v['predict_images_per_s']:.0f}",
        f"largest |server - predict| {v['max_abs_difference_from_predict']:.1e}; calls equal: "
        f"{v['calls_equal_predict']}",
    )
