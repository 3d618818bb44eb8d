"""`make bench-anytime`: anytime performance of the search algorithms on the default experiment.

Each variant (Hyperband with a 3-epoch first rung, as experiments/default.toml ran it until random search
replaced it; Hyperband with a 2-epoch first rung; random search; Bayesian optimisation; the same search space)
runs as the real `xraycnn search` in its own process, once per seed, with the same wall budget: a search still
running when the budget is spent is stopped with Ctrl-C (its open trial is closed as KILLED). The best
validation AUC reached so far is then read back from MLflow against the seconds since the process started
(every trial's per-epoch `val_auc` with its timestamp), and written as a JSON file and a PNG figure under
benchmarks/results/.

    python -m benchmarks.studies.anytime [--budget-seconds 180] [--seeds 42 7 1234] [--variants hyperband random ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS
from benchmarks.machine import machine_facts, machine_slug
from benchmarks.studies.searches import search_command, search_runs

EXPERIMENT = REPO / "experiments" / "default.toml"
OPEN_ENDED = "budget.max_trials=100"  # random and Bayesian search stop on the wall budget, not on a trial count
# Hyperband as default.toml ran it until 2026-11-27 (the first measurement of this bench), set in full: the
# experiment file's own algorithm and budget do not leak into the variants.
HYPERBAND = ["tuner.algorithm=hyperband", "budget.hyperband_factor=4", "budget.hyperband_iterations=1"]
# Every variant at the constant rate it was measured with (default.toml has since moved to a cosine schedule,
# which Hyperband cannot take).
CONSTANT_RATE = 'training.learning_rate_schedule="constant"'
NO_RUNGS = "budget.rungs=[]"  # as the variants were measured, before the default stopped trials at rungs
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "hyperband": (
        "Hyperband: first rung 3 epochs, the best 2 of 6 on to 12, 8 trials",
        [*HYPERBAND, "budget.max_epochs=12", "budget.max_trials=8", CONSTANT_RATE, NO_RUNGS],
    ),
    "hyperband_rung2": (
        "Hyperband, first rung 2 epochs, the best 2 of 6 on to 8, 8 trials",
        [*HYPERBAND, "budget.max_epochs=8", "budget.max_trials=8", CONSTANT_RATE, NO_RUNGS],
    ),
    "random": (
        "random search, up to 12 epochs a trial, early stopping (patience 3)",
        ["tuner.algorithm=random", "budget.max_epochs=12", OPEN_ENDED, CONSTANT_RATE, NO_RUNGS],
    ),
    "bayesian": (
        "Bayesian optimisation (Gaussian process), up to 12 epochs a trial, early stopping (patience 3)",
        ["tuner.algorithm=bayesian", "budget.max_epochs=12", OPEN_ENDED, CONSTANT_RATE, NO_RUNGS],
    ),
}
METRIC = "val_auc"
GRID_STEP = 5.0  # seconds between the points of the curves


def run_variant(overrides: list[str], seed: int, budget: float, workdir: Path, precision: str) -> dict[str, Any]:
    """One search under the wall budget; its best-so-far curve and what it got to."""
    workdir.mkdir(parents=True)
    command = search_command(EXPERIMENT, workdir, [f"seed={seed}", f'training.precision="{precision}"', *overrides])
    started = time.time()
    with open(workdir / "output.txt", "w") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A bench started in the background (nohup, `&`) ignores SIGINT, and a child inherits that: Python
            # then never raises KeyboardInterrupt. The search gets Ctrl-C's default handling back.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            process.wait(timeout=budget)
            stopped = False
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)  # as a user's Ctrl-C: open runs closed as KILLED
            stopped = True
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    ended = time.time() - started
    outcome = {"seed": seed, "stopped_at_budget": stopped, "exit_code": process.returncode, "process_seconds": ended}
    return outcome | read_back(workdir, started, budget)


def read_back(workdir: Path, started: float, budget: float) -> dict[str, Any]:
    """Every trial epoch's `val_auc` with the seconds since the process started; the champion's test AUC where
    the search finished inside the budget."""
    client, trials, parents = search_runs(workdir)
    points: list[tuple[float, float]] = []
    epochs = 0
    for run in trials:
        history = client.get_metric_history(run.info.run_id, METRIC)
        epochs += len(history)
        points.extend((m.timestamp / 1000 - started, m.value) for m in history)
    points = sorted(p for p in points if p[0] <= budget)
    return {
        "trials_started": len(trials),
        "trials_finished": sum(r.info.status == "FINISHED" for r in trials),
        "epochs_logged": epochs,
        "points": points,
        "champion_test_auc": parents[0].data.metrics.get("test_auc") if parents else None,
        "search_wall_seconds": parents[0].data.metrics.get("search_wall_seconds") if parents else None,
    }


def best_so_far(points: list[tuple[float, float]], grid: list[float]) -> list[float | None]:
    """The best value logged at or before each time of `grid` (None before the first)."""
    out: list[float | None] = []
    best, i = None, 0
    for t in grid:
        while i < len(points) and points[i][0] <= t:
            best = points[i][1] if best is None else max(best, points[i][1])
            i += 1
        out.append(best)
    return out


def summarise(variants: dict[str, list[dict[str, Any]]], grid: list[float]) -> dict[str, Any]:
    """Per variant: the curve of each seed, their mean where every seed has a value, and figures at half and
    the whole budget."""
    out: dict[str, Any] = {}
    for name, runs in variants.items():
        curves = [best_so_far(run["points"], grid) for run in runs]
        mean = [
            None if any(c[i] is None for c in curves) else sum(c[i] for c in curves) / len(curves)  # type: ignore[misc]
            for i in range(len(grid))
        ]
        half = len(grid) // 2
        out[name] = {
            "curves": curves,
            "mean": mean,
            "mean_at_half_budget": mean[half],
            "mean_at_budget": mean[-1],
            "seeds_at_budget": [c[-1] for c in curves],
            "champion_test_auc": [run["champion_test_auc"] for run in runs],
            "finished_inside_budget": [not run["stopped_at_budget"] for run in runs],
            "epochs_logged": [run["epochs_logged"] for run in runs],
            "trials_started": [run["trials_started"] for run in runs],
        }
    return out


def plot(summary: dict[str, Any], grid: list[float], budget: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for (name, figures), colour in zip(
        summary.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False
    ):
        for curve in figures["curves"]:
            ax.step(grid, [float("nan") if v is None else v for v in curve], where="post", color=colour, alpha=0.25)
        ax.step(
            grid,
            [float("nan") if v is None else v for v in figures["mean"]],
            where="post",
            color=colour,
            lw=2,
            label=name,
        )
    ax.set_xlim(0, budget)
    ax.set_xlabel("seconds since `xraycnn search` started")
    ax.set_ylabel(f"best {METRIC} so far (validation)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title="mean of the seeds (thin: each seed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replot(path: Path) -> Path:
    """The PNG beside a results JSON, drawn from it."""
    out = json.loads(path.read_text())
    isa = out["env"].get("ONEDNN_MAX_CPU_ISA")
    title = (
        f"experiments/default.toml's search space, {len(out['seeds'])} seeds, {out['budget_seconds']:.0f} s each, "
        f"{out['precision']}\n{out['machine'].get('cpu', '')}, {out['machine'].get('cores')} cores"
        + (f", oneDNN capped at {isa}" if isa else "")
    )
    png = path.with_suffix(".png")
    plot(out["summary"], out["grid_seconds"], out["budget_seconds"], title, png)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-seconds", type=float, default=180.0, help="wall budget of each search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1234])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--precision", default="float32", help="training.precision of every search (float32: as a CPU without bf16)"
    )
    parser.add_argument("--replot", type=Path, help="only redraw the PNG of this results JSON")
    args = parser.parse_args(argv)
    if args.replot:
        print(f"Written {replot(args.replot)}")
        return 0
    grid = [round(i * GRID_STEP, 3) for i in range(int(args.budget_seconds / GRID_STEP) + 1)]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory(prefix="xraycnn-anytime-") as tmp:
        for seed in args.seeds:  # seeds outermost: a drift of the machine's speed spreads over every variant
            for name in args.variants:
                run = run_variant(
                    VARIANTS[name][1], seed, args.budget_seconds, Path(tmp) / f"{name}-{seed}", args.precision
                )
                results[name].append(run)
                best = max((v for _, v in run["points"]), default=None)
                print(
                    f"{name} seed {seed}: {run['trials_started']} trials, {run['epochs_logged']} epochs, best {METRIC} "
                    f"{best if best is None else round(best, 4)}, "
                    f"{'stopped at the budget' if run['stopped_at_budget'] else 'finished'} "
                    f"({run['process_seconds']:.0f} s)",
                    flush=True,
                )
    summary = summarise(results, grid)
    when = datetime.now(UTC)
    stamp = when.strftime("%Y-%m-%dT%H%M%SZ")
    stem = f"anytime-{stamp}-{machine_slug()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.startswith(("ONEDNN_", "TF_ENABLE", "XRAYCNN_"))}
    out = {
        "what": f"best {METRIC} so far against wall time, same search space (experiments/default.toml), same budget",
        "command": " ".join(["python", "benchmarks/anytime.py", *(argv if argv is not None else sys.argv[1:])]),
        "env": env,
        "when": when.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "budget_seconds": args.budget_seconds,
        "seeds": args.seeds,
        "precision": args.precision,
        "variants": {name: VARIANTS[name][0] for name in args.variants},
        "grid_seconds": grid,
        "summary": summary,
        "runs": results,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2))
    replot(RESULTS / f"{stem}.json")
    for name, figures in summary.items():
        print(
            f"{name:16s} mean best {METRIC}: at {grid[len(grid) // 2]:.0f} s {figures['mean_at_half_budget']}, "
            f"at {args.budget_seconds:.0f} s {figures['mean_at_budget']}; "
            f"champions' test AUC {figures['champion_test_auc']}"
        )
    print(f"Written {RESULTS / stem}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
