"""The CLI's own surface: the tracking UI it starts listens on loopback only unless told otherwise."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
import pytest

from tests.browser import mlflow_ui
from xraycnn.cli import build_parser

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)


def listening_addresses(pid: int) -> set[str]:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    addresses = set()
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            addresses |= {c.laddr.ip for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    return addresses


def test_ui_listens_on_loopback_only(tmp_path: Path) -> None:
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    with mlflow_ui(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ui.log") as (_, pid):
        addresses = listening_addresses(pid)
    assert addresses == {"127.0.0.1"}, addresses
