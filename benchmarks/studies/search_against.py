"""`make bench-against`: the default search now against the same command at an earlier revision, side by side.

A machine's speed is known only through what ran on it. Issue 12 measured `make search` at revision 6c4fade
(the whole-film Hyperband default of 18 trials) on the project's AVX2-only machines: 14.3 and 11.6 min. Run
here, that revision's search and today's, alternating, give the ratio of the two workloads on one machine;
times the minutes measured there, it is today's search on those machines, without them.

Each side runs as a new user's `make search` would: a fresh search (`--fresh`), an empty decode cache, its
own tuner state and MLflow store. The earlier revision runs from a git worktree of it (its own experiment
file, its own code, this checkout's virtual environment).

    python -m benchmarks.studies.search_against [REVISION] [--repeats N] [--float32] [--reference-minutes M ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS
from benchmarks.machine import machine_facts, machine_slug
from benchmarks.studies.searches import search_command

EXPERIMENT = "experiments/default.toml"
ISSUE_12_REVISION = "6c4fade"  # the default search issue 12 timed on the AVX2-only machines
ISSUE_12_MINUTES = (14.3, 11.6)  # ... and what it took there (issue 12; the README of b30cd49)
# The champion's test AUC and interval, as both revisions print it when they register it.
AUC_LINE = re.compile(r"AUC (\d\.\d+) \[(\d\.\d+), (\d\.\d+)\]")
FLOAT32_LINE = re.compile(r'^precision = "[a-z_0-9]+"', re.MULTILINE)


def champion_auc(output: str) -> dict[str, float] | None:
    """The registered champion's test AUC with its interval, from a search's output."""
    registered = output.rfind("Registered ")
    found = AUC_LINE.search(output, registered) if registered >= 0 else None
    if found is None:
        return None
    return {"value": float(found[1]), "ci_low": float(found[2]), "ci_high": float(found[3])}


def pin_float32(experiment: Path) -> None:
    """Set an experiment file's precision to float32, for a revision whose CLI has no `--set`."""
    text = experiment.read_text()
    if not FLOAT32_LINE.search(text):
        raise SystemExit(f"{experiment}: no `precision = ...` line to set to float32")
    experiment.write_text(FLOAT32_LINE.sub('precision = "float32"', text))


def reset_state(worktree: Path) -> None:
    """The revision's own layout (tuner/, mlruns/ and reports/ inside its checkout), emptied for a fresh search."""
    for folder in ("tuner", "mlruns/artifacts", "reports"):
        shutil.rmtree(worktree / folder, ignore_errors=True)
    (worktree / "mlruns" / "mlflow.db").unlink(missing_ok=True)
    (worktree / "mlruns").mkdir(exist_ok=True)


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run `command` under /usr/bin/time -v: its wall seconds, peak memory, exit status, champion AUC."""
    started = time.perf_counter()
    with open(log, "w") as out:
        status = subprocess.run(["/usr/bin/time", "-v", *command], cwd=cwd, env=env, stdout=out, stderr=out).returncode
    wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {
        "exit_status": status,
        "wall_seconds": wall,
        "peak_rss_mib": int(rss[1]) / 1024 if rss else None,
        "champion_test_auc": champion_auc(text),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", nargs="?", default=ISSUE_12_REVISION, help="the earlier revision")
    parser.add_argument("--repeats", type=int, default=2, help="searches a side, alternating (default 2)")
    parser.add_argument("--float32", action="store_true", help="both sides in float32 (as a CPU without bf16)")
    parser.add_argument(
        "--reference-minutes",
        type=float,
        action="append",
        help=f"the earlier search's minutes on another machine (default: issue 12's {ISSUE_12_MINUTES})",
    )
    parser.add_argument("--data", default=os.environ.get("XRAYCNN_DATA", str(REPO.parent / "shared/data/cxr-covid")))
    args = parser.parse_args(argv)
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("/usr/bin/time is needed for the peak memory (apt install time)")
    references = args.reference_minutes or list(ISSUE_12_MINUTES)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "src", "experiments"], cwd=REPO, capture_output=True, text=True
    )
    revision = subprocess.run(
        ["git", "rev-parse", args.revision], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {**os.environ, "XRAYCNN_DATA": args.data}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="xraycnn-against-") as tmp:
        worktree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), revision], cwd=REPO, check=True)
        try:
            if args.float32:
                pin_float32(worktree / EXPERIMENT)
            for repeat in range(args.repeats):
                for side in ("before", "now"):  # alternating: a drift of the machine's speed hits both
                    work = Path(tmp) / f"{side}-{repeat}"
                    (work / "cache").mkdir(parents=True)
                    side_env = {**env, "XRAYCNN_CACHE": str(work / "cache")}
                    if side == "before":
                        reset_state(worktree)
                        command = [sys.executable, "-m", "xraycnn", "search", EXPERIMENT, "--fresh"]
                        side_env |= {"XRAYCNN_HOME": str(worktree), "PYTHONPATH": str(worktree / "src")}
                        cwd = worktree
                    else:
                        overrides = ['training.precision="float32"'] if args.float32 else []
                        command = search_command(REPO / EXPERIMENT, work, overrides)
                        side_env |= {"PYTHONPATH": str(REPO / "src")}
                        cwd = REPO
                    run = timed(command, cwd, side_env, work / "output.txt")
                    run["command"] = " ".join(command)
                    runs[side].append(run)
                    print(
                        f"{side} #{repeat + 1}: exit {run['exit_status']}, {run['wall_seconds']:.1f} s, "
                        f"champion test AUC {run['champion_test_auc']}",
                        flush=True,
                    )
                    if run["exit_status"] != 0:
                        print((work / "output.txt").read_text(errors="replace")[-3000:], file=sys.stderr)
                        raise SystemExit(f"the {side} search failed (exit {run['exit_status']})")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)
    before = statistics.median(r["wall_seconds"] for r in runs["before"])
    now = statistics.median(r["wall_seconds"] for r in runs["now"])
    ratio = now / before
    when = datetime.now(UTC)
    out = {
        "what": f"{EXPERIMENT} searched at {args.revision} and now, alternating, each from an empty cache",
        "command": "python -m benchmarks.studies.search_against "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": when.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "git_commit": commit,
        "uncommitted_changes_in_src_or_experiments": bool(changed.stdout.strip()),
        "revision": revision,
        "precision": "float32" if args.float32 else "the experiment files' own",
        "runs": runs,
        "median_wall_seconds": {"before": before, "now": now},
        "ratio_now_to_before": ratio,
        "estimate_where_before_took": {f"{m} min": round(m * ratio, 2) for m in references},
    }
    stem = f"search-against-{args.revision[:12]}-{when:%Y-%m-%dT%H%M%SZ}-{machine_slug()}"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"median {before:.1f} s before, {now:.1f} s now: x{ratio:.3f}")
    for minutes, estimate in out["estimate_where_before_took"].items():
        print(f"where the earlier search took {minutes}: {estimate} min")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
