from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pytest

from tests.conftest import build_dataset
from xraycnn.config import ExperimentConfig
from xraycnn.data.augment import AugmentValues
from xraycnn.data.dataset import PreparedData, prepare_data
from xraycnn.data.discovery import discover
from xraycnn.data.preprocess import film_region_of, preprocessing_key_of
from xraycnn.model.hypermodel import CxrHyperModel, trial_seed
from xraycnn.model.hypermodel import metrics as hm_metrics
from xraycnn.model.layers import FusedBatchNormalization
from xraycnn.model.schedules import cosine_factor

SPACE = {
    "conv_blocks": {"min": 1, "max": 3},
    "filters": {"values": [4, 8]},
    "kernel_size": {"values": [3, 5]},
    "dropout": {"min": 0.1, "max": 0.3, "step": 0.1},
    "dense_units": {"values": [8, 16]},
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
    "batch_size": {"values": [4, 8]},
}


def prepared(folder: Path) -> PreparedData:
    """8 train and 2 test generated films per class, at 32 pixels."""
    root = build_dataset(folder / "d", {"train": 8, "test": 2}, real=False)
    return prepare_data(discover(root), ExperimentConfig.model_validate({"data": {"image_size": 32}}).data, seed=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return prepared(tmp_path_factory.mktemp("hm"))


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
    augmentation = {f"augment_{name}" for name in AugmentValues.__dataclass_fields__}
    preprocessing = {"preprocess_crop", "preprocess_equalize", "preprocess_mask", "preprocess_standardize"}
    assert names == {
        "batch_size",
        "conv_blocks",
        "kernel_size",
        "batch_norm",
        "head",
        "dropout",
        "dense_units",
        "learning_rate",
        "filters_1",
        "filters_2",
        "filters_3",
        *augmentation,
        *preprocessing,
    }
    # every knob is logged with a trial, fixed or not: the notebook's zoom and flip by default
    assert hp.values["augment_zoom"] == 0.2 and hp.values["augment_horizontal_flip"] is True
    assert hp.values["preprocess_equalize"] == "none" and hp.values["batch_norm"] is False
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
    searched = {p.name for p in hp.space if not isinstance(p, kt.engine.hyperparameters.Fixed)}
    assert searched == {"batch_size", "epochs"}
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


def test_a_trial_traces_its_training_step_once_and_trains_as_with_a_lazy_optimizer(data: PreparedData) -> None:
    hm = CxrHyperModel(config(space__conv_blocks=2, space__batch_norm=True, space__batch_size=4), data)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)

    def trained(lazy: bool) -> tuple[list[np.ndarray], int]:
        model = hm.build(hp)
        if lazy:  # Keras' own way: the optimizer creates its slots inside the first traced step
            model.compile(
                optimizer=keras.optimizers.Adam(float(model.optimizer.learning_rate.numpy())),
                loss=model.loss,
                metrics=hm_metrics(),
                steps_per_execution=hm.config.training.steps_per_execution,
            )
        traces: list[int] = []
        step = model.train_step
        model.train_step = lambda batch: (traces.append(1), step(batch))[1]  # type: ignore[method-assign]
        hm.fit(hp, model, callbacks=[], epochs=2)
        return model.get_weights(), len(traces)

    built, traces = trained(lazy=False)
    lazy, lazy_traces = trained(lazy=True)
    assert (traces, lazy_traces) == (1, 2)  # a tf.function that creates variables is traced twice
    for a, b in zip(built, lazy, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_continued_trial_resumes_the_optimizer_state_of_its_checkpoint(data: PreparedData, tmp_path: Path) -> None:
    # Hyperband continues a trial by building its network and loading the checkpoint's weights file; the file
    # holds Adam's step count and moments, which Keras loads only into an optimizer that is already built.
    hm = CxrHyperModel(config(space__conv_blocks=1, space__batch_size=4), data)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    first = hm.build(hp)
    hm.fit(hp, first, callbacks=[], epochs=1)
    first.save_weights(tmp_path / "checkpoint.weights.h5")
    continued = hm.build(hp)
    continued.load_weights(tmp_path / "checkpoint.weights.h5")
    assert int(continued.optimizer.iterations.numpy()) == int(first.optimizer.iterations.numpy()) > 0
    for a, b in zip(first.optimizer.variables, continued.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_batch_norm_and_global_pooling_and_standardisation(data: PreparedData) -> None:
    hm = CxrHyperModel(
        config(
            space__conv_blocks=2,
            space__batch_norm=True,
            space__head="gap",
            data__preprocess={"standardize": True},
        ),
        data,
    )
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    model = hm.build(hp)
    kinds = [type(layer).__name__ for layer in model.layers]
    block = ["Conv2D", "FusedBatchNormalization", "Activation", "MaxPooling2D", "Dropout"]
    assert kinds[:6] == ["LayerNormalization", *block]
    assert "GlobalAveragePooling2D" in kinds and "Flatten" not in kinds and "Rescaling" not in kinds
    assert all(not c.use_bias for c in model.layers if isinstance(c, keras.layers.Conv2D))
    # standardisation: zero mean and unit variance per image, whatever its brightness
    standardized = model.layers[0](np.random.default_rng(0).uniform(50, 200, (2, 32, 32, 1)).astype("float32"))
    assert np.allclose(np.mean(standardized, axis=(1, 2, 3)), 0, atol=1e-4)
    assert np.allclose(np.std(standardized, axis=(1, 2, 3)), 1, atol=1e-3)


def test_a_cropping_trial_trains_on_crops_and_registers_a_film_model(data: PreparedData) -> None:
    hm = CxrHyperModel(
        config(space__conv_blocks=1, space__batch_norm=True, data__preprocess={"crop": True, "equalize": "global"}),
        data,
    )
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    network = hm.build(hp)
    assert network.input_shape == (None, 24, 24, 1)
    assert any(
        isinstance(layer, FusedBatchNormalization) for layer in network.layers
    )  # rows 10-85 %, columns 12-88 % of a 32px film
    hm.fit(hp, network, callbacks=[], epochs=1)
    model = hm.registered_model(hp, network)
    assert model.input_shape == (None, 32, 32, 1) and preprocessing_key_of(model) == "crop-eq_global"
    assert film_region_of(model, 32, 32) == (3, 27, 4, 28)
    # stock Keras only: Keras' own batch normalisation, with the trained one's weights
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
    assert sum(type(layer) is keras.layers.BatchNormalization for layer in model.layers) == 1
    films = data.test.images.astype(np.float32)
    inputs = data.preprocessed(hm.preprocessing(hp)[0]).test.images.astype(np.float32)
    np.testing.assert_allclose(model.predict(films, verbose=0), network.predict(inputs, verbose=0), atol=1e-6)


def test_a_guarded_tuner_needs_its_epoch_guards(data: PreparedData) -> None:
    hm = CxrHyperModel(config(tuner__max_borders_only_auc=0.6, space__conv_blocks=1), data)
    with pytest.raises(kt.errors.FatalValueError, match="TrialScorer"):
        _fit(hm, epochs=1)


def test_trial_seed_depends_on_configuration_only() -> None:
    a = trial_seed(1, {"dropout": 0.2, "lr": 1e-3, "tuner/epochs": 3})
    assert a == trial_seed(1, {"lr": 1e-3, "dropout": 0.2, "tuner/epochs": 9, "tuner/trial_id": "0001"})
    assert a != trial_seed(2, {"dropout": 0.2, "lr": 1e-3})
    assert a != trial_seed(1, {"dropout": 0.3, "lr": 1e-3})


def test_training_batches_are_augmented_and_eval_batches_are_not(data: PreparedData) -> None:
    from xraycnn.data.pipeline import eval_batches, training_batches

    x_eval, _ = next(iter(eval_batches(data.train, 4)))
    np.testing.assert_array_equal(x_eval.numpy(), data.train.images[:4].astype(np.float32))
    plain = training_batches(data.train, len(data.train), AugmentValues(), seed=3)
    augmented = training_batches(data.train, len(data.train), AugmentValues(zoom=0.2, horizontal_flip=True), seed=3)
    x_plain, _ = next(iter(plain))
    x_aug, _ = next(iter(augmented))
    assert sorted(map(bytes, x_plain.numpy().astype(np.uint8))) == sorted(map(bytes, data.train.images))
    assert not np.allclose(np.sort(x_aug.numpy().ravel()), np.sort(x_plain.numpy().ravel()))


def test_model_files_are_not_kept_in_repo(tmp_path: Path) -> None:
    # Sanity guard for the layout: run state lives in ignored folders.
    repo = Path(__file__).resolve().parents[2]
    ignored = (repo / ".gitignore").read_text()
    assert "tuner/*" in ignored and "mlruns/*" in ignored


class _Rates(keras.callbacks.Callback):
    """The rate each epoch trains at (read after every callback's on_epoch_begin) and the weights' change."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if batch == 0:
            self.rates.append(rate)


def test_a_trial_under_the_cosine_schedule_trains_each_epoch_at_its_rate(data: PreparedData) -> None:
    epochs = 4
    overrides = {
        "tuner__algorithm": "random",
        "budget__max_trials": 1,
        "budget__max_epochs": epochs,
        "training__early_stopping_patience": epochs,
        "space__learning_rate": 0.004,
        "space__batch_size": 4,
    }
    rates = {}
    for schedule in ("constant", "cosine"):
        hm = CxrHyperModel(config(**overrides, training__learning_rate_schedule=schedule), data)
        hp = kt.HyperParameters()
        hm.declare_hyperparameters(hp)
        model = hm.build(hp)
        before = [w.copy() for w in model.get_weights()]
        seen = _Rates()
        history = hm.fit(hp, model, callbacks=[seen])
        rates[schedule] = seen.rates
        # a schedule's rate is in the epoch's logs (and so in the run's metrics); a constant one is a param
        assert ("learning_rate" in history.history) == (schedule == "cosine")
        assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert rates["constant"] == pytest.approx([0.004] * epochs)
    assert rates["cosine"] == pytest.approx([0.004 * cosine_factor(e, epochs) for e in range(epochs)], rel=1e-6)


def test_film_stage_augmentation_changes_films_before_their_preprocessing(data: PreparedData) -> None:
    """At the film stage the batches are films, augmented, then cropped and equalised: what the network takes."""
    from xraycnn.data.augment import AugmentValues
    from xraycnn.data.pipeline import training_batches
    from xraycnn.data.preprocess import FilmSteps, preprocess_films

    steps = FilmSteps(crop=True, equalize="global")
    noise = AugmentValues(noise=0.2)
    batch, _ = next(iter(training_batches(data.train, len(data.train), noise, seed=3, steps=steps)))
    assert tuple(batch.shape[1:]) == (24, 24, 1)
    values = batch.numpy()
    assert np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= 255  # equalised grey levels
    plain = preprocess_films(data.train.images, steps)
    assert not np.array_equal(np.sort(values, axis=None), np.sort(plain.astype(np.float32), axis=None))
    with pytest.raises(ValueError, match="without augmentation"):
        training_batches(data.train, 4, AugmentValues(), seed=3, steps=steps)


def test_a_stem_of_stride_two_halves_every_later_layer_and_is_a_hyperparameter_only_when_given(
    data: PreparedData,
) -> None:
    def built(**overrides: Any) -> tuple[kt.HyperParameters, keras.Model]:
        hm = CxrHyperModel(config(space__conv_blocks=2, space__filters=8, space__kernel_size=3, **overrides), data)
        hp = kt.HyperParameters()
        hm.declare_hyperparameters(hp)
        return hp, hm.build(hp)

    hp, plain = built()
    assert "stem_stride" not in hp.values  # earlier experiments keep their hyperparameters and trial seeds
    hp, strided = built(space__stem_stride={"values": [2]})
    assert hp.values["stem_stride"] == 2
    conv1 = {m: m.get_layer("conv1") for m in (plain, strided)}
    assert conv1[plain].strides == (1, 1) and conv1[strided].strides == (2, 2)
    assert strided.get_layer("conv2").strides == (1, 1)
    assert conv1[plain].output.shape[1:3] == (32, 32) and conv1[strided].output.shape[1:3] == (16, 16)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    assert strided(x).shape == (2, 1)


def test_run_names_mark_a_strided_stem() -> None:
    from xraycnn.model.space import choice_tokens

    assert "s2" in choice_tokens({"stem_stride": 2}) and "s2" not in choice_tokens({"batch_norm": True})
