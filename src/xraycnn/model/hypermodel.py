"""The searchable CNN: a Keras Tuner HyperModel that builds a `keras.Sequential` and fits it.

Architecture, after the published notebook: per conv block Conv2D('same', relu) -> MaxPool(2) -> Dropout;
then Flatten -> Dense(relu) -> Dropout -> Dense(1, sigmoid). Searchable: number of conv blocks, filters of
each block, kernel size, batch normalisation in the blocks (Conv -> BatchNorm -> ReLU), global average
pooling instead of Flatten, dropout, dense width, learning rate (in `build`); batch size, augmentation and,
for random and Bayesian search, epochs (in `fit`); the preprocessing (in both: it sets the input shape and
the data). Under Hyperband the tuner passes `epochs`/`initial_epoch` to `fit`.

The network a trial trains takes the preprocessed images (computed once, data.preprocess); the model that is
registered is the same network behind the preprocessing layer, taking films (`registered_model`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner as kt

from xraycnn.config import ExperimentConfig
from xraycnn.data.augment import AugmentValues
from xraycnn.data.dataset import PreparedData
from xraycnn.data.pipeline import eval_batches, training_stream
from xraycnn.data.preprocess import FilmSteps, film_preprocessing_model
from xraycnn.model.layers import FusedBatchNormalization, stock_layers
from xraycnn.model.schedules import CosineDecayPerEpoch

EVAL_BATCH_SIZE = 256
MODEL_NAME = "cxr_cnn"
# What a trial's selection figures are computed by at every epoch's end (the shortcut gate and the acquisition
# guard: evaluation.trial_scoring), given the trial's hyperparameters; the tuner's callbacks read what they add.
EpochGuards = Callable[[kt.HyperParameters], list[keras.callbacks.Callback]]
PREPROCESS_HP = {"crop": "preprocess_crop", "equalize": "preprocess_equalize", "mask": "preprocess_mask"}


def metrics() -> list[keras.metrics.Metric]:
    """What every model reports per epoch (and with `val_` on validation data)."""
    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.AUC(name="auc"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
    ]


def trial_seed(base_seed: int, values: dict[str, Any]) -> int:
    """A seed per hyperparameter configuration: the same configuration starts from the same weights and
    batch order whatever the trial order, so a resumed or repeated trial is reproducible."""
    own = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    return (base_seed + zlib.crc32(json.dumps(own, sort_keys=True, default=str).encode())) % (2**31 - 1)


class CxrHyperModel(kt.HyperModel):
    def __init__(self, config: ExperimentConfig, data: PreparedData) -> None:
        super().__init__(name=MODEL_NAME, tunable=True)
        self.config = config
        self.data = data  # the films; `inputs(steps)` is what a trial's network sees
        self._inputs: dict[str, PreparedData] = {}  # steps key -> the splits as the trials' networks see them
        # Set by evaluation.trial_scoring.TrialScorer: a guarded tuner ranks epochs by what they add to the logs.
        self.epoch_guards: EpochGuards | None = None

    # -- hyperparameters used by fit(); declared up front so the oracle samples them from trial 1 ----------
    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        self.preprocessing(hp)
        self._fit_hyperparameters(hp)

    def preprocessing(self, hp: kt.HyperParameters) -> tuple[FilmSteps, bool]:
        """The film steps of this trial, and whether its network standardises each image."""
        pre = self.config.data.preprocess
        chosen = {key: getattr(pre, key).declare(hp, name) for key, name in PREPROCESS_HP.items()}
        standardize = bool(pre.standardize.declare(hp, "preprocess_standardize"))
        steps = FilmSteps(
            crop=bool(chosen["crop"]),
            equalize=str(chosen["equalize"]),
            mask=bool(chosen["mask"]),
            box=pre.box,
            clahe_clip_limit=pre.clahe_clip_limit,
            clahe_tiles=pre.clahe_tiles,
        )
        return steps, standardize

    def augmentation(self, hp: kt.HyperParameters) -> AugmentValues:
        chosen = {name: spec.declare(hp, f"augment_{name}") for name, spec in self.config.data.augmentation.items()}
        return AugmentValues(**{k: bool(v) if k == "horizontal_flip" else float(v) for k, v in chosen.items()})

    def _fit_hyperparameters(self, hp: kt.HyperParameters) -> tuple[int, int | None, AugmentValues]:
        batch_size = int(self.config.space.batch_size.declare(hp, "batch_size"))
        epochs_spec = self.config.epochs_spec()
        epochs = None if epochs_spec is None else int(epochs_spec.declare(hp, "epochs"))
        return batch_size, epochs, self.augmentation(hp)

    # -- the network ------------------------------------------------------------------------------------
    def build(self, hp: kt.HyperParameters) -> keras.Sequential:
        space = self.config.space
        steps, standardize = self.preprocessing(hp)
        blocks = int(space.conv_blocks.declare(hp, "conv_blocks"))
        kernel = int(space.kernel_size.declare(hp, "kernel_size"))
        batch_norm = bool(space.batch_norm.declare(hp, "batch_norm"))
        head = str(space.head.declare(hp, "head"))
        dropout = float(space.dropout.declare(hp, "dropout"))
        dense_units = int(space.dense_units.declare(hp, "dense_units"))
        learning_rate = float(space.learning_rate.declare(hp, "learning_rate"))
        stem_stride = 1 if space.stem_stride is None else int(space.stem_stride.declare(hp, "stem_stride"))
        block_options = [int(v) for v in space.conv_blocks.options()]
        filters: list[int] = []
        for block in range(space.max_conv_blocks):
            active_when = [n for n in block_options if n > block]
            name, spec = f"filters_{block + 1}", space.filters_for_block(block)
            if active_when == block_options:
                filters.append(int(spec.declare(hp, name)))
            else:  # only exists in networks with more than `block` blocks
                with hp.conditional_scope("conv_blocks", active_when):
                    value = spec.declare(hp, name)
                if block < blocks:
                    filters.append(int(value))

        keras.utils.set_random_seed(trial_seed(self.config.seed, hp.values))
        height, width = steps.output_size(self.data.image_size, self.data.image_size)
        model = keras.Sequential(name=MODEL_NAME)
        model.add(keras.Input(shape=(height, width, self.data.channels), name="image"))
        if standardize:  # per image: zero mean, unit variance over all its pixels (no learnt scale or shift)
            model.add(
                keras.layers.LayerNormalization(
                    axis=[1, 2, 3], center=False, scale=False, epsilon=1e-3, dtype="float32", name="standardize"
                )
            )
        else:
            model.add(keras.layers.Rescaling(1.0 / 255, name="rescale"))
        for block in range(blocks):
            n = block + 1
            strides = stem_stride if block == 0 else 1
            if batch_norm:  # the bias is redundant before a batch normalisation
                model.add(
                    keras.layers.Conv2D(
                        filters[block], kernel, strides=strides, padding="same", use_bias=False, name=f"conv{n}"
                    )
                )
                # momentum 0.9, not Keras' 0.99: a trial of 2-3 epochs (Hyperband's first rung) has ~400 steps, and
                # the moving statistics must have caught up by then, or its val_auc and calibration suffer
                model.add(FusedBatchNormalization(momentum=0.9, name=f"bn{n}"))
                model.add(keras.layers.Activation("relu", name=f"relu{n}"))
            else:
                model.add(
                    keras.layers.Conv2D(
                        filters[block], kernel, strides=strides, padding="same", activation="relu", name=f"conv{n}"
                    )
                )
            model.add(keras.layers.MaxPooling2D(2, name=f"pool{n}"))
            model.add(keras.layers.Dropout(dropout, name=f"dropout{n}"))
        if head == "gap":
            model.add(keras.layers.GlobalAveragePooling2D(name="global_pool"))
        else:
            model.add(keras.layers.Flatten(name="flatten"))
        model.add(keras.layers.Dense(dense_units, activation="relu", name="dense"))
        model.add(keras.layers.Dropout(dropout, name="dropout_dense"))
        # float32 output under mixed precision: a bfloat16 sigmoid saturates to exactly 0 or 1 too early.
        model.add(keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="covid19_probability"))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=metrics(),
            steps_per_execution=self.config.training.steps_per_execution,
        )
        # The optimizer's slots created now, not on the first step: a tf.function that creates variables is
        # traced twice, and the training step's trace is the larger part of a short trial's fixed cost. Built,
        # the optimizer also takes its step count and moments from a checkpoint: a Hyperband continuation
        # resumes Adam where the trial it continues left it (Keras skips them for an optimizer not built yet).
        model.optimizer.build(model.trainable_variables)
        return model

    def registered_model(self, hp: kt.HyperParameters, network: keras.Model) -> keras.Model:
        """What is registered and assessed: the trial's network behind its preprocessing, taking films, in
        stock Keras layers and operations only (`mlflow.keras.load_model` needs nothing of xraycnn). The
        network's layers are shared, but for its batch normalisations, copied as Keras' own."""
        steps, _ = self.preprocessing(hp)
        shape = (self.data.image_size, self.data.image_size, self.data.channels)
        front = [film_preprocessing_model(steps, *shape)] if steps.active else []
        return keras.Sequential(
            [keras.Input(shape=shape, name="film"), *front, *stock_layers(network)], name=MODEL_NAME
        )

    # -- training ---------------------------------------------------------------------------------------
    def inputs(self, steps: FilmSteps) -> PreparedData:
        """The splits through `steps`: what a trial's network trains and is tested on (once per preprocessing)."""
        if steps.key() not in self._inputs:
            self._inputs[steps.key()] = self.data.preprocessed(steps)
        return self._inputs[steps.key()]

    def fit(
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        *args: Any,
        callbacks: list[keras.callbacks.Callback] | None = None,
        epochs: int | None = None,
        initial_epoch: int = 0,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        kwargs.pop("verbose", None)  # Keras Tuner forwards search(verbose=...); we never print per batch
        if args or kwargs:
            raise TypeError(f"CxrHyperModel.fit takes its data from the hypermodel, got {args!r} {sorted(kwargs)}")
        batch_size, searched_epochs, augmentation = self._fit_hyperparameters(hp)
        if searched_epochs is not None:
            if epochs is not None:
                raise kt.errors.FatalValueError("epochs given twice: by the tuner and by the search space")
            epochs = searched_epochs
        if epochs is None:
            raise kt.errors.FatalValueError("no epochs: Hyperband passes them, otherwise the search space must")
        steps, _ = self.preprocessing(hp)
        data = self.inputs(steps)
        seed = trial_seed(self.config.seed, hp.values)
        tuner = self.config.tuner
        first: list[keras.callbacks.Callback] = []
        if tuner.guarded or tuner.watches_acquisition:
            if self.epoch_guards is None:
                raise kt.errors.FatalValueError(
                    f"the tuner ranks epochs by {tuner.selection_metric}, which its epoch guards compute: make the "
                    "hypermodel's TrialScorer (evaluation.trial_scoring) before fitting"
                )
            first.extend(self.epoch_guards(hp))
        if self.config.training.learning_rate_schedule == "cosine":
            first.append(CosineDecayPerEpoch(epochs))
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=tuner.selection_metric,
            mode=tuner.direction,
            patience=self.config.training.early_stopping_patience,
            restore_best_weights=True,
        )
        # At the film stage the films are augmented, then preprocessed, per batch; otherwise the cached inputs are.
        on_films = self.config.data.augmentation.stage == "film" and augmentation.active and steps.active
        batches, steps_per_epoch = training_stream(
            self.data.train if on_films else data.train,
            batch_size,
            augmentation,
            seed,
            self.config.training.steps_per_execution,
            steps if on_films else None,
        )
        return model.fit(
            batches,
            steps_per_epoch=steps_per_epoch,
            validation_data=eval_batches(data.val, EVAL_BATCH_SIZE),
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[*first, *(callbacks or []), early_stopping],
            shuffle=False,  # the tf.data pipeline already reshuffles every epoch
            verbose=0,
        )
