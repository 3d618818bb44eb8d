"""`xraycnn search --workers N`: one machine, one tracking server, one chief, N workers.

The launcher starts an MLflow tracking server on the backend store (PostgreSQL when configured), creates
the MLflow experiment and the registered model once, then starts the chief (`--role chief`) and the
workers (`--role worker`) as the same `xraycnn search` command on other hosts would. A worker that dies
before the search is over is started again with the same id, so the oracle hands it its unfinished trial
back; the chief registers the champion at the end. The launcher exits with the chief's status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.text import Text

from xraycnn import paths
from xraycnn.config import Experiment
from xraycnn.errors import InterruptedByUserError, XrayCnnError
from xraycnn.jobs.inputs import check_inputs
from xraycnn.jobs.session import ensure_search_experiment
from xraycnn.runtime.local_http import free_port
from xraycnn.tracking.server import (
    PASSWORD_ENV,
    USERNAME_ENV,
    BasicAuth,
    TrackingServer,
    default_backend_store_uri,
)
from xraycnn.tracking.store import beside_database, redact, resolve_store, sqlite_file
from xraycnn.tuning.state import search_lock

MAX_RESTARTS = 3  # per worker: a worker that keeps dying points at a bug, not at bad luck
SERVER_RETRY_S = 10.0
STOP_GRACE_S = 60


@dataclass
class _Process:
    name: str
    command: list[str]
    env: dict[str, str]
    console: Console
    process: subprocess.Popen[str] | None = None
    restarts: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None
        reader = threading.Thread(target=self._relay, args=(self.process.stdout,), daemon=True)
        reader.start()
        self.threads.append(reader)

    def _relay(self, stream: IO[str]) -> None:
        for line in stream:  # one prefixed line per line: several processes share the terminal
            self.console.print(Text.assemble((f"{self.name} ", "dim"), line.rstrip()), soft_wrap=True)

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for reader in self.threads:
            reader.join(timeout=5)


def run_distributed(
    experiment_path: str | Path,
    workers: int,
    *,
    fresh: bool = False,
    data_dir: str | Path | None = None,
    backend_store_uri: str | None = None,
    artifacts_destination: str | Path | None = None,
    tuner_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
    oracle_port: int | None = None,
    console: Console | None = None,
    overrides: Sequence[str] = (),
) -> int:
    console = console or Console()
    if workers < 1:
        raise XrayCnnError(f"--workers {workers}: at least 1")
    inputs = check_inputs(experiment_path, data_dir, overrides)
    experiment = inputs.experiment
    backend = backend_store_uri or default_backend_store_uri()
    project_dir = Path(tuner_dir or paths.tuner_root()).resolve() / experiment.name
    with search_lock(project_dir, experiment.name):
        pass  # fail now, not after the server has started; the chief holds the lock for the search
    logs = project_dir.parent / f"{experiment.name}.logs"
    artifacts = Path(artifacts_destination) if artifacts_destination else _default_artifacts(backend)
    auth = BasicAuth.from_environment()
    server = TrackingServer(backend, artifacts, logs / "mlflow-server.log", auth=auth)
    server.start()
    url = server.url
    try:
        guarded = f"basic auth as {auth.username}" if auth else f"no authentication: set {USERNAME_ENV}/{PASSWORD_ENV}"
        console.print(
            f"MLflow tracking server {url} on {redact(backend)} ({guarded}; log {logs / 'mlflow-server.log'})"
        )
        _create_once(url, experiment, console)
        oracle = f"127.0.0.1:{oracle_port or free_port()}"
        common = [str(experiment.path), *experiment.override_args(), "--tracking-uri", url, "--oracle", oracle]
        if data_dir:
            common += ["--data", str(data_dir)]
        if tuner_dir:
            common += ["--tuner-dir", str(tuner_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": url}
        executable = str(Path(sys.executable).with_name("xraycnn"))
        chief = _Process(
            "chief",
            [
                executable,
                "search",
                *common,
                "--role",
                "chief",
                *(["--fresh"] if fresh else []),
                *(["--reports-dir", str(reports_dir)] if reports_dir else []),
            ],
            env,
            console,
        )
        quiet = {**env, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # a URL per trial run: the chief's is enough
        pool = [
            _Process(
                f"worker-{i}",
                [executable, "search", *common, "--role", "worker", "--worker-id", f"worker-{i}"],
                quiet,
                console,
            )
            for i in range(1, workers + 1)
        ]
        chief.start()
        for worker in pool:
            worker.start()
        try:
            return _supervise(chief, pool, console, server)
        except KeyboardInterrupt:
            # The terminal sent SIGINT to every process of the group: they close their runs; wait for them.
            for process in (chief, *pool):
                process.wait(STOP_GRACE_S)
            raise InterruptedByUserError(
                f"the distributed search of {experiment.name} stopped; run the same command again to resume"
            ) from None
    finally:
        server.stop()


def _supervise(chief: _Process, pool: list[_Process], console: Console, server: TrackingServer) -> int:
    next_server_try = 0.0
    while chief.poll() is None:
        if server.exit_status() is not None and time.monotonic() >= next_server_try:
            next_server_try = _restart_server(server, console)
        for worker in pool:
            code = worker.poll()
            if code is None or code == 0:
                continue
            if worker.restarts >= MAX_RESTARTS:
                console.print(f"[red]{worker.name} died {worker.restarts + 1} times (last status {code}); stopping.[/]")
                chief.signal(signal.SIGINT)
                break
            worker.restarts += 1
            console.print(
                f"[yellow]{worker.name} exited with status {code}; starting it again "
                f"({worker.restarts}/{MAX_RESTARTS}): the oracle gives it back its unfinished trial.[/]"
            )
            worker.start()
        time.sleep(1.0)
    code = chief.poll() or 0
    for worker in pool:  # the chief has ended the search: workers stop by themselves, or are stopped
        if code != 0:  # nothing left to serve them trials
            worker.signal(signal.SIGTERM)
        worker.wait(STOP_GRACE_S)
    chief.wait(STOP_GRACE_S)
    return code


def _restart_server(server: TrackingServer, console: Console) -> float:
    """Start a dead tracking server again on its port; when that fails, the time to try again."""
    console.print(
        f"[yellow]the MLflow tracking server exited with status {server.exit_status()}; starting it again on "
        f"{server.url} (the search goes on; its writes wait in the processes' spools)[/]",
        highlight=False,
    )
    try:
        server.restart()
    except XrayCnnError as exc:
        console.print(f"[yellow]{exc}; trying again in {SERVER_RETRY_S:.0f} s[/]", highlight=False)
        return time.monotonic() + SERVER_RETRY_S
    console.print(f"the MLflow tracking server answers again on {server.url}", highlight=False)
    return 0.0


def _create_once(url: str, experiment: Experiment, console: Console) -> None:
    """The MLflow experiment and the registered model, created here before any worker starts, so no two
    processes race to create them."""
    store = resolve_store(url)
    ensure_search_experiment(store, experiment)
    name = experiment.config.registry.model_name
    client = store.client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"Champion of the xraycnn search {experiment.name}")
        console.print(f"Created registered model {name}")


def _default_artifacts(backend: str) -> Path:
    """Next to a SQLite file, as for a local store; the project's mlruns/artifacts for a database server."""
    db = sqlite_file(backend)
    return beside_database(db) if db is not None else paths.mlruns_dir() / "artifacts"
