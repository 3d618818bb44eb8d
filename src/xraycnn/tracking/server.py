"""An MLflow tracking server in front of a real database, for searches that run in several processes.

Several processes writing one SQLite file through MLflow serialise on its file lock and may fail with
"database is locked"; a tracking server owns the database connection pool and serves artifacts, so workers
only speak HTTP. The backend is `--backend-store-uri`, else `$XRAYCNN_BACKEND_STORE_URI` (a PostgreSQL
database, e.g. postgresql://user@127.0.0.1:5432/mlflow), else the project's SQLite file.
"""

from __future__ import annotations

import contextlib
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


class TrackingServer:
    """`mlflow server` on `host:port`: started, stopped, and started again on the same port when it dies (the
    search's processes keep their writes in their spools meanwhile)."""

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_dir: Path,
        log_path: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts_dir = artifacts_dir
        self.log_path = log_path
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.backend_store_uri.startswith("sqlite:///"):
            Path(self.backend_store_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",  # the store's URI (a database password in it) goes in the environment, not on `ps`'s line
            "--artifacts-destination",
            self.artifacts_dir.resolve().as_uri(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "2",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=server_environment(self.backend_store_uri),
            )
        try:
            wait_until_answering(
                f"{self.url}/health", self.process, START_TIMEOUT_S, "the MLflow tracking server", self.log_path
            )
        except BaseException:
            self.stop()
            raise

    def exit_status(self) -> int | None:
        """None while it runs; its exit status once it has died."""
        return None if self.process is None else self.process.poll()

    def restart(self) -> None:
        """Start it again on the same port, after whatever is left of the dead one (its own workers)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextmanager
def tracking_server(
    backend_store_uri: str,
    artifacts_dir: Path,
    log_path: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> Iterator[str]:
    """Run `mlflow server` on `host:port` for the duration of the block; yields its URL."""
    server = TrackingServer(backend_store_uri, artifacts_dir, log_path, host, port)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def server_environment(backend_store_uri: str) -> dict[str, str]:
    """The environment of an `mlflow server` / `mlflow ui` this project starts: the backend store's URI (in the
    environment, where `ps` does not show it to every user of the machine), and MLflow's job runner (GenAI
    judges and trace roll-ups, several consumer processes, each importing MLflow) off unless the user turned it
    on: xraycnn submits no job."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": backend_store_uri}


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the server's own workers too
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
