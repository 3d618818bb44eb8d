"""The CLI's own surface: the tracking UI it starts listens on loopback only unless told otherwise."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil

from tests.test_search_integration import XRAYCNN
from xraycnn.cli import build_parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(pid: int) -> set[str]:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    addresses = set()
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            addresses |= {c.laddr.ip for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    return addresses


def test_ui_listens_on_loopback_only(tmp_path: Path) -> None:
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    port = free_port()
    ui = subprocess.Popen(
        [XRAYCNN, "ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the UI's server workers go down with it
    )
    try:
        deadline, body = time.monotonic() + 120, None
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == "OK", ui.stdout.read() if ui.poll() is not None else "the UI did not answer in 120 s"
        addresses = listening_addresses(ui.pid)
        assert addresses == {"127.0.0.1"}, addresses
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
