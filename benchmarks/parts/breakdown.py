"""Where a trial of the default search goes: its epochs' training steps, validation and selection guards,
its start and end, and one training step by kind of layer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import BREAKDOWN_EPOCHS, champion_trial

LAYER_REPEATS = 30


def _layer_seconds(network: Any, batch: int) -> dict[str, float]:
    """Seconds of one training step's forward and backward pass per kind of layer, each layer timed alone on
    a batch of its own input shape (the sum is close to, not equal to, a fused step)."""
    import tensorflow as tf

    kinds: dict[str, float] = {}
    for layer in network.layers:
        shape = (batch, *layer.input.shape[1:])
        x = tf.random.uniform(shape, 0, 1, tf.float32)

        @tf.function
        def step(x: Any, layer: Any = layer) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32))
            return tape.gradient(y, [x, *layer.trainable_weights])

        step(x)
        started = time.perf_counter()
        for _ in range(LAYER_REPEATS):
            outputs = step(x)
        [o.numpy() for o in outputs if o is not None]
        kind = type(layer).__name__
        kinds[kind] = kinds.get(kind, 0.0) + (time.perf_counter() - started) / LAYER_REPEATS
    return kinds


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
    """Where a trial of the default search goes, on the real data with the champion's architecture
    (float32, the project's threads): network build, per epoch its training steps, validation and the
    shortcut gate, then the trial's scores at its end (test metrics, the audit's masked predictions and
    Grad-CAM); and one training step split by kind of layer."""
    import keras

    from xraycnn.model.predict import predict_probabilities
    from xraycnn.runtime import threads

    config, hypermodel, scorer, hp, steps = champion_trial(data_root, workdir)
    started = time.perf_counter()
    inputs = hypermodel.inputs(steps)  # the film steps over every film, once per preprocessing (cached after)
    masked = scorer.masked_inputs(steps, "borders")
    preprocess_seconds = time.perf_counter() - started
    started = time.perf_counter()
    network = hypermodel.build(hp)
    build_seconds = time.perf_counter() - started
    marks: list[dict[str, float]] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            marks.append({"begin": time.perf_counter()})

        def on_test_begin(self, logs: Any = None) -> None:
            marks[-1]["test_begin"] = time.perf_counter()

        def on_test_end(self, logs: Any = None) -> None:
            marks[-1]["test_end"] = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            marks[-1]["end"] = time.perf_counter()

    fit_epochs = None if config.epochs_spec() is not None else BREAKDOWN_EPOCHS
    hypermodel.fit(hp, network, callbacks=[Clock()], epochs=fit_epochs)
    epochs = [
        {
            "train_steps": m["test_begin"] - m["begin"],
            "validation": m["test_end"] - m["test_begin"],
            "gate_and_callbacks": m["end"] - m["test_end"],
        }
        for m in marks
    ]
    started = time.perf_counter()
    predict_probabilities(network, inputs.test.images)
    test_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scorer.scores(hp, network)
    scores_seconds = time.perf_counter() - started
    batch = int(config.space.batch_size.declare(hp, "batch_size"))
    layers = _layer_seconds(network, batch)
    return {
        "what": "default.toml with the champion's architecture, float32, real data",
        "train_images": len(inputs.train),
        "val_images": len(inputs.val),
        "test_images": len(inputs.test),
        "masked_val_images": len(masked),
        "batch": batch,
        "preprocess_seconds": preprocess_seconds,
        "build_seconds": build_seconds,
        "epochs": epochs,
        "test_prediction_seconds": test_seconds,
        "trial_scores_seconds": scores_seconds,
        "layer_step_seconds": layers,
        "threads": threads.describe(),
    }


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    d = result
    later = d["epochs"][1:] or d["epochs"]
    for part in ("train_steps", "validation", "gate_and_callbacks"):
        figures[f"breakdown_epoch_{part}_seconds"] = sum(e[part] for e in later) / len(later)
    figures["breakdown_trial_scores_seconds"] = d["trial_scores_seconds"]
    total = sum(d["layer_step_seconds"].values())
    for kind, seconds in d["layer_step_seconds"].items():
        figures[f"breakdown_step_{kind}_percent"] = 100 * seconds / total
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    d = result
    epoch = {k: figures[f"breakdown_epoch_{k}_seconds"] for k in ("train_steps", "validation", "gate_and_callbacks")}
    table.add_row(
        "a trial's epoch: training steps / validation / gate and callbacks",
        " / ".join(f"{v:.2f}" for v in epoch.values()) + " s",
        f"{d['what']}; {d['train_images']} + {d['val_images']} films, batch {d['batch']}, epochs 2-"
        f"{len(d['epochs'])} (epoch 1: {d['epochs'][0]['train_steps']:.2f} s of steps)",
    )
    table.add_row(
        "a trial's start and end: film steps / build / its scores (test + audit)",
        f"{d['preprocess_seconds']:.2f} / {d['build_seconds']:.2f} / {d['trial_scores_seconds']:.2f} s",
        f"the test prediction alone {d['test_prediction_seconds']:.2f} s ({d['test_images']} films); "
        "the film steps run once per preprocessing of a search",
    )
    total = sum(d["layer_step_seconds"].values())
    shares = sorted(d["layer_step_seconds"].items(), key=lambda kv: -kv[1])
    table.add_row(
        "one training step by kind of layer, each layer alone (forward + backward)",
        f"{1000 * total:.1f} ms",
        ", ".join(f"{k} {1000 * v:.1f} ms ({100 * v / total:.0f} %)" for k, v in shares),
    )
