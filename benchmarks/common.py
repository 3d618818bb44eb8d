"""What the bench's parts share: where things are, the sizes the measurements use, and the helpers more than one
part runs (a clock of training epochs, the notebook's network, the real CLI's default search, the champion's
trial, the shortcut probe's network)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SIZE = 150  # the notebook's network at the notebook's image size
TRAIN_IMAGES = 1000
EPOCHS = 2
BATCH = 32
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
BREAKDOWN_EPOCHS = 3


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class EpochClock:
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


def notebook_network(channels: int, augment_in_model: bool) -> Any:
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


def timed_search(experiment: Path, data_root: Path, tuner_dir: Path, env: dict[str, str], *extra: str) -> float:
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


def default_champion(data_root: Path, workdir: Path, env: dict[str, str]) -> str:
    """The default search's champion, made by the real CLI in this bench's own store."""
    timed_search(REPO / "experiments" / "default.toml", data_root, workdir / "tuner", env)
    return "models:/xraycnn@champion"


def champion_trial(data_root: Path, workdir: Path) -> tuple[Any, Any, Any, Any, Any]:
    """(config, hypermodel, hyperparameters, film steps) of a trial of default.toml with the champion's
    architecture on the real data, float32, the project's threads, trained BREAKDOWN_EPOCHS epochs."""
    from xraycnn.runtime import threads

    threads.configure()
    import keras
    import keras_tuner as kt

    from xraycnn.config import load_experiment, parse_overrides
    from xraycnn.data.dataset import prepare_data
    from xraycnn.data.discovery import discover
    from xraycnn.evaluation.trial_scoring import TrialScorer
    from xraycnn.model.hypermodel import CxrHyperModel

    keras.mixed_precision.set_global_policy("float32")
    os.environ["XRAYCNN_CACHE"] = str(workdir / "cache")
    # The epochs through the budget: outside Hyperband the search space declares them, and fit takes them there.
    overrides = parse_overrides([*DEFAULT_CHAMPION, f"budget.max_epochs={BREAKDOWN_EPOCHS}", "budget.rungs=[]"])
    config = load_experiment(REPO / "experiments" / "default.toml", overrides).config
    data = prepare_data(discover(data_root), config.data, config.seed)
    hypermodel = CxrHyperModel(config, data)
    scorer = TrialScorer(hypermodel)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    steps, _ = hypermodel.preprocessing(hp)
    return config, hypermodel, scorer, hp, steps


def probe_network(data_root: Path, crop: bool) -> tuple[Any, Any, Any, Any, Any]:
    """The shortcut probe's network with batch norm and global pooling, on films cropped to the lungs and
    equalised (`crop`) or whole: (config, data as films, hypermodel, hp)."""
    import keras_tuner as kt
    from shortcut_probe import BN_GAP, NETWORK

    from xraycnn.config import ExperimentConfig
    from xraycnn.data.dataset import prepare_data
    from xraycnn.data.discovery import discover
    from xraycnn.evaluation.trial_scoring import TrialScorer
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
    scorer = TrialScorer(hypermodel)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return config, data, hypermodel, scorer, hp
