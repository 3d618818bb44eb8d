"""How much of the CPU's float32 peak (a large matmul) training reaches, in FLOP per second, for the
notebook's network and the default search's champion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_CHAMPION, REPO, SIZE, EpochClock

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


def measure(data_root: Path, workdir: Path) -> dict[str, Any]:
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
        clock = EpochClock(batch * EFFICIENCY_STEPS)
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


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The part's flat figures: what the table shows and MLflow logs."""
    figures: dict[str, float] = {}
    e = result
    figures["matmul_peak_gflops"] = max(e["matmul_gflops_before"], e["matmul_gflops_after"])
    for name, row in e["networks"].items():
        figures[f"efficiency_{name}_gflops"] = row["gflops"]
        figures[f"efficiency_{name}_percent_of_peak"] = 100 * row["share_of_matmul_peak"]
        figures[f"efficiency_{name}_train_mflops_per_image"] = row["training_flops_per_image"] / 1e6
    return figures


def rows(table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
    """The part's rows of the bench's table."""
    e = result
    table.add_row(
        f"float32 matmul {e['matmul_side']}x{e['matmul_side']}: the CPU's peak",
        f"{figures['matmul_peak_gflops']:.1f} GFLOP/s",
        f"{e['matmul_gflops_before']:.1f} before, {e['matmul_gflops_after']:.1f} after the rows below; {e['threads']}",
    )
    for row in e["networks"].values():
        table.add_row(
            f"training GFLOP/s, {row['what']} (target >= 35 % of peak)",
            f"{row['gflops']:.1f} ({100 * row['share_of_matmul_peak']:.0f} %)",
            f"{row['training_flops_per_image'] / 1e6:.1f} MFLOP per image per step (3x the profiled forward pass), "
            f"{row['images_per_s']:.0f} img/s, batch {row['batch']}, float32",
        )
