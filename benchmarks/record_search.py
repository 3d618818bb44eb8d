"""Write what a finished search measured to a JSON file under benchmarks/results/, so that every figure the
README quotes about a search comes from a committed file: its wall time and peak memory, its trials, its
champion's test figures, shortcut audit, calls under acquisition changes, calibration and input guard, with intervals
(all from the MLflow store, as the search logged them), and the machine.

    python -m benchmarks.record_search EXPERIMENT --command "what ran the search" [--peak-rss-kib N]
        [--wall-seconds S] [--env ONEDNN_MAX_CPU_ISA=AVX2] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS
from benchmarks.machine import machine_facts, machine_slug
from xraycnn.tracking.tags import RUNG_STOP_TAG

AUDIT = ("borders_only_auc", "lungs_only_auc", "gradcam_outside_share")
SHIFT = ("shift_worst_specificity", "shift_clean_specificity", "shift_auc", "shift_worst_auc", "shift_mean_auc")
TEST = ("auc", "accuracy", "thr_accuracy", "thr_sensitivity", "thr_specificity", "ece", *AUDIT, *SHIFT)


def _with_interval(metrics: dict[str, float], key: str) -> dict[str, float] | None:
    if key not in metrics:
        return None
    out = {"value": metrics[key]}
    if f"{key}_ci_low" in metrics:
        out |= {"ci_low": metrics[f"{key}_ci_low"], "ci_high": metrics[f"{key}_ci_high"]}
    return out


def _by_step(history: list[Any]) -> list[float]:
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def timeline(
    parent: Any,
    children: list[Any],
    epochs: dict[str, int],
    wall_seconds_outside: float | None,
    curves: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Where a search's wall time went, from its runs' start and end times: before the first trial (tuner
    set-up), the span of the trials, after the last one (the champion's assessment and registration), and
    outside the parent run (imports, decoding, the report); and each trial's seconds and epochs, with its
    objective after each epoch (`curves`, by run id) and why it stopped at a rung, if it did: enough to replay
    the rungs from the file."""
    ordered = sorted(children, key=lambda r: r.info.start_time)
    parent_seconds = (parent.info.end_time - parent.info.start_time) / 1000
    trials = [
        {
            "trial_id": r.data.tags.get("xraycnn.trial_id"),
            "status": r.info.status,
            "epochs": epochs[r.info.run_id],
            "seconds": (r.info.end_time - r.info.start_time) / 1000,
        }
        | ({} if curves is None else {"objective_by_epoch": curves[r.info.run_id]})
        | ({"rung_stop": r.data.tags[RUNG_STOP_TAG]} if RUNG_STOP_TAG in r.data.tags else {})
        for r in ordered
    ]
    last_end = max(r.info.end_time for r in ordered)
    return {
        "parent_seconds": parent_seconds,
        "before_first_trial_seconds": (ordered[0].info.start_time - parent.info.start_time) / 1000,
        "trials_span_seconds": (last_end - ordered[0].info.start_time) / 1000,
        "after_last_trial_seconds": (parent.info.end_time - last_end) / 1000,
        "outside_parent_run_seconds": None if wall_seconds_outside is None else wall_seconds_outside - parent_seconds,
        "trials": trials,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="the experiment's name (its file's stem), e.g. robust")
    parser.add_argument("--command", required=True, help="the command that ran the search, as run")
    parser.add_argument("--peak-rss-kib", type=int, help="the search's peak memory (`/usr/bin/time -v`)")
    parser.add_argument("--wall-seconds", type=float, help="the search's wall time from outside (`/usr/bin/time`)")
    parser.add_argument("--env", action="append", default=[], help="environment the search ran with, NAME=VALUE")
    parser.add_argument("--tracking-uri", help="default: the project's store")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from xraycnn.report.snapshot import latest_search_run, search_tuner
    from xraycnn.tracking.store import resolve_store
    from xraycnn.tracking.tags import search_experiment_name

    store = resolve_store(args.tracking_uri)
    client = store.client()
    run_id = latest_search_run(client, search_experiment_name(args.experiment))
    parent = client.get_run(run_id)
    tags, metrics = parent.data.tags, parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=10_000
    )
    # Epochs each trial trained, as logged (early stopping included; a Hyperband continuation's own epochs).
    epochs = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val_auc")) for r in children}
    # The metric the tuner ranked on, and the rungs with it (under a gate or guard, the gated objective).
    objective = search_tuner(parent).selection_metric
    curves = {r.info.run_id: _by_step(client.get_metric_history(r.info.run_id, objective)) for r in children}
    best = client.get_run(tags["xraycnn.best_run_id"])
    uri = f"models:/{tags['xraycnn.registered_model']}/{tags['xraycnn.registered_version']}"
    record: dict[str, Any] = {
        "what": f"a search of experiments/{args.experiment}.toml, read back from MLflow",
        "command": args.command,
        "env": args.env,
        "recorded_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "experiment_sha256": tags.get("xraycnn.experiment_sha256"),
        "git_commit": tags.get("mlflow.source.git.commit"),
        "precision": tags.get("xraycnn.precision"),
        "parent_run_id": run_id,
        "search_wall_seconds": metrics.get("search_wall_seconds"),
        "wall_seconds_outside": args.wall_seconds,
        "peak_rss_mib": None if args.peak_rss_kib is None else args.peak_rss_kib / 1024,
        "trials": len({r.data.tags.get("xraycnn.trial_id") for r in children}),
        "trials_finished": int(metrics.get("trials_completed", 0)),
        "epochs_trained": sum(epochs[r.info.run_id] for r in children if r.info.status == "FINISHED"),
        "selection_rule": tags.get("xraycnn.selection_rule"),
        "objective": objective,
        "timeline": timeline(parent, children, epochs, args.wall_seconds, curves),
        "champion": {
            "model": uri,
            "alias": tags.get("xraycnn.registered_alias"),
            "trial_id": tags.get("xraycnn.best_trial_id"),
            "run_name": best.info.run_name,
            "hyperparameters": {k: v for k, v in best.data.params.items() if "." not in k and k != "seed"},
            "best_epoch": best.data.tags.get("xraycnn.best_epoch"),
            "best_val_auc": best.data.metrics.get("best_val_auc"),
            "best_val_shift_auc": best.data.metrics.get("best_val_shift_auc"),
            "val_audit": {k: _with_interval(best.data.metrics, f"best_val_{k}") for k in AUDIT},
            "val_shift": {k: _with_interval(best.data.metrics, f"best_val_{k}") for k in SHIFT},
            "threshold": metrics.get("test_threshold"),
            "test": {k: _with_interval(metrics, f"test_{k}") for k in TEST},
            "test_per_source_auc": {
                k.removeprefix("test_source_").removesuffix("_auc"): _with_interval(metrics, k)
                for k in metrics
                if k.startswith("test_source_") and k.endswith("_auc") and "only" not in k
            },
            "test_per_source_thr_specificity": {
                k.removeprefix("test_source_").removesuffix("_thr_specificity"): _with_interval(metrics, k)
                for k in metrics
                if k.startswith("test_source_") and k.endswith("_thr_specificity")
            },
            "test_shift_per_change": {
                k.removeprefix("test_shift_"): metrics[k]
                for k in metrics
                if k.startswith("test_shift_") and "_ci_" not in k
            },
            "test_ece_uncalibrated": metrics.get("test_ece_uncalibrated"),
            "calibration": {"scale": metrics.get("calibration_scale"), "shift": metrics.get("calibration_shift")},
            "input_guard": {  # shares refused: real test films, as given and under changes; made non-films
                k.removeprefix("test_"): metrics[k] for k in metrics if k.startswith(("test_guard_", "guard_"))
            },
            "worst_change": tags.get("xraycnn.test_shift_worst_change")
            or client.get_model_version(tags["xraycnn.registered_model"], tags["xraycnn.registered_version"]).tags.get(
                "xraycnn.test_shift_worst_change"
            ),
        },
    }
    out = args.out or RESULTS / f"search-{args.experiment}-{datetime.now(UTC):%Y%m%d-%H%M}-{machine_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["champion"]["test"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
