"""What the shortcut audit and the selection guards cost a trial, on whole and on cropped films."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import EpochClock, probe_network


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
    """What the shortcut audit and the acquisition guard cost: a trial's figures at its end (validation:
    borders-only and lungs-only predictions, Grad-CAM of 256 films, the calls under every acquisition change,
    per source, bootstrap; plus its test metrics), the gate's per-epoch borders-only AUC and the guard's
    per-epoch worst-change specificity, for a model on whole films and one on lung crops (whose borders-only
    films are all black: nothing to predict)."""
    from xraycnn.runtime import threads

    threads.configure()
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    from xraycnn.evaluation.trial_scoring import SelectionGuards
    from xraycnn.runtime.precision import apply_policy

    policy, _ = apply_policy("auto")
    out: dict[str, Any] = {"precision": policy}
    for name, crop in (("whole", False), ("cropped", True)):
        config, data, hypermodel, scorer, hp = probe_network(data_root, crop)
        network = hypermodel.build(hp)
        clock = EpochClock(len(data.train))
        hypermodel.fit(hp, network, callbacks=[clock.callback])  # the gate runs in every epoch: timed below
        steps = hypermodel.preprocessing(hp)[0]
        gate = SelectionGuards(config, scorer.masked_inputs(steps, "borders"), data.val.labels, None)
        guard = SelectionGuards(config, None, data.val.labels, scorer.guard_films(steps))
        seconds = {}
        for label, callback in (("gate", gate), ("guard", guard)):
            callback.set_model(network)
            callback.on_epoch_end(0, {"val_auc": 0.5})  # warm-up: tracing
            started = time.perf_counter()
            for _ in range(3):
                callback.on_epoch_end(0, {"val_auc": 0.5})
            seconds[label] = (time.perf_counter() - started) / 3
        scorer.scores(hp, network)  # warm-up: tracing
        started = time.perf_counter()
        scorer.scores(hp, network)
        out[name] = {
            "epoch_seconds": len(data.train) / clock.rates[-1],
            "gate_seconds_per_epoch": seconds["gate"],
            "guard_seconds_per_epoch": seconds["guard"],
            "trial_figures_seconds": time.perf_counter() - started,
        }
    return out


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    for name in ("whole", "cropped"):
        r = result[name]
        figures |= {
            f"audit_{name}_epoch_seconds": r["epoch_seconds"],
            f"audit_{name}_trial_seconds": r["trial_figures_seconds"],
            f"audit_{name}_gate_seconds_per_epoch": r["gate_seconds_per_epoch"],
            f"audit_{name}_gate_percent_of_epoch": 100 * r["gate_seconds_per_epoch"] / r["epoch_seconds"],
        }
        if "guard_seconds_per_epoch" in r:  # runs before the acquisition guard have none
            figures[f"audit_{name}_guard_seconds_per_epoch"] = r["guard_seconds_per_epoch"]
            figures[f"audit_{name}_guard_percent_of_epoch"] = 100 * r["guard_seconds_per_epoch"] / r["epoch_seconds"]
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    for name in ("whole", "cropped"):
        table.add_row(
            f"shortcut audit of a trial ({name} films)",
            f"{figures[f'audit_{name}_trial_seconds']:.2f} s",
            "at its end, on validation: borders-only and lungs-only predictions, Grad-CAM of 256 films, "
            f"bootstrap, and its test metrics; an epoch takes {figures[f'audit_{name}_epoch_seconds']:.1f} s",
        )
        table.add_row(
            f"shortcut gate per epoch ({name} films)",
            f"{figures[f'audit_{name}_gate_seconds_per_epoch']:.2f} s",
            f"{figures[f'audit_{name}_gate_percent_of_epoch']:.1f} % of an epoch: the borders-only AUC on "
            "validation, with `max_borders_only_auc` set (a crop sees black borders-only films: nothing to do)",
        )
        if f"audit_{name}_guard_seconds_per_epoch" in figures:
            table.add_row(
                f"acquisition guard per epoch ({name} films)",
                f"{figures[f'audit_{name}_guard_seconds_per_epoch']:.2f} s",
                f"{figures[f'audit_{name}_guard_percent_of_epoch']:.1f} % of an epoch: the threshold and the "
                "worst-change specificity and AUC of the validation films under 10 changes (`val_shift_auc`, "
                "`min_shift_specificity`)",
            )
