"""The README and the docs hold together: every relative link leads to a file, and every figure of the README's
results table is in the JSON that its row cites (to the digits shown)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITED_JSON = re.compile(r"\((benchmarks/results/[^)]+\.json)\)")
FIGURE = re.compile(r"(?<![\d.])(\d\.\d{3})(?![\d])")  # the 3-decimal figures: AUCs, rates, intervals


def _numbers(value: object) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield float(value)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_the_readme_s_results_are_in_the_json_they_cite() -> None:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|")]
    cited: Path | None = None
    checked = 0
    for row in rows:
        match = CITED_JSON.search(row)
        if match:
            cited = ROOT / match.group(1)
        elif not re.search(r"\|\s*same\s*\|", row):
            cited = None  # a row without a JSON of its own (or "same") is not a measured figure
        if cited is None:
            continue
        values = list(_numbers(json.loads(cited.read_text())))
        cells = row.split("|")[2] if row.count("|") >= 3 else row  # the figure column, not the row's label
        for figure in FIGURE.findall(cells):
            shown = float(figure)
            assert any(abs(v - shown) <= 0.0005 + 1e-9 for v in values), f"{figure} not in {cited.name}: {row}"
            checked += 1
    assert checked >= 10  # the table still cites its measurements


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_every_make_target_the_readme_names_is_in_the_makefile() -> None:
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", _readme()))
    assert {"search", "test"} <= named  # the quick start's two commands
    assert named - targets == set()


def test_the_readme_s_commands_and_their_options_are_the_cli_s() -> None:
    from xraycnn.cli import build_parser

    rows = re.findall(r"^\| `xraycnn ([a-z]+)([^`]*)`", _readme(), flags=re.M)
    assert len(rows) >= 10
    for command, usage in rows:
        shown = io.StringIO()
        with pytest.raises(SystemExit) as exit, contextlib.redirect_stdout(shown), contextlib.redirect_stderr(shown):
            build_parser().parse_args([command, "--help"])
        assert exit.value.code == 0, f"the README names `xraycnn {command}`, which the CLI lacks: {shown.getvalue()}"
        text = shown.getvalue()
        for option in re.findall(r"--[a-z][\w-]*", usage):
            assert option in text, f"`xraycnn {command}` has no {option}"
        for variable in ("XRAYCNN_HOME", "XRAYCNN_DATA", "XRAYCNN_CACHE", "MLFLOW_TRACKING_URI"):
            assert variable in text, f"`xraycnn {command} --help` does not name {variable}"
