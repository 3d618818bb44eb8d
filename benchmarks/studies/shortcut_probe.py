"""The evidence behind the preprocessing of `experiments/robust.toml`: one fixed network trained under each
preprocessing / augmentation / architecture choice on cxr-covid, each judged by the shortcut audit on test
(borders-only and lungs-only AUC, Grad-CAM share outside the lungs, with 95 % intervals), its test AUC, its
validation AUC (what a tuner would select on) and its AUC under acquisition-like changes of the test films
(contrast, gamma, brightness, noise, blur, JPEG re-compression, a shifted and zoomed framing).

    python -m benchmarks.studies.shortcut_probe [--epochs 12] [--only NAME ...] [--precision float32]

Writes benchmarks/results/shortcut-probe-<date>-<machine>.json (one record per variant, CPU and versions).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS
from benchmarks.machine import machine_facts, machine_slug

# The default search's champion network (3 blocks 16-32-32, 3x3, dropout 0.1, dense 128, lr 3e-3, batch 32).
NETWORK: dict[str, Any] = {
    "conv_blocks": 3,
    "filters": [16, 32, 32],
    "kernel_size": 3,
    "dropout": 0.1,
    "dense_units": 128,
    "learning_rate": 3e-3,
    "batch_size": 32,
}
AUGMENT = {
    "zoom": 0.1,
    "horizontal_flip": False,
    "translate": 0.06,
    "crop": 0.15,
    "rotate": 8.0,
    "brightness": 0.1,
    "contrast": 0.2,
    "gamma": 0.3,
    "noise": 0.1,
    "blur": 1.0,
    "erase": 0.5,
}
LIGHT_AUGMENT = {
    "zoom": 0.05,
    "horizontal_flip": False,
    "translate": 0.04,
    "crop": 0.1,
    "rotate": 5.0,
    "brightness": 0.05,
    "contrast": 0.1,
    "gamma": 0.2,
    "noise": 0.05,
    "blur": 0.5,
    "erase": 0.3,
}
NO_AUGMENT = {"zoom": 0.0, "horizontal_flip": False}
BN_GAP = {"batch_norm": True, "head": "gap"}
# name -> (image_size, preprocess, augmentation, extra space entries)
VARIANTS: dict[str, tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "whole": (64, {}, NO_AUGMENT, {}),
    "equalized": (64, {"equalize": "global"}, NO_AUGMENT, {}),
    "clahe": (64, {"equalize": "clahe"}, NO_AUGMENT, {}),
    "masked_equalized": (64, {"mask": True, "equalize": "global"}, NO_AUGMENT, {}),
    "cropped": (86, {"crop": True}, NO_AUGMENT, {}),
    "cropped_equalized": (86, {"crop": True, "equalize": "global"}, NO_AUGMENT, {}),
    "cropped_clahe": (86, {"crop": True, "equalize": "clahe"}, NO_AUGMENT, {}),
    "cropped_equalized_augmented": (86, {"crop": True, "equalize": "global"}, AUGMENT, {}),
    "cropped_equalized_augmented_bn_gap": (
        86,
        {"crop": True, "equalize": "global", "standardize": True},
        AUGMENT,
        BN_GAP,
    ),
    "whole_augmented_bn_gap": (64, {"standardize": True}, AUGMENT, BN_GAP),
    "cropped_equalized_bn_gap": (86, {"crop": True, "equalize": "global", "standardize": True}, NO_AUGMENT, BN_GAP),
    "cropped_equalized_light_augmented_bn_gap": (
        86,
        {"crop": True, "equalize": "global", "standardize": True},
        LIGHT_AUGMENT,
        BN_GAP,
    ),
    "cropped_equalized_light_augmented": (86, {"crop": True, "equalize": "global"}, LIGHT_AUGMENT, {}),
}
# Acquisition-like changes of a test film (applied to the film, before the model's own preprocessing).
PERTURBATIONS = ("gamma_0.6", "gamma_1.6", "contrast_0.6", "brighter_30", "noise_8", "blur_1.2", "jpeg_30", "reframed")


def perturb(films: Any, name: str) -> Any:
    import numpy as np
    import tensorflow as tf

    x = tf.constant(films, tf.float32)
    if name.startswith("gamma_"):
        out = 255.0 * tf.pow(x / 255.0, float(name.split("_")[1]))
    elif name.startswith("contrast_"):
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        out = mean + (x - mean) * float(name.split("_")[1])
    elif name.startswith("brighter_"):
        out = x + float(name.split("_")[1])
    elif name.startswith("noise_"):
        out = x + tf.random.stateless_normal(tf.shape(x), [1, 2]) * float(name.split("_")[1])
    elif name.startswith("blur_"):
        from xraycnn.data.augment import _blur

        out = _blur(x, float(name.split("_")[1]) + 1e-6, tf.constant([5, 6], tf.int64))  # sigma in [0, s]
    elif name.startswith("jpeg_"):
        quality = int(name.split("_")[1])
        out = tf.stack([tf.image.adjust_jpeg_quality(tf.cast(f, tf.uint8), quality) for f in tf.unstack(x)])
        out = tf.cast(out, tf.float32)
    elif name == "reframed":  # the patient shifted and closer to the detector: another hospital's framing
        from xraycnn.data.augment import AugmentValues, _geometry

        out = _geometry(x, AugmentValues(zoom=0.08, translate=0.05), tf.constant([7, 8], tf.int64))
    else:
        raise ValueError(name)
    return np.clip(out.numpy(), 0, 255).astype(np.uint8)


@dataclass
class Trained:
    """One fixed network trained on the dataset as a search's trial is: the network, the registered model (its
    preprocessing in front), the data, Keras' history, the precision and the seconds it took."""

    policy: str
    data: Any
    network: Any
    model: Any
    history: Any
    seconds: float


def train_fixed_network(config: Any, data_root: Path) -> Trained:
    """Train the one network `config`'s space fixes (every entry one value), through the project's hypermodel."""
    import keras_tuner as kt

    from xraycnn.data.dataset import prepare_data
    from xraycnn.data.discovery import discover
    from xraycnn.evaluation.trial_scoring import TrialScorer
    from xraycnn.model.hypermodel import CxrHyperModel
    from xraycnn.runtime.precision import apply_policy

    policy, _ = apply_policy(config.training.precision)
    data = prepare_data(discover(data_root), config.data, config.seed)
    hypermodel = CxrHyperModel(config, data)
    TrialScorer(hypermodel)  # the epochs' shortcut gate and acquisition guard, when the tuner is guarded
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    started = time.monotonic()
    network = hypermodel.build(hp)
    history = hypermodel.fit(hp, network, callbacks=[])
    seconds = time.monotonic() - started
    return Trained(policy, data, network, hypermodel.registered_model(hp, network), history, seconds)


def run_variant(name: str, epochs: int, precision: str, data_root: Path) -> dict[str, Any]:
    import numpy as np

    from xraycnn.config import ExperimentConfig
    from xraycnn.data.external import read_sources
    from xraycnn.evaluation import binary_metrics
    from xraycnn.evaluation.assessment import assess
    from xraycnn.evaluation.threshold import choose_threshold
    from xraycnn.model.predict import predict_probabilities

    size, preprocess, augmentation, extra = VARIANTS[name]
    config = ExperimentConfig.model_validate(
        {
            "seed": 42,
            "data": {"image_size": size, "augmentation": augmentation, "preprocess": preprocess},
            "space": {**NETWORK, **extra},
            "tuner": {"algorithm": "random"},
            "budget": {"max_trials": 1, "max_epochs": epochs},
            "training": {"early_stopping_patience": epochs, "precision": precision},
        }
    )
    trained = train_fixed_network(config, data_root)
    policy, data, history, train_seconds = trained.policy, trained.data, trained.history, trained.seconds
    network, model = trained.network, trained.model
    val_p = predict_probabilities(model, data.val.images)
    chosen = choose_threshold(data.val.labels, val_p, "youden", 0.95)
    root = Path(data.root)
    assessment = assess(
        model,
        data.test,
        chosen.value,
        chosen.describe(),
        sources=read_sources(root, [root / f for f in data.test.files]),
        resamples=1000,
        seed=42,
    )
    overall, audit = assessment.clinical.overall, assessment.audit.overall
    robust = {
        p: binary_metrics(data.test.labels, predict_probabilities(model, perturb(data.test.images, p)))["auc"]
        for p in PERTURBATIONS
    }
    record = {
        "variant": name,
        "image_size": size,
        "network_input": list(network.input_shape[1:]),
        "preprocess": preprocess,
        "augmentation": augmentation,
        "space": {**NETWORK, **extra},
        "epochs": epochs,
        "precision": policy,
        "train_seconds": round(train_seconds, 1),
        "best_val_auc": float(max(history.history["val_auc"])),
        "val_auc_at_restored_epoch": float(binary_metrics(data.val.labels, val_p)["auc"]),
        "test_auc": overall.metrics["auc"],
        "test_auc_ci": [overall.intervals["auc"].low, overall.intervals["auc"].high],
        "test_thr_specificity": overall.metrics["thr_specificity"],
        "test_thr_sensitivity": overall.metrics["thr_sensitivity"],
        "audit": {k: audit.values[k] for k in audit.values},
        "audit_ci": {k: [v.low, v.high] for k, v in audit.intervals.items()},
        "robust_auc": robust,
        "robust_auc_mean": float(np.mean(list(robust.values()))),
        "robust_auc_min": float(np.min(list(robust.values()))),
        "per_source_test_auc": {
            k: v.metrics.get("auc") for k, v in assessment.clinical.per_source.items() if v.positives < v.n
        },
    }
    print(json.dumps(record), flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_bfloat16"])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from xraycnn.data.discovery import resolve_data_root

    data_root = resolve_data_root(args.data, None)
    started = datetime.now(UTC)
    records = []
    for name in args.only or list(VARIANTS):
        records.append(run_variant(name, args.epochs, args.precision, data_root))
    out = args.out or RESULTS / f"shortcut-probe-{started:%Y%m%d-%H%M}-{machine_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "what": "one fixed network per preprocessing / augmentation choice, audited on test",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "python": platform.python_version(),
        "records": records,
    }
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
