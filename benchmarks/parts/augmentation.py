"""What each augmentation adds to an epoch (the input pipeline alone, and the epoch with it)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import EPOCHS, EpochClock, probe_network

AUGMENT_ROWS = (
    "none",
    "zoom",
    "horizontal_flip",
    "translate",
    "crop",
    "rotate",
    "brightness",
    "contrast",
    "gamma",
    "noise",
    "blur",
    "erase",
    "all",
)


def measure(data_root: Path, workdir: Path, row: str) -> dict[str, Any]:
    """Seconds per training epoch of the probe's network (64x66 lung crops of all 4,327 training films) with
    one augmentation at the probe's strength, all of them, or none."""
    from xraycnn.runtime import threads

    threads.configure()
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    from shortcut_probe import AUGMENT

    from xraycnn.data.augment import AugmentValues
    from xraycnn.data.pipeline import training_batches
    from xraycnn.runtime.precision import apply_policy

    policy, _ = apply_policy("auto")
    _, data, hypermodel, _, hp = probe_network(data_root, crop=True)
    steps, _ = hypermodel.preprocessing(hp)
    train = data.preprocessed(steps).train
    everything = AugmentValues(**AUGMENT)
    values = {"none": AugmentValues(), "all": everything}.get(row) or everything.only(row)
    if row == "horizontal_flip":  # off in the probe's set (a flipped chest film is not a chest film): timed on
        values = AugmentValues(horizontal_flip=True)
    batches = training_batches(train, 32, values, seed=1)
    passes = []
    for _ in range(3):  # the input pipeline alone: one pass over the data, as an epoch makes it
        started = time.perf_counter()
        for _ in batches:
            pass
        passes.append(time.perf_counter() - started)
    network = hypermodel.build(hp)
    clock = EpochClock(len(train))
    network.fit(batches, epochs=EPOCHS, verbose=0, callbacks=[clock.callback])
    return {
        "precision": policy,
        "images": len(train),
        "pipeline_seconds": passes,
        "epoch_seconds": [len(train) / r for r in clock.rates],
        "strength": {k: getattr(values, k) for k in AUGMENT if getattr(values, k)},
    }


def children(options: Any) -> list[tuple[str | None, list[str]]]:
    return [(row, [row]) for row in AUGMENT_ROWS]


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    augmentation = result
    for row, r in augmentation.items():
        figures[f"augment_{row}_epoch_seconds"] = r["epoch_seconds"][-1]
        figures[f"augment_{row}_pipeline_seconds"] = sorted(r["pipeline_seconds"])[1]  # the median of 3 passes
    if "none" in augmentation:
        base = figures["augment_none_pipeline_seconds"]
        for row in augmentation:
            # what the augmentation adds to a pass over the data; the epoch pays at most this (prefetch overlaps it)
            figures[f"augment_{row}_seconds_per_epoch"] = figures[f"augment_{row}_pipeline_seconds"] - base
            figures[f"augment_{row}_percent_of_epoch"] = (
                100 * figures[f"augment_{row}_seconds_per_epoch"] / figures["augment_none_epoch_seconds"]
            )
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    augmentation = result
    for row, r in augmentation.items():
        strength = ", ".join(f"{k} {v:g}" for k, v in r["strength"].items()) or "no augmentation"
        if row == "none":
            table.add_row(
                "epoch without augmentation (the base of the rows below)",
                f"{r['epoch_seconds'][-1]:.2f} s",
                f"{r['images']} films, 64x66 lung crops, the probe's network with BN and GAP, {r['precision']}; "
                f"a pass of the input pipeline alone {figures['augment_none_pipeline_seconds']:.2f} s",
            )
            continue
        table.add_row(
            f"augmentation cost per epoch: {row}",
            f"{figures[f'augment_{row}_seconds_per_epoch']:+.2f} s",
            f"{figures[f'augment_{row}_percent_of_epoch']:+.1f} % of the epoch at most (the pipeline runs beside "
            f"training); {strength}; epoch with it {r['epoch_seconds'][-1]:.2f} s",
        )
