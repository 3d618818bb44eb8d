"""Which training choices keep a model's calls when the films come from another hospital: one fixed network
(the default search's champion) trained under each augmentation set on cxr-covid, each judged on validation
and test by what transfers: the specificity of the NORMAL films at the model's threshold (Youden's J on
validation) under every acquisition change (evaluation.acquisition) and the worst of them, the AUC under
them, the clean AUC, and the calibration error before and after the Platt scaling a registered model carries.

    python -m benchmarks.studies.transfer_probe [--only NAME ...] [--epochs 9] [--seeds 42 7] [--precision float32]

Writes benchmarks/results/transfer-probe-<date>-<machine>.json (one record per variant and seed).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS
from benchmarks.machine import machine_facts, machine_slug
from benchmarks.studies.shortcut_probe import LIGHT_AUGMENT, train_fixed_network

THRESHOLD_RULES = ("youden", "shift_youden", "shift_specificity")  # the last at 0.88, the default
RESAMPLES = 300  # bootstrap resamples of the worst-change figures' intervals

# The default search's champion of 2026-12-04: 4 blocks 16-32-64-128, batch norm, global average pooling, dropout
# 0.1, dense 64, lr 1e-3 on a cosine over the trial's epochs, on the 48x48 lung box of 64px films.
NETWORK: dict[str, Any] = {
    "conv_blocks": 4,
    "filters": [16, 32, 64, 128],
    "kernel_size": 3,
    "batch_norm": True,
    "head": "gap",
    "dropout": 0.1,
    "dense_units": 64,
    "learning_rate": 1e-3,
    "batch_size": 32,
}
PREPROCESS = {"crop": True, "equalize": "global", "standardize": True}
LIGHT = LIGHT_AUGMENT  # experiments/default.toml until 2026-12-04
TEXTURE = {**LIGHT, "noise": 0.2, "blur": 1.5, "sharpen": 1.5}
FRAMING = {"zoom": 0.1, "translate": 0.06}  # reframed: zoom 0.92-1.08, shift up to 5 %


def variant(augmentation: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A variant: the champion's setting with `augmentation` and `changes` (preprocess, image_size, space,
    epochs)."""
    return {"augmentation": augmentation, "preprocess": {}, "image_size": 64, "space": NETWORK, **changes}


BLUR_SHARPEN = {**LIGHT, "blur": 1.0, "sharpen": 1.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "light": variant(LIGHT),
    "light_12epochs": variant(LIGHT, epochs=12),
    "noise_0.2": variant({**LIGHT, "noise": 0.2}),
    "blur_1.5": variant({**LIGHT, "blur": 1.5}),
    "sharpen_1.5": variant({**LIGHT, "sharpen": 1.5}),
    "blur_sharpen": variant(BLUR_SHARPEN),
    "blur_sharpen_12epochs": variant(BLUR_SHARPEN, epochs=12),
    "blur_sharpen_framing": variant({**BLUR_SHARPEN, **FRAMING}),
    "blur_sharpen_framing_12epochs": variant({**BLUR_SHARPEN, **FRAMING}, epochs=12),  # experiments/default.toml
    "texture": variant(TEXTURE),
    "texture_15epochs": variant(TEXTURE, epochs=15),
    "texture_framing_12epochs": variant({**TEXTURE, **FRAMING}, epochs=12),
    "texture_film_12epochs": variant({**TEXTURE, **FRAMING, "stage": "film"}, epochs=12),
    "texture_86px_12epochs": variant({**TEXTURE, **FRAMING}, image_size=86, epochs=12),
}


def run_variant(
    name: str,
    seed: int,
    epochs: int,
    precision: str,
    data_root: Path,
    predictions_dir: Path | None = None,
    at_input: bool = False,
) -> dict[str, Any]:
    import numpy as np

    from xraycnn.config import ExperimentConfig
    from xraycnn.evaluation import decision_metrics, ranking_metrics
    from xraycnn.evaluation.acquisition import AS_GIVEN, acquired_sets, shift_scores, source_films
    from xraycnn.evaluation.threshold import choose_threshold
    from xraycnn.model.predict import predict_probabilities

    setting = VARIANTS[name]
    epochs = setting.get("epochs", epochs)
    config = ExperimentConfig.model_validate(
        {
            "seed": seed,
            "data": {
                "image_size": setting["image_size"],
                "augmentation": setting["augmentation"],
                "preprocess": {**PREPROCESS, **setting["preprocess"]},
            },
            "space": setting["space"],
            "tuner": {"algorithm": "random"},
            "budget": {"max_trials": 1, "max_epochs": epochs},
            "training": {
                "early_stopping_patience": epochs,
                "precision": precision,
                "learning_rate_schedule": "cosine",
            },
        }
    )
    trained = train_fixed_network(config, data_root)
    policy, data, model, history, train_seconds = (
        trained.policy,
        trained.data,
        trained.model,
        trained.history,
        trained.seconds,
    )
    record: dict[str, Any] = {
        "variant": name,
        "seed": seed,
        "augmentation": setting["augmentation"],
        "preprocess": {**PREPROCESS, **setting["preprocess"]},
        "image_size": setting["image_size"],
        "space": setting["space"],
        "epochs": epochs,
        "precision": policy,
        "train_seconds": round(train_seconds, 1),
        "best_val_auc": float(max(history.history["val_auc"])),
    }
    predictions = {}
    root = Path(data.root)
    for split_name, split in (("val", data.val), ("test", data.test)):
        clean = predict_probabilities(model, split.images)
        if at_input:  # the changes made to the film at the model's input size (a stress beyond acquisition)
            sets = acquired_sets(split.images, data.image_size, seed)
        else:
            source = source_films([root / f for f in split.files], data.image_size, data.channels)
            sets = acquired_sets(source, data.image_size, seed)
        acquired = {k: predict_probabilities(model, v) for k, v in sets.items()}
        changed = {k: v for k, v in acquired.items() if k != AS_GIVEN}
        predictions[split_name] = (split, clean, changed, acquired[AS_GIVEN])
    _, val_p, val_changed, _ = predictions["val"]
    if predictions_dir is not None:  # every film's probability, as given and changed, for other thresholds
        predictions_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            predictions_dir / f"{name}-seed{seed}.npz",
            **{
                f"{split_name}_{key}": values
                for split_name, (split, clean, changed, as_given) in predictions.items()
                for key, values in {"labels": split.labels, "clean": clean, AS_GIVEN: as_given, **changed}.items()
            },
        )
    thresholds = {rule: choose_threshold(data.val.labels, val_p, rule, changed=val_changed) for rule in THRESHOLD_RULES}
    record["thresholds"] = {rule: t.value for rule, t in thresholds.items()}
    calibrate = _calibrator(data.val.labels, val_p)
    for split_name, (split, clean, changed, as_given) in predictions.items():
        ranking = ranking_metrics(split.labels, clean)
        record[split_name] = {
            "auc": float(ranking["auc"][0]),
            "ece": float(ranking["ece"][0]),
            "ece_calibrated": None
            if calibrate is None
            else float(ranking_metrics(split.labels, calibrate(clean))["ece"][0]),
        }
        for rule, chosen in thresholds.items():
            scores = shift_scores(split.labels, as_given, changed, chosen.value, resamples=RESAMPLES, seed=seed)
            calls = decision_metrics(split.labels, clean, chosen.value)
            record[split_name][rule] = {
                "sensitivity": float(calls["sensitivity"][0]),
                "specificity": float(calls["specificity"][0]),
                "shift": scores.values,
                "shift_ci": {k: [v.low, v.high] for k, v in scores.intervals.items() if k.startswith("shift_worst")},
                "worst_change": scores.worst_change,
            }
    print(
        json.dumps(
            {
                "variant": name,
                "seed": seed,
                "val_auc": record["best_val_auc"],
                "test_auc": record["test"]["auc"],
                **{
                    f"{rule}_test_sens_spec_worstspec": [
                        round(record["test"][rule]["sensitivity"], 3),
                        round(record["test"][rule]["specificity"], 3),
                        round(record["test"][rule]["shift"]["shift_worst_specificity"], 3),
                        record["test"][rule]["worst_change"],
                    ]
                    for rule in THRESHOLD_RULES
                },
                "test_ece": [record["test"]["ece"], record["test"]["ece_calibrated"]],
                "train_s": record["train_seconds"],
            }
        ),
        flush=True,
    )
    return record


def _calibrator(labels: Any, probabilities: Any) -> Any:
    try:
        from xraycnn.evaluation.calibration import fit_platt
    except ImportError:
        return None
    return fit_platt(labels, probabilities).apply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[42])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_bfloat16"])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--predictions", type=Path, default=None, help="also save every probability here (npz)")
    parser.add_argument(
        "--at-input",
        action="store_true",
        help="make the changes to the film at the model's input size instead of the stored film (a stress test)",
    )
    args = parser.parse_args(argv)
    from xraycnn.data.discovery import resolve_data_root
    from xraycnn.runtime import native_stderr, threads

    native_stderr.import_tensorflow()
    threads.configure()
    data_root = resolve_data_root(args.data, None)
    started = datetime.now(UTC)
    out = args.out or RESULTS / f"transfer-probe-{started:%Y%m%d-%H%M}-{machine_slug()}.json"
    payload: dict[str, Any] = {
        "what": "one fixed network per augmentation set: calls under acquisition changes, AUC, calibration",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "python": platform.python_version(),
        "network": NETWORK,
        "preprocess": PREPROCESS,
        "changes_made_at": "the model's input size" if args.at_input else "the stored film (acquisition size)",
        "records": [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:  # seeds outermost: a variant's seeds are side by side with the others'
        for name in args.only or list(VARIANTS):
            payload["records"].append(
                run_variant(name, seed, args.epochs, args.precision, data_root, args.predictions, args.at_input)
            )
            out.write_text(json.dumps(payload, indent=1))  # kept as it goes: a long run stopped keeps its records
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
