"""Headless Chromium for the browser tests: Debian's `chromium` driven by Playwright (no browser download).

Skipped where either is missing, unless `XRAYCNN_REQUIRE_BROWSER=1` (set by `.ci/run`), where that is a
failure. Screenshots go to `test-artifacts/browser/` (or `$XRAYCNN_TEST_ARTIFACTS/browser/`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_search import XRAYCNN
from xraycnn.runtime.local_http import free_port, wait_until_answering

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("XRAYCNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, with no network: no sandbox, no GPU, and none of Chromium's own connections home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def artifacts_dir() -> Path:
    root = Path(os.environ.get("XRAYCNN_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unavailable() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless browser (playwright's Browser); closed at the end."""
    why = _unavailable()
    if why:
        if os.environ.get("XRAYCNN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required here, but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def mlflow_ui(tracking_uri: str, log: Path) -> Iterator[tuple[str, int]]:
    """`xraycnn ui` on a free port: yields (its URL, its pid); stopped with its server workers at the end."""
    port = free_port()
    ui = subprocess.Popen(
        [XRAYCNN, "ui", "--port", str(port), "--tracking-uri", tracking_uri],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the UI's server workers go down with it
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{url}/health", ui, 120, "the MLflow UI", log)
        yield url, ui.pid
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
