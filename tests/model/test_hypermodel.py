from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pytest

from tests.conftest import build_dataset
from xraycnn.config import ExperimentConfig
from xraycnn.data.dataset import PreparedData, prepare_data
from xraycnn.data.discovery import discover
from xraycnn.model.hypermodel import CxrHyperModel, trial_seed

SPACE = {
    "conv_blocks": {"min": 1, "max": 3},
    "filters": {"values": [4, 8]},
    "kernel_size": {"values": [3, 5]},
    "dropout": {"min": 0.1, "max": 0.3, "step": 0.1},
    "dense_units": {"values": [8, 16]},
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
    "batch_size": {"values": [4, 8]},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    root = build_dataset(tmp_path_factory.mktemp("hm") / "d", {"train": 8, "test": 2}, real=False)
    return prepare_data(discover(root), ExperimentConfig.model_validate({"data": {"image_size": 32}}).data, seed=1)


def config(**overrides: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {"data": {"image_size": 32}, "space": dict(SPACE)}
    for key, value in overrides.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return ExperimentConfig.model_validate(raw)


def test_search_space_declares_every_knob_with_per_block_filters(data: PreparedData) -> None:
    hm = CxrHyperModel(config(), data)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    hm.build(hp)
    names = {p.name for p in hp.space}
    assert names == {
        "batch_size",
        "conv_blocks",
        "kernel_size",
        "dropout",
        "dense_units",
        "learning_rate",
        "filters_1",
        "filters_2",
        "filters_3",
    }
    lr = next(p for p in hp.space if p.name == "learning_rate")
    assert isinstance(lr, kt.engine.hyperparameters.Float) and lr.sampling == "log"
    # Blocks 2 and 3 only exist in deeper networks: conditional on conv_blocks.
    by_name = {p.name: p for p in hp.space}
    assert not by_name["filters_1"].conditions
    assert by_name["filters_3"].conditions[0].values == [3]


@pytest.mark.parametrize("blocks", [1, 3])
def test_build_follows_the_hyperparameters(data: PreparedData, blocks: int) -> None:
    hm = CxrHyperModel(config(), data)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    hm.build(hp)  # declare the space
    hp.values.update(
        {
            "conv_blocks": blocks,
            "filters_1": 8,
            "filters_2": 4,
            "filters_3": 8,
            "kernel_size": 5,
            "dense_units": 16,
            "dropout": 0.2,
            "learning_rate": 1e-3,
        }
    )
    model = hm.build(hp)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 4, 8][:blocks]
    assert all(c.kernel_size == (5, 5) and c.padding == "same" for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == blocks
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.2] * (blocks + 1)
    assert model.input_shape == (None, 32, 32, 1)
    assert model.layers[-1].units == 1 and model.layers[-1].dtype_policy.compute_dtype == "float32"
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)


def test_notebook_network_by_default(data: PreparedData) -> None:
    hm = CxrHyperModel(ExperimentConfig.model_validate({"data": {"image_size": 32}}), data)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    model = hm.build(hp)
    assert [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [32, 64]
    assert next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense)).units == 256


class FitSpy:
    """Records what fit() hands to Keras, then really trains."""

    def __init__(self, model: keras.Model) -> None:
        self.model, self.kwargs = model, {}
        self.real_fit = model.fit
        model.fit = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.kwargs = kwargs
        return self.real_fit(*args, **kwargs)


def _fit(hm: CxrHyperModel, **kwargs: Any) -> FitSpy:
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    spy = FitSpy(hm.build(hp))
    hm.fit(hp, spy.model, callbacks=[], **kwargs)
    return spy


def test_random_search_tunes_epochs_and_batch_size(data: PreparedData) -> None:
    hm = CxrHyperModel(
        config(
            tuner__algorithm="random",
            budget__max_trials=2,
            budget__max_epochs=3,
            space__epochs={"min": 1, "max": 3},
        ),
        data,
    )
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    assert {p.name for p in hp.space} == {"batch_size", "epochs"}
    spy = _fit(hm)
    assert spy.kwargs["epochs"] == 1  # the range's default (its min), from hp, not from the tuner
    history = spy.kwargs
    assert history["verbose"] == 0
    early = [c for c in spy.kwargs["callbacks"] if isinstance(c, keras.callbacks.EarlyStopping)]
    assert (
        len(early) == 1 and early[0].monitor == "val_auc" and early[0].mode == "max" and early[0].restore_best_weights
    )


def test_hyperband_owns_epochs(data: PreparedData) -> None:
    hm = CxrHyperModel(config(budget__max_epochs=4), data)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    assert "epochs" not in {p.name for p in hp.space}
    spy = _fit(hm, epochs=2, initial_epoch=1)
    assert spy.kwargs["epochs"] == 2 and spy.kwargs["initial_epoch"] == 1
    with pytest.raises(kt.errors.FatalValueError, match="no epochs"):
        _fit(hm)


def test_epochs_are_never_passed_twice(data: PreparedData) -> None:
    hm = CxrHyperModel(config(tuner__algorithm="random", budget__max_trials=2, budget__max_epochs=3), data)
    with pytest.raises(kt.errors.FatalValueError, match="epochs given twice"):
        _fit(hm, epochs=2)


def test_early_stopping_stops_a_trial(data: PreparedData) -> None:
    # learning rate 0 cannot improve val_auc after epoch 1: patience 1 stops at epoch 2 of 6.
    hm = CxrHyperModel(
        ExperimentConfig.model_validate(
            {
                "data": {"image_size": 32},
                "training": {"early_stopping_patience": 1},
                "space": {"filters": 4, "conv_blocks": 1, "dense_units": 4, "learning_rate": 1e-12},
            }
        ),
        data,
    )
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    history = hm.fit(hp, hm.build(hp), callbacks=[], epochs=6)
    assert len(history.history["val_auc"]) == 2


def test_trial_seed_depends_on_configuration_only() -> None:
    a = trial_seed(1, {"dropout": 0.2, "lr": 1e-3, "tuner/epochs": 3})
    assert a == trial_seed(1, {"lr": 1e-3, "dropout": 0.2, "tuner/epochs": 9, "tuner/trial_id": "0001"})
    assert a != trial_seed(2, {"dropout": 0.2, "lr": 1e-3})
    assert a != trial_seed(1, {"dropout": 0.3, "lr": 1e-3})


def test_training_batches_are_augmented_and_eval_batches_are_not(data: PreparedData) -> None:
    from xraycnn.config import Augmentation
    from xraycnn.data.pipeline import eval_batches, training_batches

    x_eval, _ = next(iter(eval_batches(data.train, 4)))
    np.testing.assert_array_equal(x_eval.numpy(), data.train.images[:4].astype(np.float32))
    plain = training_batches(data.train, len(data.train), Augmentation(zoom=0.0, horizontal_flip=False), seed=3)
    augmented = training_batches(data.train, len(data.train), Augmentation(zoom=0.2, horizontal_flip=True), seed=3)
    x_plain, _ = next(iter(plain))
    x_aug, _ = next(iter(augmented))
    assert sorted(map(bytes, x_plain.numpy().astype(np.uint8))) == sorted(map(bytes, data.train.images))
    assert not np.allclose(np.sort(x_aug.numpy().ravel()), np.sort(x_plain.numpy().ravel()))


def test_model_files_are_not_kept_in_repo(tmp_path: Path) -> None:
    # Sanity guard for the layout: run state lives in ignored folders.
    repo = Path(__file__).resolve().parents[2]
    ignored = (repo / ".gitignore").read_text()
    assert "tuner/*" in ignored and "mlruns/*" in ignored
