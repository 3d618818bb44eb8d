"""Training images per second of the notebook's network, as the notebook feeds it and with each of the
project's pipeline choices added one at a time (the ladder), and the network alone (the ceiling)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import BATCH, EPOCHS, SIZE, TRAIN_IMAGES, EpochClock, notebook_network, peak_rss_mib

# The training ladder: each step adds one choice of the project's pipeline to the one above it.
_NOTEBOOK_OPTIONS: dict[str, Any] = {
    "source": "directory",
    "channels": 3,
    "augment_in": "model",
    "precision": "float32",
    "threads": False,
}


_STEPS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "notebook",
        "notebook-style: image_dataset_from_directory (decodes every epoch), RGB, augmentation layers in "
        "the model, float32, TF's default threads",
        {},
    ),
    ("decode_once", "+ decoded once into a uint8 array (the project's decoder and cache)", {"source": "arrays"}),
    ("one_channel", "+ 1 channel (the films are grayscale)", {"channels": 1}),
    (
        "pipeline_augmentation",
        "+ augmentation in the tf.data pipeline (parallel map, prefetch)",
        {"augment_in": "pipeline"},
    ),
    ("threads", "+ the project's thread settings", {"threads": True}),
    (
        "precision",
        "+ the project's precision policy (mixed_bfloat16 where the CPU has native bfloat16)",
        {"precision": "auto"},
    ),
]


def _cumulative(steps: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str, dict[str, Any]]]:
    rows, options = [], dict(_NOTEBOOK_OPTIONS)
    for name, label, change in steps:
        options = {**options, **change}
        rows.append((name, label, options))
    return rows


LADDER = _cumulative(_STEPS)


PROJECT_ROW = LADDER[-1][0]


# Not a pipeline: the network alone on pre-decoded tensors, no augmentation. No input pipeline can beat it,
# so project / notebook can reach at most this row / notebook on the machine at hand.
CEILING = (
    "ceiling",
    "reference: the network alone (pre-decoded, no augmentation, project's threads and precision)",
    {**LADDER[-1][2], "augment_in": "none"},
)


def _training_subset(data_root: Path, workdir: Path) -> list[tuple[Path, int]]:
    """TRAIN_IMAGES real training films, half per class, linked into workdir/train/<class>/ for the
    notebook-style loader; the same files, in the same order, for every row."""
    from xraycnn.data.discovery import discover

    files = discover(data_root)
    chosen = []
    for label in (1, 0):
        of_class = [f for f in files.train if f.label == label]
        step = len(of_class) / (TRAIN_IMAGES // 2)
        chosen += [of_class[int(i * step)] for i in range(TRAIN_IMAGES // 2)]
    for f in chosen:
        link = workdir / "train" / f.class_name / f.path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(f.path)
    return [(f.path, f.label) for f in chosen]


def measure(data_root: Path, workdir: Path, row: str) -> dict[str, Any]:
    options = dict(next(opts for name, _, opts in [*LADDER, CEILING] if name == row))
    from xraycnn.runtime import threads

    if options["threads"]:
        threads.configure()
    import keras
    import numpy as np
    import tensorflow as tf

    from xraycnn.data.images import decode_files
    from xraycnn.runtime.precision import apply_policy

    policy, reason = apply_policy(options["precision"]) if options["precision"] == "auto" else ("float32", "")
    if policy == "float32":
        keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1)
    subset = _training_subset(data_root, workdir)
    model, config = notebook_network(options["channels"], options["augment_in"] == "model")
    from xraycnn.data.augment import AugmentValues, fixed_augmentation

    augmentation = AugmentValues() if options["augment_in"] == "none" else fixed_augmentation(config.data.augmentation)
    result: dict[str, Any] = {"precision": policy, "precision_reason": reason, "threads": threads.describe()}
    if options["source"] == "directory":
        dataset = keras.utils.image_dataset_from_directory(
            workdir / "train",
            labels="inferred",
            label_mode="binary",
            class_names=["NORMAL", "COVID19"],
            color_mode="rgb",
            image_size=(SIZE, SIZE),
            batch_size=BATCH,
            shuffle=True,
            seed=1,
            verbose=False,
        )
    else:
        started = time.perf_counter()
        images, kept, _ = decode_files([p for p, _ in subset], SIZE, options["channels"])
        result["decode_seconds"] = time.perf_counter() - started
        labels = np.array([subset[i][1] for i in kept], np.int32)
        from xraycnn.data.dataset import Split
        from xraycnn.data.pipeline import training_batches

        split = Split(images, labels, tuple(str(i) for i in kept))
        if options["augment_in"] in ("pipeline", "none"):
            dataset = training_batches(split, BATCH, augmentation, seed=1)
        else:
            dataset = (
                tf.data.Dataset.from_tensor_slices((images, labels))
                .shuffle(len(labels), seed=1)
                .batch(BATCH)
                .map(lambda x, y: (tf.cast(x, tf.float32), y))
            )
    clock = EpochClock(TRAIN_IMAGES)
    model.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=[clock.callback])
    result |= {"epoch_images_per_s": clock.rates, "peak_rss_mib": peak_rss_mib()}
    return result


def children(options: Any) -> list[tuple[str | None, list[str]]]:
    """One child per row of the ladder (and the ceiling), or the rows `--training-rows` names."""
    names = [name for name, _, _ in [*LADDER, CEILING]]
    return [(name, [name]) for name in names if not options.training_rows or name in options.training_rows]


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    training = result
    for name, row in training.items():
        figures[f"train_{name}_images_per_s"] = row["epoch_images_per_s"][-1]
        figures[f"train_{name}_first_epoch_images_per_s"] = row["epoch_images_per_s"][0]
        figures[f"train_{name}_peak_rss_mib"] = row["peak_rss_mib"]
    if "notebook" in training and PROJECT_ROW in training:
        figures["project_over_notebook"] = (
            figures[f"train_{PROJECT_ROW}_images_per_s"] / figures["train_notebook_images_per_s"]
        )
    if "notebook" in training and CEILING[0] in training:
        figures["ceiling_over_notebook"] = (
            figures[f"train_{CEILING[0]}_images_per_s"] / figures["train_notebook_images_per_s"]
        )
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    training = result
    if training:
        base = training["notebook"]["epoch_images_per_s"][-1] if "notebook" in training else None
        for name, label, _ in [*LADDER, CEILING]:
            if name not in training:
                continue
            row = training[name]
            rate = row["epoch_images_per_s"][-1]
            vs = f"{rate / base:.2f}x notebook" if base else ""
            note = f"{vs}; epoch 1 {row['epoch_images_per_s'][0]:.0f}/s; peak {row['peak_rss_mib']:.0f} MiB"
            if name == "precision":
                note += f"; {row['precision']} ({row['precision_reason']})"
            if name == "threads":
                note += f"; {row['threads']}"
            table.add_row(f"train img/s: {label}", f"{rate:.1f}", note)
        if "project_over_notebook" in figures:
            table.add_row(
                "[bold]project pipeline / notebook-style[/] (target >= 3.0)",
                f"[bold]{figures['project_over_notebook']:.2f}x[/]",
                f"notebook's network, {SIZE}x{SIZE}, {TRAIN_IMAGES} real films, batch {BATCH}, epoch {EPOCHS}",
            )
        if "ceiling_over_notebook" in figures:
            table.add_row(
                "at most (ceiling / notebook-style) on this machine",
                f"{figures['ceiling_over_notebook']:.2f}x",
                "the network's own compute bounds any input pipeline",
            )
