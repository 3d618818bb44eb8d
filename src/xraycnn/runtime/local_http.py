"""Servers this project starts on the local machine (the MLflow tracking server, the UI, the model server):
a free port to bind, and waiting until one answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from xraycnn.errors import XrayCnnError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_bindable(host: str, port: int, what: str) -> None:
    """Raise `XrayCnnError` when `host:port` cannot be bound (taken, or not an address of this machine), so a
    server says so before it says it serves."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
            s.bind((host, port))
    except OSError as exc:
        raise XrayCnnError(
            f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}; give another --port (or --host)"
        ) from None


def wait_until_answering(
    url: str, process: subprocess.Popen | None, timeout: float, what: str, log: Path | None = None
) -> None:
    """Until GET `url` answers 200; fails at once, with the end of its log, if `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log and log.is_file() else []
            raise XrayCnnError(
                f"{what} exited with status {process.returncode} before it answered: "
                f"{' | '.join(tail) or 'no output'}" + (f" (full log: {log})" if log else "")
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise XrayCnnError(f"{what} at {url} did not answer within {timeout:.0f} s" + (f" (log: {log})" if log else ""))
