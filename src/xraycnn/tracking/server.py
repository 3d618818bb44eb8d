"""An MLflow tracking server in front of a real database, for searches that run in several processes.

Several processes writing one SQLite file through MLflow serialise on its file lock and may fail with
"database is locked"; a tracking server owns the database connection pool and serves artifacts, so workers
only speak HTTP. The backend is `--backend-store-uri`, else `$XRAYCNN_BACKEND_STORE_URI` (a PostgreSQL
database, e.g. postgresql://user@127.0.0.1:5432/mlflow), else the project's SQLite file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xraycnn import paths
from xraycnn.runtime.local_http import free_port, wait_until_answering

BACKEND_ENV = "XRAYCNN_BACKEND_STORE_URI"
START_TIMEOUT_S = 180


def default_backend_store_uri() -> str:
    return os.environ.get(BACKEND_ENV) or paths.default_tracking_uri()


@contextmanager
def tracking_server(
    backend_store_uri: str,
    artifacts_dir: Path,
    log_path: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> Iterator[str]:
    """Run `mlflow server` on `host:port` for the duration of the block; yields its URL."""
    port = port or free_port(host)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if backend_store_uri.startswith("sqlite:///"):
        Path(backend_store_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_dir.resolve().as_uri(),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        wait_until_answering(f"{url}/health", process, START_TIMEOUT_S, "the MLflow tracking server", log_path)
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the server's own workers too
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
