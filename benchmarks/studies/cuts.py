"""A study, not a core figure: changes weighed side by side on the champion's training (a new iterator per
epoch or one per trial, the augmentation's gamma as `pow` or `exp(g log x)`, Grad-CAM eager or as one graph)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import BREAKDOWN_EPOCHS, EpochClock, champion_trial

CUTS_ROUNDS = 2


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
    """The 2026-11-28 cuts around the training steps, each against what it replaced, in one process: the
    champion's training with a new iterator per epoch vs one per trial (interleaved), the augmentation's gamma
    as `pow` vs `exp(g log x)`, Grad-CAM run eagerly vs as one graph."""
    import keras
    import numpy as np
    import tensorflow as tf

    from xraycnn.data.pipeline import training_batches, training_stream
    from xraycnn.evaluation.gradcam import gradcam

    config, hypermodel, _, hp, steps = champion_trial(data_root, workdir)
    inputs = hypermodel.inputs(steps)
    batch = int(config.space.batch_size.declare(hp, "batch_size"))
    values = hypermodel.augmentation(hp)
    epoch_seconds: dict[str, list[float]] = {"per_epoch": [], "per_trial": []}
    for _ in range(CUTS_ROUNDS):
        for name in epoch_seconds:
            keras.backend.clear_session()
            network = hypermodel.build(hp)
            if name == "per_epoch":
                train, steps_per_epoch = training_batches(inputs.train, batch, values, config.seed), None
            else:
                train, steps_per_epoch = training_stream(
                    inputs.train, batch, values, config.seed, config.training.steps_per_execution
                )
            clock = EpochClock(len(inputs.train))
            network.fit(
                train,
                steps_per_epoch=steps_per_epoch,
                epochs=BREAKDOWN_EPOCHS + 1,
                callbacks=[clock.callback],
                verbose=0,
            )
            epoch_seconds[name] += [len(inputs.train) / rate for rate in clock.rates[1:]]  # epoch 1 traces

    films = tf.constant(inputs.train.images, tf.float32) / 255.0
    gamma = tf.exp(tf.random.stateless_uniform((len(inputs.train), 1, 1, 1), (1, 2), -values.gamma, values.gamma))
    gamma_cpu: dict[str, float] = {}
    for name, power in (
        ("pow", tf.function(lambda x, g: tf.pow(x, g))),
        ("exp_log", tf.function(lambda x, g: tf.exp(g * tf.math.log(x)))),
    ):
        power(films, gamma)
        timings = []
        for _ in range(5):
            started = time.process_time()
            power(films, gamma).numpy()
            timings.append(time.process_time() - started)
        gamma_cpu[name] = min(timings)
    gamma_difference = float(tf.reduce_max(tf.abs(tf.pow(films, gamma) - tf.exp(gamma * tf.math.log(films)))))

    model = hypermodel.registered_model(hp, hypermodel.build(hp))
    test_films = hypermodel.data.test.images.astype(np.float32)
    gradcam_seconds: dict[str, float] = {}
    maps = {}
    for name, eager in (("eager", True), ("graph", False)):
        tf.config.run_functions_eagerly(eager)
        try:
            started = time.perf_counter()
            maps[name] = gradcam(model, test_films).maps
            gradcam_seconds[name] = time.perf_counter() - started
        finally:
            tf.config.run_functions_eagerly(False)
    return {
        "what": "default.toml with the champion's architecture, float32, real data",
        "train_images": len(inputs.train),
        "batch": batch,
        "epoch_seconds": epoch_seconds,
        "gamma_cpu_seconds_per_epoch_of_films": gamma_cpu,
        "gamma_max_difference": gamma_difference,
        "gradcam_test_films": len(test_films),
        "gradcam_seconds": gradcam_seconds,
        "gradcam_max_difference": float(np.max(np.abs(maps["eager"] - maps["graph"]))),
    }


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    c = result
    for name, seconds in c["epoch_seconds"].items():
        figures[f"cuts_epoch_seconds_iterator_{name}"] = sum(seconds) / len(seconds)
    for name, seconds in c["gamma_cpu_seconds_per_epoch_of_films"].items():
        figures[f"cuts_gamma_cpu_seconds_{name}"] = seconds
    for name, seconds in c["gradcam_seconds"].items():
        figures[f"cuts_gradcam_seconds_{name}"] = seconds
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    c = result
    table.add_row(
        "an epoch of the champion's training steps: a new iterator each epoch / one per trial",
        f"{figures['cuts_epoch_seconds_iterator_per_epoch']:.2f} / "
        f"{figures['cuts_epoch_seconds_iterator_per_trial']:.2f} s",
        f"{c['train_images']} films, batch {c['batch']}, augmented; epochs 2-{BREAKDOWN_EPOCHS + 1} of "
        f"{CUTS_ROUNDS} interleaved fits a side",
    )
    table.add_row(
        "the augmentation's gamma over an epoch's films: pow / exp(g log x), CPU",
        f"{figures['cuts_gamma_cpu_seconds_pow']:.3f} / {figures['cuts_gamma_cpu_seconds_exp_log']:.3f} s",
        f"largest difference {c['gamma_max_difference']:.1e}",
    )
    table.add_row(
        "Grad-CAM of the test films: eager / one graph",
        f"{figures['cuts_gradcam_seconds_eager']:.2f} / {figures['cuts_gradcam_seconds_graph']:.2f} s",
        f"{c['gradcam_test_films']} films; largest difference of the maps {c['gradcam_max_difference']:.1e}",
    )
