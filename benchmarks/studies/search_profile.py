"""`make bench-profile`: where a whole `make search` spends its wall time, by sampling it.

Runs the real `xraycnn search` of an experiment (fresh tuner state and store, in a temporary folder) under
py-spy (a sampling profiler: 50 stacks a second of the main thread, waiting included, so the shares are of
wall time), then sorts every sample of the main thread into one phase by the first rule its stack matches.
Writes the seconds and shares per phase as JSON under benchmarks/results/ and prints them.

    python -m benchmarks.studies.search_profile [EXPERIMENT] [--set KEY=VALUE ...] [--keep-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import REPO, RESULTS
from benchmarks.machine import machine_facts, machine_slug
from benchmarks.studies.searches import search_command, search_runs

RATE = 50  # samples a second
# (phase, substrings of a stack): the first rule that matches a sample's stack names its phase. Tracing is
# matched before the training steps and validation so that a step's first call counts as tracing.
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("imports", ("_find_and_load",)),
    ("data: decode or read the cache, split", ("prepare_data (",)),
    ("film steps (crop, equalise), once per preprocessing", ("PreparedData.preprocessed", "masked_inputs (")),
    ("tracking store: open, parent run", ("open_session (", "parent_run (")),
    ("champion: assessment, registration", ("_champion (",)),
    ("report", ("_write_report (",)),
    ("garbage collection before each trial", ("clear_session (", "_try_build (keras_tuner/src/engine/tuner.py:16")),
    ("network build and compile", ("_try_build (",)),
    ("graph tracing (train, validation, augmentation)", ("trace_function (", "_maybe_define_function (")),
    ("trial scores: test set, audit, Grad-CAM", ("trial_completed (",)),
    ("shortcut gate and acquisition guard (per epoch)", ("SelectionGuards.on_epoch_end",)),
    ("checkpoints and oracle", ("on_epoch_end (keras_tuner", "_save_model", "BaseTuner.on_trial_end")),
    ("validation (per epoch)", ("TensorFlowTrainer.evaluate",)),
    ("input pipeline set-up (per epoch)", ("OwnedIterator.__init__", "training_batches (")),
    ("training steps", ("TensorFlowTrainer.fit (",)),
    ("tuner and tracking, other", ("_tuner (",)),
]


def classify(raw: Path) -> Counter[str]:
    """Samples of the main thread per phase, from py-spy's raw output (`stack;stack;... count`)."""
    phases: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        if not line.startswith("_run_module_as_main"):  # other threads: the tracking writer, tf.data, ...
            continue
        stack, _, count = line.rpartition(" ")
        name = next((phase for phase, keys in PHASES if any(k in stack for k in keys)), "other")
        phases[name] += int(count)
    return phases


def trial_epochs(workdir: Path) -> dict[str, int]:
    """Epochs each trial trained (its logged `val_auc` steps): early stopping makes two searches of the same
    seed differ, and the training steps' seconds are to be read per epoch."""
    client, trials, _ = search_runs(workdir)
    return {run.info.run_name: len(client.get_metric_history(run.info.run_id, "val_auc")) for run in trials}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default=str(REPO / "experiments" / "default.toml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the search")
    parser.add_argument("--keep-cache", action="store_true", help="use the machine's decoded-data cache")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if spy is None:
        raise SystemExit("py-spy is not installed: `make install` installs it (the dev extra)")
    with tempfile.TemporaryDirectory(prefix="xraycnn-profile-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        if not args.keep_cache:
            env["XRAYCNN_CACHE"] = str(work / "cache")
        raw = work / "samples.txt"
        search = search_command(args.experiment, work, args.set)
        started = time.perf_counter()
        done = subprocess.run(
            [spy, "record", "--idle", "-r", str(RATE), "-f", "raw", "-o", str(raw), "--", *search],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0 or not raw.exists():
            raise SystemExit(f"the profiled search failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        phases = classify(raw)
        trials = trial_epochs(work)
    total = sum(phases.values())
    rows = [
        {"phase": name, "seconds": round(count / RATE, 2), "share": round(count / total, 4)}
        for name, count in phases.most_common()
    ]
    when = datetime.now(UTC)
    out = {
        "what": "a whole search's wall time by phase (py-spy samples of the main thread, waiting included)",
        "command": " ".join(["python", "benchmarks/search_profile.py", *(argv if argv is not None else sys.argv[1:])]),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("ONEDNN_", "TF_")) or k == "PYTHONPATH"},
        "when": when.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "experiment": args.experiment,
        "overrides": args.set,
        "wall_seconds": round(wall, 1),
        "sampled_seconds": round(total / RATE, 1),
        "phases": rows,
        "trial_epochs": trials,
        "epochs_trained": sum(trials.values()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"search-profile-{when.strftime('%Y-%m-%dT%H%M%SZ')}-{machine_slug()}.json"
    path.write_text(json.dumps(out, indent=2))
    for row in rows:
        print(f"{row['phase']:52s} {row['seconds']:7.1f} s {100 * row['share']:5.1f} %")
    steps = next((row["seconds"] for row in rows if row["phase"] == "training steps"), 0.0)
    epochs = max(sum(trials.values()), 1)
    print(f"{len(trials)} trials, {epochs} epochs: {steps / epochs:.2f} s of training steps an epoch")
    print(f"wall {wall:.1f} s; written {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
