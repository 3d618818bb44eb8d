"""`make bench`: how fast and how heavy the search is, measured side by side in one run on the real data.

Every measurement runs in its own Python process (a fresh TensorFlow runtime: thread settings take effect
and peak memory is its own), one after the other, so the rows of the table are comparable. It prints one
table, writes the figures as JSON under benchmarks/results/ and logs them to the MLflow run
`bench-<time>` of the experiment `xraycnn-bench` in the project's store.

    python benchmarks/bench.py            # everything (about 40 min on 2 CPU cores)
    python benchmarks/bench.py --only training
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import machine_facts, machine_slug

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SIZE = 150  # the notebook's network at the notebook's image size
TRAIN_IMAGES = 1000
EPOCHS = 2
BATCH = 32

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


# --------------------------------------------------------------------------------------------------------
# Child processes: one measurement each, printed as one JSON line on stdout.
# --------------------------------------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _notebook_network(channels: int, augment_in_model: bool) -> Any:
    """The notebook's CNN, built by the project's hypermodel from experiments/seed.toml."""
    import keras
    import keras_tuner as kt

    from xraycnn.config import load_experiment
    from xraycnn.data.dataset import PreparedData
    from xraycnn.model.hypermodel import CxrHyperModel, metrics

    config = load_experiment(REPO / "experiments" / "seed.toml").config
    shape_only = PreparedData("", "", SIZE, channels, None, None, None)  # type: ignore[arg-type]
    hypermodel = CxrHyperModel(config, shape_only)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    network = hypermodel.build(hp)
    if not augment_in_model:
        return network, config
    from xraycnn.data.augment import fixed_augmentation

    augmentation = fixed_augmentation(config.data.augmentation)
    layers = [keras.Input((SIZE, SIZE, channels))]
    if augmentation.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    layers.append(keras.layers.RandomZoom((-augmentation.zoom, augmentation.zoom), fill_mode="nearest"))
    model = keras.Sequential([*layers, *network.layers])
    model.compile(
        optimizer=keras.optimizers.Adam(hp.values["learning_rate"]),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=metrics(),
    )
    return model, config


class _EpochClock:
    """Images per second of each epoch's training steps (no validation in these runs)."""

    def __init__(self, images: int) -> None:
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                outer.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                outer.rates.append(images / (time.perf_counter() - outer.started))

        self.rates: list[float] = []
        self.started = 0.0
        self.callback = Callback()


def child_training(row: str, data_root: Path, workdir: Path) -> dict[str, Any]:
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
    model, config = _notebook_network(options["channels"], options["augment_in"] == "model")
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
    clock = _EpochClock(TRAIN_IMAGES)
    model.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=[clock.callback])
    result |= {"epoch_images_per_s": clock.rates, "peak_rss_mib": _peak_rss_mib()}
    return result


# The default search's champion (benchmarks/results/search-default-20261127-1448-*.json, trial 7), as --set
# overrides of experiments/default.toml: the architecture the efficiency rows train.
DEFAULT_CHAMPION = (
    "space.conv_blocks=4",
    "space.filters=[16, 32, 64, 64]",
    "space.kernel_size=3",
    "space.batch_norm=true",
    'space.head="gap"',
    "space.dropout=0.2",
    "space.dense_units=128",
    "space.learning_rate=0.00147172",
    "space.batch_size=32",
)
EFFICIENCY_STEPS = 40  # training steps per timed epoch
MATMUL_SIDE = 2048


def training_flops_per_image(network: Any) -> float:
    """FLOPs of one training step per image, from the model's own graph: TensorFlow's profiler counts the
    forward pass (a multiply-add is 2); the backward pass of convolutions and dense layers costs about twice
    the forward (gradients of the inputs and of the weights), so a training step is about 3x."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *network.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: network(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return 3.0 * float(info.total_float_ops)


def matmul_gflops(side: int = MATMUL_SIDE, repeats: int = 20) -> float:
    """The CPU's float32 rate on a large matrix product (TensorFlow's own kernel): the peak to compare with."""
    import tensorflow as tf

    a = tf.random.uniform((side, side), dtype=tf.float32)
    b = tf.random.uniform((side, side), dtype=tf.float32)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            product(a, b).numpy()
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * side**3 / best / 1e9


EFFICIENCY_NETWORKS = {
    "notebook": (REPO / "experiments" / "seed.toml", (), "the notebook's network"),
    "default_champion": (REPO / "experiments" / "default.toml", DEFAULT_CHAMPION, "the default search's champion"),
}


def _efficiency_network(name: str) -> tuple[Any, int, str]:
    """(network compiled as its experiment compiles it, batch size, what it is) of EFFICIENCY_NETWORKS[name]."""
    import keras_tuner as kt

    from xraycnn.config import load_experiment, parse_overrides
    from xraycnn.data.dataset import PreparedData
    from xraycnn.model.hypermodel import CxrHyperModel

    path, overrides, what = EFFICIENCY_NETWORKS[name]
    config = load_experiment(path, parse_overrides(overrides)).config
    size = SIZE if name == "notebook" else config.data.image_size
    channels = 3 if name == "notebook" else 1
    shape_only = PreparedData("", "", size, channels, None, None, None)  # type: ignore[arg-type]
    hypermodel = CxrHyperModel(config, shape_only)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    network = hypermodel.build(hp)
    shape = "x".join(map(str, network.input_shape[1:]))
    return network, int(config.space.batch_size.declare(hp, "batch_size")), f"{what}, input {shape}"


def _unfused(layer: Any) -> Any:
    """The same layer, with Keras' own batch normalisation in place of the project's fused one."""
    import keras

    from xraycnn.model.layers import FusedBatchNormalization

    if isinstance(layer, FusedBatchNormalization):
        return keras.layers.BatchNormalization.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def child_efficiency(data_root: Path, workdir: Path) -> dict[str, Any]:
    """Achieved training GFLOP/s of the notebook's network and of the default champion's architecture (float32,
    the project's threads; random tensors of the right shape: the arithmetic does not depend on the pixels),
    against the float32 matmul rate measured before and after them in the same process."""
    from xraycnn.runtime import threads

    threads.configure()
    import keras
    import numpy as np
    import tensorflow as tf

    from xraycnn.model.hypermodel import metrics as project_metrics

    keras.mixed_precision.set_global_policy("float32")
    peak_before = matmul_gflops()
    rows: dict[str, Any] = {}
    networks = {name: _efficiency_network(name) for name in EFFICIENCY_NETWORKS}
    # Changes to the champion's training, one per row, each against the champion's own row in the same
    # process (the learning rate does not change the arithmetic); what a row does not change is compiled as
    # the experiment compiles it (its steps per execution included).
    for variant, change, what in (
        ("default_champion_keras_bn", {"keras_bn": True}, "with Keras' own BatchNormalization (unfused)"),
        ("default_champion_spe1", {"steps_per_execution": 1}, "one step per execution (Keras' default)"),
        ("default_champion_no_batch_metrics", {"metrics": ["accuracy"]}, "AUC, precision, recall left out"),
        ("default_champion_batch64", {"batch": 64}, "at batch 64"),
        ("default_champion_batch128", {"batch": 128}, "at batch 128"),
    ):
        network, batch, base_what = _efficiency_network("default_champion")
        batch = change.get("batch", batch)
        steps_per_execution = change.get("steps_per_execution", network.steps_per_execution)
        if change.get("keras_bn"):
            network = keras.models.clone_model(network, clone_function=_unfused)
        network.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=change.get("metrics", project_metrics()),
            steps_per_execution=steps_per_execution,
        )
        networks[variant] = (network, batch, f"{base_what} {what}")
    for name, (network, batch, what) in networks.items():
        flops = training_flops_per_image(network)
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (batch * 8, *network.input_shape[1:])).astype(np.float32)
        labels = rng.integers(0, 2, (batch * 8, 1)).astype(np.float32)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).repeat().prefetch(2)
        clock = _EpochClock(batch * EFFICIENCY_STEPS)
        network.fit(dataset, epochs=3, steps_per_epoch=EFFICIENCY_STEPS, verbose=0, callbacks=[clock.callback])
        rate = max(clock.rates[1:])  # epoch 1 traces the step function
        rows[name] = {
            "what": what,
            "batch": batch,
            "training_flops_per_image": flops,
            "images_per_s": rate,
            "gflops": rate * flops / 1e9,
        }
    peak_after = matmul_gflops()
    peak = max(peak_before, peak_after)
    for row in rows.values():
        row["share_of_matmul_peak"] = row["gflops"] / peak
    return {
        "matmul_gflops_before": peak_before,
        "matmul_gflops_after": peak_after,
        "matmul_side": MATMUL_SIDE,
        "precision": "float32",
        "threads": threads.describe(),
        "networks": rows,
    }


BREAKDOWN_EPOCHS = 3
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


def _champion_trial(data_root: Path, workdir: Path) -> tuple[Any, Any, Any, Any]:
    """(config, hypermodel, hyperparameters, film steps) of a trial of default.toml with the champion's
    architecture on the real data, float32, the project's threads, trained BREAKDOWN_EPOCHS epochs."""
    from xraycnn.runtime import threads

    threads.configure()
    import keras
    import keras_tuner as kt

    from xraycnn.config import load_experiment, parse_overrides
    from xraycnn.data.dataset import prepare_data
    from xraycnn.data.discovery import discover
    from xraycnn.model.hypermodel import CxrHyperModel

    keras.mixed_precision.set_global_policy("float32")
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    # The epochs through the budget: outside Hyperband the search space declares them, and fit takes them there.
    overrides = parse_overrides([*DEFAULT_CHAMPION, f"budget.max_epochs={BREAKDOWN_EPOCHS}"])
    config = load_experiment(REPO / "experiments" / "default.toml", overrides).config
    data = prepare_data(discover(data_root), config.data, config.seed)
    hypermodel = CxrHyperModel(config, data)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    steps, _ = hypermodel.preprocessing(hp)
    return config, hypermodel, hp, steps


def child_breakdown(data_root: Path, workdir: Path) -> dict[str, Any]:
    """Where a trial of the default search goes, on the real data with the champion's architecture
    (float32, the project's threads): network build, per epoch its training steps, validation and the
    shortcut gate, then the trial's scores at its end (test metrics, the audit's masked predictions and
    Grad-CAM); and one training step split by kind of layer."""
    import keras

    from xraycnn.evaluation import predict_probabilities
    from xraycnn.runtime import threads

    config, hypermodel, hp, steps = _champion_trial(data_root, workdir)
    started = time.perf_counter()
    inputs = hypermodel.inputs(steps)  # the film steps over every film, once per preprocessing (cached after)
    masked = hypermodel.masked_inputs(steps, "borders")
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
    hypermodel.trial_scores(hp, network)
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


CUTS_ROUNDS = 2


def child_cuts(data_root: Path, workdir: Path) -> dict[str, Any]:
    """The 2026-11-28 cuts around the training steps, each against what it replaced, in one process: the
    champion's training with a new iterator per epoch vs one per trial (interleaved), the augmentation's gamma
    as `pow` vs `exp(g log x)`, Grad-CAM run eagerly vs as one graph."""
    import keras
    import numpy as np
    import tensorflow as tf

    from xraycnn.data.pipeline import training_batches, training_stream
    from xraycnn.evaluation.gradcam import gradcam

    config, hypermodel, hp, steps = _champion_trial(data_root, workdir)
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
            clock = _EpochClock(len(inputs.train))
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


def child_decode(data_root: Path, workdir: Path) -> dict[str, Any]:
    """First-epoch cost of the project's pipeline: digest, decode and cache write of the whole dataset at the
    default search's and the notebook's size, then the cache read a later search pays instead."""
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    from xraycnn.config import DataConfig
    from xraycnn.data import dataset
    from xraycnn.data.discovery import discover

    files = discover(data_root)
    result: dict[str, Any] = {"images": len(files.train) + len(files.test)}
    started = time.perf_counter()
    dataset.dataset_digest(files)
    result["digest_seconds"] = time.perf_counter() - started
    for size in (64, SIZE):
        config = DataConfig(image_size=size)
        started = time.perf_counter()
        dataset.prepare_data(files, config, seed=1)
        cold = time.perf_counter() - started
        dataset._DECODED.clear()
        started = time.perf_counter()
        dataset.prepare_data(files, config, seed=1)
        warm = time.perf_counter() - started
        result[f"cold_{size}px_seconds"], result[f"cached_{size}px_seconds"] = cold, warm
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def child_inference(data_root: Path, workdir: Path) -> dict[str, Any]:
    """Images/s of a model loaded by name from the registry: the notebook's network registered in a
    temporary store, and the project's own champion when there is one."""
    from xraycnn.runtime import threads

    threads.configure()
    import mlflow
    import numpy as np

    from xraycnn import paths
    from xraycnn.data.discovery import discover
    from xraycnn.data.images import decode_files
    from xraycnn.errors import ModelNotFoundError
    from xraycnn.registry import Selection, load_keras_model, log_and_register
    from xraycnn.runtime.precision import apply_policy
    from xraycnn.tracking.store import resolve_store

    apply_policy("auto")
    files = discover(data_root)
    test_paths = [f.path for f in files.test]
    result: dict[str, Any] = {"images": len(test_paths)}

    def rate(model: Any, size: int, channels: int) -> float:
        images = decode_files(test_paths, size, channels)[0].astype(np.float32)
        model.predict(images[:256], batch_size=256, verbose=0)  # warm up: tracing, allocation
        started = time.perf_counter()
        model.predict(images, batch_size=256, verbose=0)
        return len(images) / (time.perf_counter() - started)

    resolve_store(f"sqlite:///{workdir / 'store' / 'mlflow.db'}")
    model, _ = _notebook_network(1, augment_in_model=False)
    with mlflow.start_run():
        log_and_register(
            model,
            model_name="bench-notebook",
            objective="val_auc",
            selection=Selection(0.5),
            direction="max",
            tags={},
            description="bench",
        )
    loaded = load_keras_model("models:/bench-notebook@champion")
    result["notebook_150px_images_per_s"] = rate(loaded, SIZE, 1)

    project_store = f"sqlite:///{paths.mlruns_dir() / 'mlflow.db'}"
    if (paths.mlruns_dir() / "mlflow.db").is_file():
        resolve_store(project_store)
        try:
            champion = load_keras_model("models:/xraycnn@champion")
        except ModelNotFoundError:  # no champion yet: the row says so
            champion = None
        if champion is not None:
            from xraycnn.data.images import input_shape_of

            size, _, channels = input_shape_of(champion)
            result["champion_size"] = size
            result["champion_images_per_s"] = rate(champion, size, channels)
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def child_tracking(data_root: Path, workdir: Path, repeats: int) -> dict[str, Any]:
    """Wall time of the same trial (the default search's data, one fixed network, 3 epochs) with the
    MLflow trial tracking on and off, alternated so drift in the machine's speed hits both alike."""
    from xraycnn.runtime import threads

    threads.configure()
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    from rich.console import Console

    from xraycnn.config import ExperimentConfig, load_experiment
    from xraycnn.data.dataset import prepare_data
    from xraycnn.data.discovery import discover
    from xraycnn.jobs.session import Session, fixed_params
    from xraycnn.jobs.spooling import open_spool
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
    parent = session.runs.client.create_run(experiment_id, run_name="bench-parent").info.run_id

    from xraycnn.tuning.tuners import SearchListener

    hypermodel = CxrHyperModel(config, data)

    class EvaluateOnly(SearchListener):
        """What a trial run's test metrics and validation audit cost to compute, without writing to MLflow."""

        def trial_completed(self, trial: Any, model: Any) -> None:
            hypermodel.trial_scores(trial.hyperparameters, model)

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
            spooled = open_spool(workdir / "spools" / f"t{index}", "main", store.uri, Console(quiet=True))
            tracker = TimedTracker(
                spooled, experiment_id, parent, fixed_params(session), data, config.tuner, hypermodel.trial_scores
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
    for i in range(repeats):  # interleaved: drift in the machine's speed hits every mode alike
        for j, mode in enumerate(seconds):
            seconds[mode].append(one_trial(mode, 3 * i + j))
    return {
        "trial_seconds_tracking_off": seconds["off"],
        "trial_seconds_test_evaluation_only": seconds["evaluate"],
        "trial_seconds_tracking_on": seconds["on"],
        "trial_cpu_seconds_tracking_off": cpu["off"],
        "trial_cpu_seconds_tracking_on": cpu["on"],
        "accounted": accounted,
        "peak_rss_mib": _peak_rss_mib(),
    }


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


def _probe_network(data_root: Path, crop: bool) -> tuple[Any, Any, Any, Any]:
    """The shortcut probe's network with batch norm and global pooling, on films cropped to the lungs and
    equalised (`crop`) or whole: (config, data as films, hypermodel, hp)."""
    import keras_tuner as kt
    from shortcut_probe import BN_GAP, NETWORK

    from xraycnn.config import ExperimentConfig
    from xraycnn.data.dataset import prepare_data
    from xraycnn.data.discovery import discover
    from xraycnn.model.hypermodel import CxrHyperModel

    preprocess = {"crop": True, "equalize": "global", "standardize": True} if crop else {"standardize": True}
    config = ExperimentConfig.model_validate(
        {
            "data": {"image_size": 86 if crop else 64, "preprocess": preprocess},
            "space": {**NETWORK, **BN_GAP},
            "tuner": {"algorithm": "random", "max_borders_only_auc": 0.6},
            "budget": {"max_trials": 1, "max_epochs": EPOCHS},
        }
    )
    data = prepare_data(discover(data_root), config.data, config.seed)
    hypermodel = CxrHyperModel(config, data)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return config, data, hypermodel, hp


def child_augmentation(data_root: Path, workdir: Path, row: str) -> dict[str, Any]:
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
    _, data, hypermodel, hp = _probe_network(data_root, crop=True)
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
    clock = _EpochClock(len(train))
    network.fit(batches, epochs=EPOCHS, verbose=0, callbacks=[clock.callback])
    return {
        "precision": policy,
        "images": len(train),
        "pipeline_seconds": passes,
        "epoch_seconds": [len(train) / r for r in clock.rates],
        "strength": {k: getattr(values, k) for k in AUGMENT if getattr(values, k)},
    }


def child_shortcuts(data_root: Path, workdir: Path) -> dict[str, Any]:
    """What the shortcut audit and the acquisition guard cost: a trial's figures at its end (validation:
    borders-only and lungs-only predictions, Grad-CAM of 256 films, the calls under every acquisition change,
    per source, bootstrap; plus its test metrics), the gate's per-epoch borders-only AUC and the guard's
    per-epoch worst-change specificity, for a model on whole films and one on lung crops (whose borders-only
    films are all black: nothing to predict)."""
    from xraycnn.runtime import threads

    threads.configure()
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    from xraycnn.model.hypermodel import SelectionGuards
    from xraycnn.runtime.precision import apply_policy

    policy, _ = apply_policy("auto")
    out: dict[str, Any] = {"precision": policy}
    for name, crop in (("whole", False), ("cropped", True)):
        config, data, hypermodel, hp = _probe_network(data_root, crop)
        network = hypermodel.build(hp)
        clock = _EpochClock(len(data.train))
        hypermodel.fit(hp, network, callbacks=[clock.callback])  # the gate runs in every epoch: timed below
        steps = hypermodel.preprocessing(hp)[0]
        gate = SelectionGuards(config, hypermodel.masked_inputs(steps, "borders"), data.val.labels, None)
        guard = SelectionGuards(config, None, data.val.labels, hypermodel.guard_films(steps))
        seconds = {}
        for label, callback in (("gate", gate), ("guard", guard)):
            callback.set_model(network)
            callback.on_epoch_end(0, {"val_auc": 0.5})  # warm-up: tracing
            started = time.perf_counter()
            for _ in range(3):
                callback.on_epoch_end(0, {"val_auc": 0.5})
            seconds[label] = (time.perf_counter() - started) / 3
        hypermodel.trial_scores(hp, network)  # warm-up: tracing
        started = time.perf_counter()
        hypermodel.trial_scores(hp, network)
        out[name] = {
            "epoch_seconds": len(data.train) / clock.rates[-1],
            "gate_seconds_per_epoch": seconds["gate"],
            "guard_seconds_per_epoch": seconds["guard"],
            "trial_figures_seconds": time.perf_counter() - started,
        }
    return out


def child_search_memory(data_root: Path, workdir: Path, trials: int) -> dict[str, Any]:
    """Peak memory of `xraycnn search experiments/default.toml` (its first `trials` trials, the real CLI)."""
    text = (REPO / "experiments" / "default.toml").read_text()
    capped = re.sub(r"(?m)^max_trials = \d+", f"max_trials = {trials}", text)
    experiment = workdir / "default.toml"
    experiment.write_text(capped)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'store' / 'mlflow.db'}",
        "XRAYCNN_CACHE": str(workdir / "cache"),
    }
    wall = _timed_search(experiment, data_root, workdir / "tuner", env)
    return {
        "trials": trials,
        "wall_seconds": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _timed_search(experiment: Path, data_root: Path, tuner_dir: Path, env: dict[str, str], *extra: str) -> float:
    """Wall seconds of the real `xraycnn search` CLI on `experiment`."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("xraycnn")),
            "search",
            str(experiment),
            "--data",
            str(data_root),
            "--tuner-dir",
            str(tuner_dir),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"xraycnn search {' '.join(extra)} failed: {(done.stdout + done.stderr)[-2000:]}")
    return time.perf_counter() - started


DISTRIBUTED_EXPERIMENT = """
seed = 21
[data]
image_size = 64
[space]
conv_blocks = 2
filters = [16, 32]
kernel_size = 3
dropout = { values = [0.1, 0.2, 0.3] }
dense_units = 64
learning_rate = { min = 1e-3, max = 3e-3 }
batch_size = 32
epochs = 2
[tuner]
algorithm = "random"
[budget]
max_trials = 4
max_epochs = 2
[registry]
model_name = "bench-distributed"
"""


def child_distributed(data_root: Path, workdir: Path) -> dict[str, Any]:
    """The same 4-trial budget through `xraycnn search --workers 1` and `--workers 2` (tracking server,
    chief, workers: the real CLI), and what one logged metric costs through a tracking server vs SQLite."""
    experiment = workdir / "distributed.toml"
    experiment.write_text(DISTRIBUTED_EXPERIMENT)
    env = {**os.environ, "XRAYCNN_CACHE": str(workdir / "cache")}
    # Decode once into the cache first, so neither side pays for it.
    subprocess.run([sys.executable, "-c", _WARM_CACHE.format(root=str(data_root))], env=env, check=True)
    result: dict[str, Any] = {"trials": 4, "epochs_per_trial": 2}
    for workers in (1, 2):
        store = workdir / f"w{workers}"
        result[f"wall_seconds_{workers}_workers"] = _timed_search(
            experiment,
            data_root,
            store / "tuner",
            env,
            "--workers",
            str(workers),
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
        )
    result |= _metric_cost(workdir)
    return result


_WARM_CACHE = """
from xraycnn.config import DataConfig
from xraycnn.data.dataset import prepare_data
from xraycnn.data.discovery import discover
prepare_data(discover({root!r}), DataConfig(image_size=64), 21)
"""


SERVING_SEQUENTIAL = 300  # one-image requests, one after another, for the latency percentiles
SERVING_CONCURRENT = 400  # one-image requests from SERVING_CLIENTS clients at once
SERVING_CLIENTS = 4
SERVING_BATCH = 32
SERVING_BATCHES = 20


def _default_champion(data_root: Path, workdir: Path, env: dict[str, str]) -> str:
    """The default search's champion, made by the real CLI in this bench's own store."""
    _timed_search(REPO / "experiments" / "default.toml", data_root, workdir / "tuner", env)
    return "models:/xraycnn@champion"


def child_serving(data_root: Path, workdir: Path) -> dict[str, Any]:
    """`xraycnn serve` on the default search's champion (127.0.0.1): latency of one-image requests, throughput
    with 4 concurrent clients and with batches of 32 images per request; `xraycnn predict`'s in-process rate
    on the same films for reference, and the largest difference between their probabilities."""
    import base64
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from xraycnn.runtime.local_http import free_port, wait_until_answering

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'store' / 'mlflow.db'}",
        "XRAYCNN_CACHE": str(workdir / "cache"),
    }
    search_started = time.perf_counter()
    model_uri = _default_champion(data_root, workdir, env)
    search_seconds = time.perf_counter() - search_started
    films = sorted((data_root / "test").glob("*/*.jpg"))[: SERVING_BATCH * SERVING_BATCHES]
    payloads = [base64.b64encode(f.read_bytes()).decode() for f in films]

    def body(images: list[str]) -> bytes:
        return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}).encode()

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def post(data: bytes) -> list[dict[str, Any]]:
        request = urllib.request.Request(f"{url}/invocations", data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["predictions"]

    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("xraycnn")), "serve", "--model", model_uri, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        wait_until_answering(f"{url}/ping", server, 300, "xraycnn serve")
        startup_seconds = time.perf_counter() - started
        for i in range(10):  # warm-up: the first calls trace the network
            post(body([payloads[i]]))
        latencies = []
        for i in range(SERVING_SEQUENTIAL):
            t0 = time.perf_counter()
            post(body([payloads[i % len(payloads)]]))
            latencies.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SERVING_CLIENTS) as pool:
            list(pool.map(lambda i: post(body([payloads[i % len(payloads)]])), range(SERVING_CONCURRENT)))
        concurrent_seconds = time.perf_counter() - t0
        batches = [payloads[i : i + SERVING_BATCH] for i in range(0, len(payloads), SERVING_BATCH)]
        t0 = time.perf_counter()
        served = [answer for batch in batches for answer in post(body(batch))]
        batch_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SERVING_CLIENTS) as pool:
            list(pool.map(lambda batch: post(body(batch)), batches))
        batch_concurrent_seconds = time.perf_counter() - t0
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    from rich.console import Console

    from xraycnn.jobs.predict import run_predict

    quiet = Console(file=io.StringIO())
    run_predict(model_uri, films[:SERVING_BATCH], console=quiet)  # loads and traces, like the warm-up above
    t0 = time.perf_counter()
    predicted = run_predict(model_uri, films, console=quiet)
    predict_seconds = time.perf_counter() - t0
    differences = [abs(a["probability_covid19"] - p.probability) for a, p in zip(served, predicted, strict=True)]
    calls_equal = all(a["call"] == p.label for a, p in zip(served, predicted, strict=True))
    import numpy as np

    def percentile(q: float) -> float:
        return float(np.percentile(latencies, q))

    return {
        "model": model_uri,
        "search_seconds": search_seconds,
        "films": len(films),
        "film_bytes_mean": sum(f.stat().st_size for f in films) / len(films),
        "startup_seconds": startup_seconds,
        "latency_ms_p50": percentile(50),
        "latency_ms_p95": percentile(95),
        "latency_ms_p99": percentile(99),
        "latency_ms_mean": sum(latencies) / len(latencies),
        "single_concurrent_images_per_s": SERVING_CONCURRENT / concurrent_seconds,
        "batch_images_per_s": len(films) / batch_seconds,
        "batch_concurrent_images_per_s": len(films) / batch_concurrent_seconds,
        "predict_images_per_s": len(films) / predict_seconds,
        "max_abs_difference_from_predict": max(differences),
        "calls_equal_predict": calls_equal,
        "clients": SERVING_CLIENTS,
        "batch": SERVING_BATCH,
    }


def _metric_cost(workdir: Path) -> dict[str, float]:
    """Milliseconds per metric of per-epoch `log_batch` calls (10 metrics each, as a trial logs them)."""
    from mlflow.tracking import MlflowClient

    from xraycnn.tracking.runs import RunLogger
    from xraycnn.tracking.server import tracking_server

    def per_metric_ms(uri: str) -> float:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment(f"cost-{time.time_ns()}")
        runs = RunLogger(client)
        run_id = client.create_run(experiment_id).info.run_id
        calls, names = 100, [f"m{i}" for i in range(10)]
        started = time.perf_counter()
        for step in range(calls):
            runs.log_metrics(run_id, dict.fromkeys(names, 0.5), step=step)
        return 1000 * (time.perf_counter() - started) / (calls * len(names))

    db = workdir / "cost" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    direct = per_metric_ms(f"sqlite:///{db}")
    with tracking_server(f"sqlite:///{db}", workdir / "cost" / "artifacts", workdir / "cost" / "server.log") as url:
        served = per_metric_ms(url)
    return {"metric_ms_sqlite_direct": direct, "metric_ms_tracking_server": served}


# --------------------------------------------------------------------------------------------------------
# The parent: runs the children, prints the table, writes JSON, logs to MLflow.
# --------------------------------------------------------------------------------------------------------


def _run_child(args: list[str], timeout: int = 1800) -> dict[str, Any]:
    Path(args[1]).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {args} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "process_seconds": time.perf_counter() - started}


def _machine() -> dict[str, Any]:
    return machine_facts()


PARTS = (
    "efficiency",
    "breakdown",
    "cuts",
    "training",
    "augmentation",
    "shortcuts",
    "decode",
    "inference",
    "serving",
    "tracking",
    "memory",
    "distributed",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: as the CLI resolves it)")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only these parts (repeatable)",
    )
    parser.add_argument(
        "--training-rows",
        nargs="+",
        choices=[name for name, _, _ in [*LADDER, CEILING]],
        help="only these rows of the training ladder (e.g. notebook threads: float32 speed, to compare machines)",
    )
    parser.add_argument("--tracking-repeats", type=int, default=3, help="trials per side of the tracking figure")
    parser.add_argument("--memory-trials", type=int, default=4, help="trials of the default search to measure")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the figures to MLflow")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from xraycnn.runtime import native_stderr

    native_stderr.import_tensorflow()
    from xraycnn.data.discovery import resolve_data_root

    data_root = resolve_data_root(args.data)
    if args.child:
        kind, workdir = args.child[0], Path(args.child[1])
        if kind == "training":
            out = child_training(args.child[2], data_root, workdir)
        elif kind == "decode":
            out = child_decode(data_root, workdir)
        elif kind == "inference":
            out = child_inference(data_root, workdir)
        elif kind == "tracking":
            out = child_tracking(data_root, workdir, int(args.child[2]))
        elif kind == "distributed":
            out = child_distributed(data_root, workdir)
        elif kind == "augmentation":
            out = child_augmentation(data_root, workdir, args.child[2])
        elif kind == "shortcuts":
            out = child_shortcuts(data_root, workdir)
        elif kind == "serving":
            out = child_serving(data_root, workdir)
        elif kind == "efficiency":
            out = child_efficiency(data_root, workdir)
        elif kind == "breakdown":
            out = child_breakdown(data_root, workdir)
        elif kind == "cuts":
            out = child_cuts(data_root, workdir)
        else:
            out = child_search_memory(data_root, workdir, int(args.child[2]))
        print(json.dumps(out))
        return 0

    from rich.console import Console

    from xraycnn.runtime import threads

    console = Console() if sys.stdout.isatty() else Console(width=160)
    parts = args.only or list(PARTS)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": _machine() | {"threads_default": threads.describe()},
        "data": str(data_root),
    }
    with tempfile.TemporaryDirectory(prefix="xraycnn-bench-") as tmp:
        work = Path(tmp)
        if "training" in parts:
            results["training"] = {}
            for name, label, _ in [*LADDER, CEILING]:
                if args.training_rows and name not in args.training_rows:
                    continue
                with console.status(f"training: {label}"):
                    try:
                        results["training"][name] = _run_child(["training", str(work / "train"), name])
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # keep the other rows' figures
                        console.print(f"[red]training {name} failed[/]: {str(exc)[-300:]}")
                        continue
                console.print(f"  {name}: {results['training'][name]['epoch_images_per_s']}")
        if "augmentation" in parts:
            results["augmentation"] = {}
            for row in AUGMENT_ROWS:
                with console.status(f"augmentation: {row}"):
                    results["augmentation"][row] = _run_child(["augmentation", str(work / "augment"), row])
                console.print(f"  augmentation {row}: {results['augmentation'][row]['epoch_seconds']}")
        for part, extra in (
            ("shortcuts", []),
            ("decode", []),
            ("efficiency", []),
            ("breakdown", []),
            ("cuts", []),
            ("inference", []),
            ("serving", []),
            ("tracking", [str(args.tracking_repeats)]),
            ("memory", [str(args.memory_trials)]),
            ("distributed", []),
        ):
            if part in parts:
                with console.status(f"{part} ..."):
                    try:
                        results[part] = _run_child([part, str(work / part), *extra])
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # keep the other parts' figures
                        console.print(f"[red]{part} failed[/]: {exc}")
    figures = summarise(results)
    results["figures"] = figures
    print_table(console, results, figures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "").replace("+0000", "Z")
    out = RESULTS / f"bench-{stamp}-{machine_slug()}.json"
    out.write_text(json.dumps(results, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    console.print(f"Figures written to {out.relative_to(REPO)}")
    if not args.no_mlflow:
        run_id = log_to_mlflow(results, figures, out)
        console.print(f"Logged to MLflow run {run_id} (experiment xraycnn-bench)")
    return 0


def summarise(results: dict[str, Any]) -> dict[str, float]:
    """The flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    training = results.get("training", {})
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
    augmentation = results.get("augmentation", {})
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
    if "shortcuts" in results:
        for name in ("whole", "cropped"):
            r = results["shortcuts"][name]
            figures |= {
                f"audit_{name}_epoch_seconds": r["epoch_seconds"],
                f"audit_{name}_trial_seconds": r["trial_figures_seconds"],
                f"audit_{name}_gate_seconds_per_epoch": r["gate_seconds_per_epoch"],
                f"audit_{name}_gate_percent_of_epoch": 100 * r["gate_seconds_per_epoch"] / r["epoch_seconds"],
            }
            if "guard_seconds_per_epoch" in r:  # runs before the acquisition guard have none
                figures[f"audit_{name}_guard_seconds_per_epoch"] = r["guard_seconds_per_epoch"]
                figures[f"audit_{name}_guard_percent_of_epoch"] = (
                    100 * r["guard_seconds_per_epoch"] / r["epoch_seconds"]
                )
    if "decode" in results:
        d = results["decode"]
        figures |= {f"decode_{k}": v for k, v in d.items() if k.endswith("seconds")}
    if "inference" in results:
        figures |= {f"inference_{k}": v for k, v in results["inference"].items() if k.endswith("per_s")}
    if "efficiency" in results:
        e = results["efficiency"]
        figures["matmul_peak_gflops"] = max(e["matmul_gflops_before"], e["matmul_gflops_after"])
        for name, row in e["networks"].items():
            figures[f"efficiency_{name}_gflops"] = row["gflops"]
            figures[f"efficiency_{name}_percent_of_peak"] = 100 * row["share_of_matmul_peak"]
            figures[f"efficiency_{name}_train_mflops_per_image"] = row["training_flops_per_image"] / 1e6
    if "breakdown" in results:
        d = results["breakdown"]
        later = d["epochs"][1:] or d["epochs"]
        for part in ("train_steps", "validation", "gate_and_callbacks"):
            figures[f"breakdown_epoch_{part}_seconds"] = sum(e[part] for e in later) / len(later)
        figures["breakdown_trial_scores_seconds"] = d["trial_scores_seconds"]
        total = sum(d["layer_step_seconds"].values())
        for kind, seconds in d["layer_step_seconds"].items():
            figures[f"breakdown_step_{kind}_percent"] = 100 * seconds / total
    if "cuts" in results:
        c = results["cuts"]
        for name, seconds in c["epoch_seconds"].items():
            figures[f"cuts_epoch_seconds_iterator_{name}"] = sum(seconds) / len(seconds)
        for name, seconds in c["gamma_cpu_seconds_per_epoch_of_films"].items():
            figures[f"cuts_gamma_cpu_seconds_{name}"] = seconds
        for name, seconds in c["gradcam_seconds"].items():
            figures[f"cuts_gradcam_seconds_{name}"] = seconds
    if "serving" in results:
        kept = ("per_s", "_ms_p50", "_ms_p95", "_ms_p99", "from_predict")
        figures |= {f"serving_{k}": float(v) for k, v in results["serving"].items() if k.endswith(kept)}
    if "tracking" in results:
        t = results["tracking"]
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
    if "memory" in results:
        figures["search_peak_rss_mib"] = results["memory"]["peak_rss_mib"]
    if "distributed" in results:
        d = results["distributed"]
        figures |= {
            "distributed_wall_seconds_1_worker": d["wall_seconds_1_workers"],
            "distributed_wall_seconds_2_workers": d["wall_seconds_2_workers"],
            "distributed_speedup_2_over_1": d["wall_seconds_1_workers"] / d["wall_seconds_2_workers"],
            "metric_ms_sqlite_direct": d["metric_ms_sqlite_direct"],
            "metric_ms_tracking_server": d["metric_ms_tracking_server"],
        }
    return figures


def print_table(console: Any, results: dict[str, Any], figures: dict[str, float]) -> None:
    from rich.table import Table

    m = results["machine"]
    table = Table(
        title=f"xraycnn bench: {m['cpu']}, {m['cores']} cores, bf16: {m['bf16_flags']}; {results['when']}",
        header_style="bold",
    )
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("note")
    training = results.get("training", {})
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
    augmentation = results.get("augmentation", {})
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
    if "shortcuts" in results:
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
    if "decode" in results:
        d = results["decode"]
        table.add_row("first-epoch cost: digest of all files", f"{d['digest_seconds']:.1f} s", f"{d['images']} images")
        for size in (64, SIZE):
            table.add_row(
                f"first-epoch cost: decode + cache, {size}px",
                f"{d[f'cold_{size}px_seconds']:.1f} s",
                f"a later search reads the cache in {d[f'cached_{size}px_seconds']:.1f} s (digest included)",
            )
    if "inference" in results:
        i = results["inference"]
        table.add_row(
            "inference img/s: registered notebook net, loaded by name",
            f"{i['notebook_150px_images_per_s']:.0f}",
            f"{i['images']} test films, {SIZE}px, batch 256",
        )
        if "champion_images_per_s" in i:
            table.add_row(
                "inference img/s: models:/xraycnn@champion",
                f"{i['champion_images_per_s']:.0f}",
                f"{i['champion_size']}px",
            )
    if "efficiency" in results:
        e = results["efficiency"]
        table.add_row(
            f"float32 matmul {e['matmul_side']}x{e['matmul_side']}: the CPU's peak",
            f"{figures['matmul_peak_gflops']:.1f} GFLOP/s",
            f"{e['matmul_gflops_before']:.1f} before, {e['matmul_gflops_after']:.1f} after the rows below; "
            f"{e['threads']}",
        )
        for row in e["networks"].values():
            table.add_row(
                f"training GFLOP/s, {row['what']} (target >= 35 % of peak)",
                f"{row['gflops']:.1f} ({100 * row['share_of_matmul_peak']:.0f} %)",
                f"{row['training_flops_per_image'] / 1e6:.1f} MFLOP per image per step (3x the profiled forward pass), "
                f"{row['images_per_s']:.0f} img/s, batch {row['batch']}, float32",
            )
    if "cuts" in results:
        c = results["cuts"]
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
    if "breakdown" in results:
        d = results["breakdown"]
        epoch = {
            k: figures[f"breakdown_epoch_{k}_seconds"] for k in ("train_steps", "validation", "gate_and_callbacks")
        }
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
    if "serving" in results:
        v = results["serving"]
        table.add_row(
            "serve: one-image request latency p50 / p95 / p99 (target p95 <= 50 ms)",
            f"{v['latency_ms_p50']:.1f} / {v['latency_ms_p95']:.1f} / {v['latency_ms_p99']:.1f} ms",
            f"{v['model']} of the default search, real JPEG films ({v['film_bytes_mean'] / 1024:.0f} KiB mean), "
            "one server process, one client",
        )
        table.add_row(
            f"serve: img/s, one image per request, {v['clients']} clients",
            f"{v['single_concurrent_images_per_s']:.0f}",
            "",
        )
        table.add_row(
            f"serve: img/s, {v['batch']} images per request (target >= 300)",
            f"{v['batch_images_per_s']:.0f}",
            f"{v['batch_concurrent_images_per_s']:.0f} with {v['clients']} clients",
        )
        table.add_row(
            "xraycnn predict img/s on the same films (reference)",
            f"{v['predict_images_per_s']:.0f}",
            f"largest |server - predict| {v['max_abs_difference_from_predict']:.1e}; calls equal: "
            f"{v['calls_equal_predict']}",
        )
    if "tracking" in results:
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
    if "memory" in results:
        mem = results["memory"]
        table.add_row(
            "peak memory of the default search (target < 4 GiB)",
            f"{mem['peak_rss_mib'] / 1024:.2f} GiB",
            f"`xraycnn search experiments/default.toml`, first {mem['trials']} trials, {mem['wall_seconds']:.0f} s",
        )
    if "distributed" in results:
        table.add_row(
            "distributed: 2 workers over 1, same 4-trial budget",
            f"{figures['distributed_speedup_2_over_1']:.2f}x",
            f"{figures['distributed_wall_seconds_1_worker']:.0f} s vs "
            f"{figures['distributed_wall_seconds_2_workers']:.0f} s wall, `xraycnn search --workers N` "
            f"(server, chief, workers) on {m['cores']} cores",
        )
        table.add_row(
            "ms per logged metric: tracking server / SQLite direct",
            f"{figures['metric_ms_tracking_server']:.2f} / {figures['metric_ms_sqlite_direct']:.2f}",
            "per-epoch log_batch of 10 metrics, 100 calls",
        )
    console.print(table)


def log_to_mlflow(results: dict[str, Any], figures: dict[str, float], json_path: Path) -> str:
    from xraycnn.tracking.runs import RunLogger
    from xraycnn.tracking.store import ensure_experiment, resolve_store

    store = resolve_store(None)
    experiment_id = ensure_experiment(store, "xraycnn-bench", {})
    runs = RunLogger(store.client())
    run_id = runs.client.create_run(experiment_id, run_name=f"bench-{results['when']}").info.run_id
    runs.log_params(run_id, {f"machine.{k}": v for k, v in results["machine"].items()})
    runs.log_metrics(run_id, figures)
    runs.client.log_artifact(run_id, str(json_path))
    runs.end(run_id, "FINISHED")
    return run_id


if __name__ == "__main__":
    sys.exit(main())
