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
