"""A real PostgreSQL server on loopback for one test module, from the machine's own packages (Debian's
`postgresql`, which `.ci/run` installs). Started with initdb + pg_ctl in a temporary folder, trust
authentication on 127.0.0.1 only, and stopped afterwards."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from xraycnn.runtime.local_http import free_port

REQUIRE_ENV = "XRAYCNN_REQUIRE_POSTGRES"  # set by .ci/run: there a missing server is a failure, not a skip


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass(frozen=True)
class Postgres:
    uri: str  # postgresql://postgres@127.0.0.1:PORT/mlflow
    restart: Callable[[], None]  # a fast shutdown (every connection dropped) and a start on the same port


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A running server with an empty database `mlflow`."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="xraycnn-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as the package's own user
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8")
        pg(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root}",
            "start",
        )
        try:
            pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
            log = str(root / "server.log")  # the server's output there: on a pipe, `pg` would wait for its end
            restart = lambda: pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", log, "-m", "fast", "-w", "restart")  # noqa: E731
            yield Postgres(f"postgresql://postgres@127.0.0.1:{port}/mlflow", restart)
        finally:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
