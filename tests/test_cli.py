"""The CLI's own surface: the tracking UI it starts listens on loopback only unless told otherwise."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import psutil

from tests.test_search_integration import XRAYCNN
from xraycnn.cli import build_parser
from xraycnn.tracking.server import free_port, wait_until_healthy


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
        stdout=(tmp_path / "ui.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the UI's server workers go down with it
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", ui, 120, tmp_path / "ui.log")
        addresses = listening_addresses(ui.pid)
        assert addresses == {"127.0.0.1"}, addresses
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
