"""What tracking costs a trial: trials with and without their MLflow runs, side by side, and the tracking
work itself accounted (the training thread's hooks, the sending thread's CPU)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, peak_rss_mib


def measure(data_root: Path, workdir: Path, repeats: str) -> dict[str, Any]:
    """Wall time of the same trial (the default search's data, one fixed network, 3 epochs) with the
    MLflow trial tracking on and off, alternated so drift in the machine's speed hits both alike."""
    from xraycnn.runtime import threads

    threads.configure()
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    from rich.console import Console

    from xraycnn.config import ExperimentConfig, load_experiment
    from xraycnn.data.dataset import prepare_data
    from xraycnn.data.discovery import discover
    from xraycnn.evaluation.trial_scoring import TrialScorer
    from xraycnn.jobs.session import Session, fixed_params
    from xraycnn.jobs.spooling import spooled_tracking
    from xraycnn.model.hypermodel import CxrHyperModel
    from xraycnn.runtime.precision import apply_policy
    from xraycnn.tracking.store import ensure_experiment, resolve_store
    from xraycnn.tracking.trial_tracker import TrialTracker
    from xraycnn.tuning.tuners import build_tuner

    default = load_experiment(REPO / "experiments" / "default.toml")
    raw = default.config.model_dump()
    raw["space"] = {
        "conv_blocks": 3,
        "filters": [16, 32, 64],
        "kernel_size": 3,
        "dropout": 0.2,
        "dense_units": 128,
        "learning_rate": 1e-3,
        "batch_size": 32,
        "epochs": 3,
    }
    raw["tuner"]["algorithm"] = "random"
    raw["budget"] |= {"max_trials": 1, "max_epochs": 3}
    config = ExperimentConfig.model_validate(raw)
    precision, reason = apply_policy("auto")
    data = prepare_data(discover(data_root), config.data, config.seed)
    store = resolve_store(f"sqlite:///{workdir / 'store' / 'mlflow.db'}")
    experiment_id = ensure_experiment(store, "bench-tracking", {})
    session = Session(default, data, store, experiment_id, precision, reason)
    parent = store.client().create_run(experiment_id, run_name="bench-parent").info.run_id

    from xraycnn.tuning.tuners import SearchListener

    hypermodel = CxrHyperModel(config, data)
    scorer = TrialScorer(hypermodel)

    class EvaluateOnly(SearchListener):
        """What a trial run's test metrics and validation audit cost to compute, without writing to MLflow."""

        def trial_completed(self, trial: Any, model: Any) -> None:
            scorer.scores(trial.hyperparameters, model)

    class TimedTracker(TrialTracker):
        """The tracker, with the time its hooks hold the training thread counted."""

        hook_seconds = 0.0

        def _timed(self, hook: Any, *args: Any) -> None:
            started = time.perf_counter()
            hook(*args)
            TimedTracker.hook_seconds += time.perf_counter() - started

        def trial_begin(self, trial: Any) -> None:
            self._timed(super().trial_begin, trial)

        def epoch_end(self, trial: Any, epoch: int, logs: dict[str, float]) -> None:
            self._timed(super().epoch_end, trial, epoch, logs)

        def trial_completed(self, trial: Any, model: Any) -> None:
            self._timed(super().trial_completed, trial, model)

        def trial_end(self, trial: Any) -> None:
            self._timed(super().trial_end, trial)

    accounted: list[dict[str, float]] = []
    cpu: dict[str, list[float]] = {"off": [], "evaluate": [], "on": []}

    def one_trial(mode: str, index: int) -> float:
        listeners: list[Any] = []
        if mode == "evaluate":
            listeners = [EvaluateOnly()]
        elif mode == "on":
            TimedTracker.hook_seconds = 0.0
            tracking = spooled_tracking(store, workdir / "spools" / f"t{index}", "main", Console(quiet=True))
            tracker = TimedTracker(
                tracking.spooled, experiment_id, parent, fixed_params(session), data, config.tuner, scorer.scores
            )
            listeners = [tracker]
        tuner = build_tuner(config, hypermodel, workdir / "tuner", f"t{index}", listeners)
        started, cpu_started = time.perf_counter(), time.process_time()
        tuner.search(verbose=0)
        if mode == "on":
            tracker.sender.close()  # the run is complete (in the store) before the clock stops
        wall = time.perf_counter() - started
        cpu.setdefault(mode, []).append(time.process_time() - cpu_started)  # every thread of this process
        if mode == "on":
            accounted.append(
                {
                    "trial_seconds": wall,
                    "training_thread_seconds": TimedTracker.hook_seconds,
                    "writer_cpu_seconds": tracker.sender.cpu_seconds,
                    "spool_records": tracker.sender.spool.records_written,
                    "spool_bytes": tracker.sender.spool.bytes_written,
                }
            )
        return wall

    one_trial("warm-up", -1)  # first-use costs (tracing, thread pools) land on no side
    seconds: dict[str, list[float]] = {"off": [], "evaluate": [], "on": []}
    for i in range(int(repeats)):  # interleaved: drift in the machine's speed hits every mode alike
        for j, mode in enumerate(seconds):
            seconds[mode].append(one_trial(mode, 3 * i + j))
    return {
        "trial_seconds_tracking_off": seconds["off"],
        "trial_seconds_test_evaluation_only": seconds["evaluate"],
        "trial_seconds_tracking_on": seconds["on"],
        "trial_cpu_seconds_tracking_off": cpu["off"],
        "trial_cpu_seconds_tracking_on": cpu["on"],
        "accounted": accounted,
        "peak_rss_mib": peak_rss_mib(),
    }


def children(options: Any) -> list[tuple[str | None, list[str]]]:
    return [(None, [str(options.tracking_repeats)])]


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    t = result
    off, evaluated, on = (
        sum(t[k]) / len(t[k])
        for k in ("trial_seconds_tracking_off", "trial_seconds_test_evaluation_only", "trial_seconds_tracking_on")
    )
    figures |= {
        "tracking_trial_seconds_off": off,
        "tracking_trial_seconds_evaluation_only": evaluated,
        "tracking_trial_seconds_on": on,
        "tracking_overhead_percent": 100 * (on - off) / off,
        "tracking_mlflow_writes_overhead_percent": 100 * (on - evaluated) / off,
    }
    if t.get("trial_cpu_seconds_tracking_on"):  # results of earlier versions of the bench lack it
        cpu_off, cpu_on = (
            sum(t[k]) / len(t[k]) for k in ("trial_cpu_seconds_tracking_off", "trial_cpu_seconds_tracking_on")
        )
        figures |= {
            "tracking_trial_cpu_seconds_off": cpu_off,
            "tracking_trial_cpu_seconds_on": cpu_on,
            "tracking_cpu_overhead_percent": 100 * (cpu_on - cpu_off) / cpu_off,
        }
    # Noise-proof: the tracking work itself, as a share of the tracked trial's wall time. The hooks'
    # time on the training thread (mostly predicting the test set) delays the trial; the writer's CPU time
    # runs beside training and costs at most itself.
    a = t["accounted"]
    hooks = sum(x["training_thread_seconds"] for x in a) / len(a)
    writer = sum(x["writer_cpu_seconds"] for x in a) / len(a)
    trial = sum(x["trial_seconds"] for x in a) / len(a)
    figures |= {
        "tracking_hooks_seconds": hooks,
        "tracking_writer_cpu_seconds": writer,
        **(
            {
                "tracking_spool_records_per_trial": sum(x["spool_records"] for x in a) / len(a),
                "tracking_spool_kib_per_trial": sum(x["spool_bytes"] for x in a) / len(a) / 1024,
            }
            if "spool_records" in a[0]  # results of earlier versions of the bench lack it
            else {}
        ),
        "tracking_accounted_percent": 100 * (hooks + writer) / (trial - hooks - writer),
        "tracking_writes_accounted_percent": 100 * writer / (trial - hooks - writer),
    }
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    table.add_row(
        "tracking overhead per trial, all of it (target <= 3 %)",
        f"{figures['tracking_overhead_percent']:+.1f} %",
        f"mean trial {figures['tracking_trial_seconds_on']:.1f} s on vs "
        f"{figures['tracking_trial_seconds_off']:.1f} s off (3 epochs, 64px, full data)",
    )
    if "tracking_cpu_overhead_percent" in figures:
        table.add_row(
            "tracking overhead per trial, process CPU time",
            f"{figures['tracking_cpu_overhead_percent']:+.1f} %",
            f"mean {figures['tracking_trial_cpu_seconds_on']:.1f} s CPU on vs "
            f"{figures['tracking_trial_cpu_seconds_off']:.1f} s off, every thread: what tracking costs the "
            "machine, less sensitive to other tenants than wall time",
        )
    table.add_row(
        "tracking work per trial, accounted (target <= 3 %)",
        f"{figures['tracking_accounted_percent']:.1f} %",
        f"{figures['tracking_hooks_seconds']:.2f} s on the training thread (test-set prediction, journaling "
        f"the writes) + {figures['tracking_writer_cpu_seconds']:.2f} s CPU in the sending thread; robust to "
        "machine noise",
    )
    if "tracking_spool_records_per_trial" in figures:
        table.add_row(
            "  the tracking spool per trial (journaled, fsynced, sent, deleted)",
            f"{figures['tracking_spool_kib_per_trial']:.0f} KiB",
            f"{figures['tracking_spool_records_per_trial']:.0f} records written to disk before they are sent; "
            "their time is in the line above (training thread: journaling; sending thread: the writes)",
        )
    table.add_row(
        "  of which MLflow writes (runs, params, metrics, PNGs)",
        f"{figures['tracking_writes_accounted_percent']:.1f} %",
        "the writer's CPU; the rest is predicting the test set for the trial's test_* metrics (wall A/B "
        f"against trials that only predict it: {figures['tracking_mlflow_writes_overhead_percent']:+.1f} %, "
        f"{figures['tracking_trial_seconds_evaluation_only']:.1f} s trials)",
    )
