"""The README and the docs hold together: every relative link leads to a file, every figure of the README's
results table is in the JSON that its row cites, and every figure the docs quote is in a JSON that its section
cites (to the digits shown)."""

from __future__ import annotations

import contextlib
import fnmatch
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
RESULTS = ROOT / "benchmarks" / "results"
# a results file as the docs name it: whole, a glob, with {a,b} (`x.{json,png}` too)
JSON_NAME = re.compile(r"([\w.*{},-]+\.(?:json\b|\{[\w,]*\}))")
HEADING = re.compile(r"\n(?=#{1,4} )")
FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)  # code: commands, settings, example output
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _numbers(value: object) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield float(value)


def _holds(values: list[float], figure: str) -> bool:
    """Whether one of `values` rounds to `figure` (a 3-decimal figure as shown)."""
    return any(abs(v - float(figure)) <= 0.0005 + 1e-9 for v in values)


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
            assert _holds(values, figure), f"{figure} not in {cited.name}: {row}"
            checked += 1
    assert checked >= 10  # the table still cites its measurements


def _expand(name: str) -> list[str]:
    """`a-{b,c}-d.json` as `a-b-d.json` and `a-c-d.json`."""
    match = re.search(r"\{([^{}]*)\}", name)
    if not match:
        return [name]
    return [
        e for part in match.group(1).split(",") for e in _expand(name[: match.start()] + part + name[match.end() :])
    ]


def cited_results(text: str) -> set[Path]:
    """The files of benchmarks/results that `text` names (by name, path or glob)."""
    names = [p.name for p in RESULTS.glob("*.json")]
    found: set[Path] = set()
    for token in JSON_NAME.findall(text):
        for pattern in _expand(token.rsplit("/", 1)[-1]):
            if not pattern.endswith(".json"):
                continue
            found |= {RESULTS / n for n in names if fnmatch.fnmatch(n, pattern)}
    return found


def _sections() -> Iterator[tuple[str, str]]:
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for section in HEADING.split(FENCE.sub("", page.read_text())):
            yield f"{page.relative_to(ROOT)}: {section.splitlines()[0][:70]}", section


# The figures the docs quote that no committed JSON holds, page by page, and why. Anything else a page quotes
# must be in a JSON its section cites; a new figure without its JSON fails the test below.
UNBACKED: dict[str, tuple[str, set[str]]] = {
    "docs/data.md": (
        "measured 2026-11-25 (the seed network and the first champion), read from that day's MLflow runs before the "
        "project kept its results as JSON; the page says so",
        {"0.408", "0.974", "0.966", "0.981", "0.538", "0.976", "0.969", "0.982", "0.979", "0.931", "1.000"},
    ),
    "docs/lab/2026-12-04-transfer.md": (
        "the morning's champion (v1) as `xraycnn evaluate` logged it in that day's MLflow store; and 0.015, a "
        "difference of two cited AUCs",
        {"0.490", "0.933", "0.888", "0.864", "0.911", "0.671", "0.635", "0.705", "0.771", "0.739", "0.802", "0.015"},
    ),
    "docs/transfer.md": (
        "the morning's champion (v1), as in docs/lab/2026-12-04-transfer.md; the site threshold's worked example "
        "(Beta arithmetic for 50 films, not a measurement)",
        {"0.888", "0.635", "0.705", "0.946", "0.034", "0.059", "0.490", "0.121", "0.141", "0.039", "0.007", "0.091"},
    ),
    "docs/lab/2026-12-05-eight-trials.md": (
        "the lowest of the 8 trials' val_shift_auc, read from their MLflow runs (the JSON keeps the champion's)",
        {"0.864"},
    ),
    "docs/search.md": (
        "the first champions on whole films (docs/data.md, 2026-11-25); 0.015, a difference of two cited AUCs",
        {"0.976", "0.981", "0.015"},
    ),
    "docs/serving.md": ("an example of `xraycnn predict`'s output, shown beside it", {"0.097"}),
    "docs/shortcuts.md": (
        "the external evaluation, kept apart from the project; the notebook's network of docs/data.md",
        {"0.981", "0.840", "0.974"},
    ),
    "docs/speed.md": ("a ratio of two cited wall times", {"0.456"}),
}


def test_every_figure_the_docs_quote_is_in_a_json_its_section_cites() -> None:
    """Each section of docs/ (the lab notebook too) that quotes 3-decimal figures cites the results JSON they
    come from, and each figure is in one of those files (within the rounding shown), unless UNBACKED lists it."""
    problems, checked = [], 0
    for where, text in _sections():
        exempt = UNBACKED.get(where.split(":", 1)[0], ("", set()))[1]
        figures = [f for f in FIGURE.findall(INLINE_CODE.sub("", text)) if f not in exempt]
        if not figures:
            continue
        files = cited_results(text)
        if not files:
            problems.append(f"{where}: {len(figures)} figure(s), no results JSON cited")
            continue
        values = [v for f in files for v in _numbers(json.loads(f.read_text()))]
        missing = [f for f in figures if not _holds(values, f)]
        problems += [f"{where}: {', '.join(missing)} in none of {sorted(f.name for f in files)}"] if missing else []
        checked += len(figures)
    assert problems == []
    assert checked >= 400  # the docs still cite their measurements


def test_every_unbacked_figure_is_still_quoted() -> None:
    """UNBACKED lists no figure its page no longer quotes: the list shrinks as the docs do."""
    for page, (_, figures) in UNBACKED.items():
        quoted = set(FIGURE.findall(INLINE_CODE.sub("", FENCE.sub("", (ROOT / page).read_text()))))
        assert figures - quoted == set(), f"{page} no longer quotes {sorted(figures - quoted)}"


def test_a_cited_name_finds_its_files() -> None:
    assert cited_results("see `suite-20261206-fresh-clone-*.json`") == {
        RESULTS / "suite-20261206-fresh-clone-intel-xeon-avx512bf16-amx.json"
    }
    both = cited_results("(`benchmarks/results/shortcut-probe-20261127-{1320,1355}-amd-epyc-avx512bf16.json`)")
    assert {f.name for f in both} == {
        "shortcut-probe-20261127-1320-amd-epyc-avx512bf16.json",
        "shortcut-probe-20261127-1355-amd-epyc-avx512bf16.json",
    }
    assert cited_results("bench-<time>-<machine>.json") == set()


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
