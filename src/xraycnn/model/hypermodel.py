"""The searchable CNN: a Keras Tuner HyperModel that builds a `keras.Sequential` and fits it.

Architecture, after the published notebook: per conv block Conv2D('same', relu) -> MaxPool(2) -> Dropout;
then Flatten -> Dense(relu) -> Dropout -> Dense(1, sigmoid). Searchable: number of conv blocks, filters of
each block, kernel size, dropout, dense width, learning rate (in `build`), batch size and, for random and
Bayesian search, epochs (in `fit`). Under Hyperband the tuner passes `epochs`/`initial_epoch` to `fit`.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import keras
import keras_tuner as kt

from xraycnn.config import ExperimentConfig
from xraycnn.data.dataset import PreparedData
from xraycnn.data.pipeline import eval_batches, training_batches
from xraycnn.model.space import declare, possible_values

EVAL_BATCH_SIZE = 256
MODEL_NAME = "cxr_cnn"


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
        self.data = data

    # -- hyperparameters used by fit(); declared up front so the oracle samples them from trial 1 ----------
    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        self._fit_hyperparameters(hp)

    def _fit_hyperparameters(self, hp: kt.HyperParameters) -> tuple[int, int | None]:
        batch_size = int(declare(hp, "batch_size", self.config.space.batch_size))
        epochs_spec = self.config.epochs_spec()
        epochs = None if epochs_spec is None else int(declare(hp, "epochs", epochs_spec))
        return batch_size, epochs

    # -- the network ------------------------------------------------------------------------------------
    def build(self, hp: kt.HyperParameters) -> keras.Sequential:
        space = self.config.space
        blocks = int(declare(hp, "conv_blocks", space.conv_blocks))
        kernel = int(declare(hp, "kernel_size", space.kernel_size))
        dropout = float(declare(hp, "dropout", space.dropout))
        dense_units = int(declare(hp, "dense_units", space.dense_units))
        learning_rate = float(declare(hp, "learning_rate", space.learning_rate))
        block_options = possible_values(space.conv_blocks)
        filters: list[int] = []
        for block in range(space.max_conv_blocks):
            active_when = [n for n in block_options if n > block]
            name, spec = f"filters_{block + 1}", space.filters_for_block(block)
            if active_when == block_options:
                filters.append(int(declare(hp, name, spec)))
            else:  # only exists in networks with more than `block` blocks
                with hp.conditional_scope("conv_blocks", active_when):
                    value = declare(hp, name, spec)
                if block < blocks:
                    filters.append(int(value))

        keras.utils.set_random_seed(trial_seed(self.config.seed, hp.values))
        model = keras.Sequential(name=MODEL_NAME)
        model.add(keras.Input(shape=self.data.input_shape, name="image"))
        model.add(keras.layers.Rescaling(1.0 / 255, name="rescale"))
        for block in range(blocks):
            n = block + 1
            model.add(keras.layers.Conv2D(filters[block], kernel, padding="same", activation="relu", name=f"conv{n}"))
            model.add(keras.layers.MaxPooling2D(2, name=f"pool{n}"))
            model.add(keras.layers.Dropout(dropout, name=f"dropout{n}"))
        model.add(keras.layers.Flatten(name="flatten"))
        model.add(keras.layers.Dense(dense_units, activation="relu", name="dense"))
        model.add(keras.layers.Dropout(dropout, name="dropout_dense"))
        # float32 output under mixed precision: a bfloat16 sigmoid saturates to exactly 0 or 1 too early.
        model.add(keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="covid19_probability"))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=metrics(),
        )
        return model

    # -- training ---------------------------------------------------------------------------------------
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
        batch_size, searched_epochs = self._fit_hyperparameters(hp)
        if searched_epochs is not None:
            if epochs is not None:
                raise kt.errors.FatalValueError("epochs given twice: by the tuner and by the search space")
            epochs = searched_epochs
        if epochs is None:
            raise kt.errors.FatalValueError("no epochs: Hyperband passes them, otherwise the search space must")
        seed = trial_seed(self.config.seed, hp.values)
        objective = self.config.tuner.objective
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=objective,
            mode=self.config.tuner.direction,
            patience=self.config.training.early_stopping_patience,
            restore_best_weights=True,
        )
        return model.fit(
            training_batches(self.data.train, batch_size, self.config.data.augmentation, seed),
            validation_data=eval_batches(self.data.val, EVAL_BATCH_SIZE),
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[*(callbacks or []), early_stopping],
            shuffle=False,  # the tf.data pipeline already reshuffles every epoch
            verbose=0,
        )
