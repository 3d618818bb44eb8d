"""`make bench`: how fast and how heavy the search is, measured side by side in one run on the real data.

Every measurement runs in its own Python process (a fresh TensorFlow runtime: thread settings take effect
and peak memory is its own), one after the other, so the rows of the table are comparable. It prints one
table, writes the figures as JSON under benchmarks/results/ and logs them to the MLflow run
`bench-<time>` of the experiment `xraycnn-bench` in the project's store.

    python -m benchmarks                    # the core figures: training, FLOP efficiency, the default search, serving
    python -m benchmarks --all              # every part (about 40 min on 2 CPU cores)
    python -m benchmarks --only training    # one part (repeatable); `--list` names them
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS
from benchmarks.machine import machine_facts, machine_slug
from benchmarks.parts import CORE, PARTS, STUDIES, Part


def run_child(part: str, workdir: Path, extra: list[str], timeout: int = 1800) -> dict[str, Any]:
    """One measurement in a process of its own: its JSON line on stdout, and how long the process took."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--child", part, str(workdir), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {part} {extra} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "process_seconds": time.perf_counter() - started}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: as the CLI resolves it)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--only", choices=list(PARTS), action="append", help="run only these parts (repeatable)")
    chosen.add_argument("--all", action="store_true", help=f"every part but the studies ({', '.join(STUDIES)})")
    parser.add_argument("--list", action="store_true", help="name the parts and what each measures, and stop")
    parser.add_argument(
        "--training-rows",
        nargs="+",
        help="only these rows of the training ladder (e.g. notebook threads: float32 speed, to compare machines)",
    )
    parser.add_argument("--tracking-repeats", type=int, default=3, help="trials per side of the tracking figure")
    parser.add_argument("--memory-trials", type=int, default=4, help="trials of the default search to measure")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the figures to MLflow")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser


def chosen_parts(args: argparse.Namespace) -> list[str]:
    """The parts to run, in the registry's order."""
    if args.only:
        return [name for name in PARTS if name in args.only]
    if args.all:
        return [name for name in PARTS if name not in STUDIES]
    return [name for name in PARTS if name in CORE]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, part in PARTS.items():
            kind = "core" if name in CORE else "study" if name in STUDIES else "--all"
            print(f"{name:13} {kind:6} {part.summary}")
        return 0

    from xraycnn.runtime import native_stderr

    native_stderr.import_tensorflow()
    from xraycnn.data.discovery import resolve_data_root

    data_root = resolve_data_root(args.data)
    if args.child:
        name, workdir, *extra = args.child
        print(json.dumps(PARTS[name].measure(data_root, Path(workdir), *extra)))
        return 0

    from rich.console import Console

    from xraycnn.runtime import threads

    console = Console() if sys.stdout.isatty() else Console(width=160)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_facts() | {"threads_default": threads.describe()},
        "data": str(data_root),
    }
    with tempfile.TemporaryDirectory(prefix="xraycnn-bench-") as tmp:
        for name in chosen_parts(args):
            measured = _measure(console, name, PARTS[name], Path(tmp) / name, args)
            if measured is not None:
                results[name] = measured
    figures = summarise(results)
    results["figures"] = figures
    print_table(console, results, figures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "").replace("+0000", "Z")
    out = RESULTS / f"bench-{stamp}-{machine_slug()}.json"
    out.write_text(json.dumps(results, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    console.print(f"Figures written to {out.relative_to(REPO)}")
    if not args.no_mlflow:
        run_id = log_to_mlflow(results, figures, out)
        console.print(f"Logged to MLflow run {run_id} (experiment xraycnn-bench)")
    return 0


def _measure(console: Any, name: str, part: Part, workdir: Path, args: argparse.Namespace) -> Any:
    """A part's children, one process each: its result, or by row for a part of several rows (a row or a part
    that fails is reported and left out, the other figures kept)."""
    by_row: dict[str, Any] = {}
    for row, extra in part.children(args):
        label = f"{name}: {row}" if row else f"{name} ..."
        with console.status(label):
            try:
                result = run_child(name, workdir, extra)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                console.print(f"[red]{label} failed[/]: {str(exc)[-300:]}")
                continue
        if row is None:
            return result
        by_row[row] = result
        console.print(f"  {label}: done in {result['process_seconds']:.0f} s")
    return by_row or None


def summarise(results: dict[str, Any]) -> dict[str, float]:
    """The flat figures of every part measured: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    for name, part in PARTS.items():
        if results.get(name):
            figures |= part.summarise(results[name])
    return figures


def print_table(console: Any, results: dict[str, Any], figures: dict[str, float]) -> None:
    from rich.table import Table

    m = results["machine"]
    table = Table(
        title=f"xraycnn bench: {m['cpu']}, {m['cores']} cores, bf16: {m['bf16_flags']}; {results['when']}",
        header_style="bold",
    )
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("note")
    for name, part in PARTS.items():
        if results.get(name):
            part.rows(table, results[name], figures, m)
    console.print(table)


def log_to_mlflow(results: dict[str, Any], figures: dict[str, float], json_path: Path) -> str:
    from xraycnn.tracking.runs import RunLogger
    from xraycnn.tracking.store import ensure_experiment, resolve_store

    store = resolve_store(None)
    experiment_id = ensure_experiment(store, "xraycnn-bench", {})
    runs = RunLogger(store.client())
    run_id = runs.client.create_run(experiment_id, run_name=f"bench-{results['when']}").info.run_id
    runs.log_params(run_id, {f"machine.{k}": v for k, v in results["machine"].items()})
    runs.log_metrics(run_id, figures)
    runs.log_file(run_id, json_path, None)
    runs.end(run_id)
    return run_id


if __name__ == "__main__":
    sys.exit(main())
