"""An MLflow tracking server in front of a real database, for searches that run in several processes.

Several processes writing one SQLite file through MLflow serialise on its file lock and may fail with
"database is locked"; a tracking server owns the database connection pool and serves artifacts, so workers
only speak HTTP. The backend is `--backend-store-uri`, else `$XRAYCNN_BACKEND_STORE_URI` (a PostgreSQL
database, e.g. postgresql://user@127.0.0.1:5432/mlflow), else the project's SQLite file.

With `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` set (the MLflow client's own variables: every
process of the search, and any MLflow client the user points at the server, sends them), the server runs
MLflow's basic-auth app with that user as its admin: a request without them is refused (401). The password
reaches the server in its environment, never on its command line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from xraycnn import paths
from xraycnn.errors import XrayCnnError
from xraycnn.runtime.local_http import free_port, wait_until_answering

BACKEND_ENV = "XRAYCNN_BACKEND_STORE_URI"
START_TIMEOUT_S = 180
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"  # the auth app's CSRF key, the same in each server worker


@dataclass(frozen=True)
class BasicAuth:
    """The one user of a tracking server behind MLflow's basic-auth app."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def from_environment(cls) -> BasicAuth | None:
        """The credentials MLflow's client sends (`MLFLOW_TRACKING_USERNAME` / `_PASSWORD`), or None."""
        username, password = os.environ.get(USERNAME_ENV, ""), os.environ.get(PASSWORD_ENV, "")
        if bool(username) != bool(password):
            missing = PASSWORD_ENV if username else USERNAME_ENV
            raise XrayCnnError(
                f"{USERNAME_ENV if username else PASSWORD_ENV} is set but {missing} is not: set both (the tracking "
                "server then refuses requests without them) or neither"
            )
        return cls(username, password) if username else None

    def write_config(self, folder: Path) -> dict[str, str]:
        """Write the auth app's config file in `folder` (its user database beside it, new at every start: the
        admin's password is the environment's); returns the environment the server needs with it."""
        folder.mkdir(parents=True, exist_ok=True)
        database = folder / "basic_auth.db"
        database.unlink(missing_ok=True)
        config = folder / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{database.resolve()}\n"
            f"admin_username = {self.username}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        config.chmod(0o600)
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
            SECRET_KEY_ENV: os.environ.get(SECRET_KEY_ENV) or secrets.token_hex(32),
        }


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
        auth: BasicAuth | None = None,
    ) -> None:
        self.auth = auth
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
            # One server process: it shares the machine with the search's own, and its threads keep up with a
            # few workers' writes; MLflow's default starts 4 copies of its app.
            "--workers",
            "1",
        ]
        env = server_environment(self.backend_store_uri)
        if self.auth is not None:
            command += ["--app-name", "basic-auth"]
            env |= self.auth.write_config(self.log_path.parent / "auth")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
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
    auth: BasicAuth | None = None,
) -> Iterator[str]:
    """Run `mlflow server` on `host:port` for the duration of the block; yields its URL."""
    server = TrackingServer(backend_store_uri, artifacts_dir, log_path, host, port, auth)
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
