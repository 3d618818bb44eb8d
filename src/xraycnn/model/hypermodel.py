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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from xraycnn.config import ExperimentConfig
from xraycnn.data.augment import AugmentValues
from xraycnn.data.dataset import PreparedData
from xraycnn.data.external import read_sources
from xraycnn.data.pipeline import eval_batches, training_stream
from xraycnn.data.preprocess import FilmSteps, film_preprocessing_model, preprocess_films
from xraycnn.evaluation import predict_probabilities, ranking_metrics
from xraycnn.evaluation.acquisition import AS_GIVEN, ShiftScores, acquired_files, shift_scores
from xraycnn.evaluation.clinical import Scored, clinical_scores, score_set, source_figures
from xraycnn.evaluation.gradcam import gradcam
from xraycnn.evaluation.shortcuts import BORDERS_ONLY, LUNGS_ONLY, AuditScores, audit_scores, blackout
from xraycnn.evaluation.threshold import Threshold, choose_by
from xraycnn.model.layers import FusedBatchNormalization, stock_layers
from xraycnn.model.schedules import CosineDecayPerEpoch

EVAL_BATCH_SIZE = 256
MODEL_NAME = "cxr_cnn"
TRIAL_GRADCAM_IMAGES = 256  # validation images explained per trial for its Grad-CAM share
TRIAL_AUDIT_RESAMPLES = 500  # bootstrap resamples of a trial's audit intervals (a champion's: the experiment's)
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


@dataclass(frozen=True)
class TrialScores:
    """What a finished trial is reported with, all of its best epoch: test metrics; and on validation the
    shortcut audit, its threshold (the experiment's rule), its calls under acquisition changes at that threshold
    and its calls per source (reported only: the tuner ranks on the selection metric,
    `TunerConfig.selection_metric`)."""

    test: Scored  # at 0.5, without intervals
    audit: AuditScores
    threshold: Threshold
    shift: ShiftScores
    sources: dict[str, Scored]

    def validation_metrics(self) -> dict[str, float]:
        """As the trial run's metrics: `best_val_borders_only_auc`, `best_val_shift_worst_specificity`,
        `best_val_threshold`, `best_val_source_<name>_thr_specificity`, ... (with `_ci_low` / `_ci_high`)."""
        return {
            **self.audit.flat("best_val_"),
            **self.shift.flat("best_val_"),
            "best_val_threshold": self.threshold.value,
            **source_figures(self.sources, "best_val_"),
        }


def predict_distinct(network: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """P(COVID19) of each input; when they are all the same (a crop of a film whose lung box is blacked out:
    all black), one prediction for all."""
    if len(inputs) > 1 and (inputs == inputs[:1]).all():
        return np.repeat(predict_probabilities(network, inputs[:1], EVAL_BATCH_SIZE), len(inputs))
    return predict_probabilities(network, inputs, EVAL_BATCH_SIZE)


CLEAN = "clean"  # the validation films as the network sees them (the threshold's films)


@dataclass(frozen=True)
class GuardFilms:
    """What the acquisition guard of every epoch predicts, as a trial's network sees it: the validation films as
    given (`CLEAN`, for the threshold), and through the acquisition route unchanged (`AS_GIVEN`) and under each
    change, of the films `changed_index` picks (the NORMAL ones, or all where the threshold rule needs them
    changed); held as one array, so that an epoch predicts them in one call."""

    labels: np.ndarray
    changed_index: np.ndarray
    films: np.ndarray  # CLEAN's, AS_GIVEN's, then each change's films, one after the other
    names: tuple[str, ...]  # CLEAN, AS_GIVEN, then the changes

    @classmethod
    def stacked(
        cls,
        labels: np.ndarray,
        clean: np.ndarray,
        as_given: np.ndarray,
        changed: dict[str, np.ndarray],
        index: np.ndarray,
    ) -> GuardFilms:
        return cls(labels, index, np.concatenate([clean, as_given, *changed.values()]), (CLEAN, AS_GIVEN, *changed))

    def probabilities(self, network: keras.Model) -> dict[str, np.ndarray]:
        """P(COVID19) of every film, by name."""
        p = predict_probabilities(network, self.films, EVAL_BATCH_SIZE)
        sizes = [len(self.labels)] * 2 + [len(self.changed_index)] * (len(self.names) - 2)
        return dict(zip(self.names, np.split(p, np.cumsum(sizes)[:-1]), strict=True))


class SelectionGuards(keras.callbacks.Callback):
    """Adds to every epoch's logs what the tuner, its checkpoint and early stopping then rank epochs by: the
    borders-only AUC on validation (the shortcut gate); the epoch's threshold, the specificity of the NORMAL
    validation films under the worst acquisition change at it (the acquisition guard) and the AUC of the COVID-19
    films against the changed NORMAL ones (`val_shift_auc`); and the gated selection score. Must come before
    them in the callbacks."""

    def __init__(
        self, config: ExperimentConfig, borders_only: np.ndarray | None, labels: np.ndarray, guard: GuardFilms | None
    ) -> None:
        super().__init__()
        self.config = config
        self.tuner = config.tuner
        self.borders_only = borders_only
        self.labels = labels
        self.guard = guard

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        borders = shift = None
        if self.borders_only is not None:
            p = predict_distinct(self.model, self.borders_only)
            borders = logs["val_borders_only_auc"] = float(ranking_metrics(self.labels, p)["auc"][0])
        if self.guard is not None:
            chosen, shift_auc = guard_calls(self.model, self.guard, self.config)
            shift = chosen.worst_specificity
            logs["val_threshold"] = chosen.value
            logs["val_shift_worst_specificity"] = shift
            logs["val_shift_auc"] = shift_auc
        logs[self.tuner.selection_metric] = self.tuner.gated(float(logs[self.tuner.objective]), borders, shift)


def guard_calls(network: keras.Model, guard: GuardFilms, config: ExperimentConfig) -> tuple[Threshold, float]:
    """The threshold the experiment's rule picks on the validation films, with the specificity of the NORMAL
    films under the worst change at it; and the AUC of the COVID-19 films as given against the NORMAL films
    changed, under the worst change."""
    predicted = guard.probabilities(network)
    clean, as_given = predicted.pop(CLEAN), predicted.pop(AS_GIVEN)
    changed = predicted
    labels = guard.labels
    index = guard.changed_index
    if len(index) == len(labels):  # every film changed: the threshold rule sees them all
        chosen = choose_by(config.evaluation, labels, clean, changed)
    else:  # the NORMAL films changed: a COVID-19 film's score, as given, stands in for its changed ones
        chosen = choose_by(config.evaluation, labels, clean, {k: _spliced(clean, index, p) for k, p in changed.items()})
    normal = labels[index] == 0
    worst = min(float(np.mean(p[normal] < chosen.value)) for p in changed.values())
    positives = as_given[labels == 1]
    shift_auc = min(
        float(
            ranking_metrics(np.r_[np.ones(len(positives)), np.zeros(normal.sum())], np.r_[positives, p[normal]])["auc"][
                0
            ]
        )
        for p in changed.values()
    )
    return replace(chosen, worst_specificity=worst), shift_auc


def _spliced(clean: np.ndarray, index: np.ndarray, changed: np.ndarray) -> np.ndarray:
    out = clean.copy()
    out[index] = changed
    return out


class CxrHyperModel(kt.HyperModel):
    def __init__(self, config: ExperimentConfig, data: PreparedData) -> None:
        super().__init__(name=MODEL_NAME, tunable=True)
        self.config = config
        self.data = data  # the films; `inputs(steps)` is what a trial's network sees
        self._inputs: dict[str, PreparedData] = {}  # steps key -> the splits as the trials' networks see them
        self._masked: dict[tuple[str, str], np.ndarray] = {}  # (steps, kept) -> preprocessed masked validation films
        self._changed: dict[str, dict[str, np.ndarray]] = {}  # steps -> change -> those films through the steps
        self._guard_films: dict[str, GuardFilms] = {}  # steps -> what the acquisition guard predicts every epoch
        self._val_sources: tuple[str, ...] | bool | None = False  # False: not read yet

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

    def masked_inputs(self, steps: FilmSteps, keep: str) -> np.ndarray:
        """The validation films with the lungs ('borders' kept) or the borders ('lungs' kept) blacked out,
        through `steps`: what a trial's network sees of them (once per preprocessing)."""
        key = (steps.key(), keep)
        if key not in self._masked:
            self._masked[key] = preprocess_films(blackout(self.data.val.images, keep), steps)
        return self._masked[key]

    def changed_inputs(self, steps: FilmSteps) -> dict[str, np.ndarray]:
        """The validation films as acquired under each change (and AS_GIVEN, through the same route), brought to
        the film size and through `steps`: what a trial's network sees of them (once per preprocessing)."""
        if steps.key() not in self._changed:
            root = Path(self.data.root)
            acquired = acquired_files(
                [root / f for f in self.data.val.files], self.data.image_size, self.data.channels, self.config.seed
            )
            self._changed[steps.key()] = {name: preprocess_films(films, steps) for name, films in acquired.items()}
        return self._changed[steps.key()]

    def guard_films(self, steps: FilmSteps) -> GuardFilms:
        """What the acquisition guard predicts every epoch: every validation film as given and through the
        acquisition route, and under each change the NORMAL ones (every film where the threshold rule needs the
        COVID-19 films changed too: `shift_youden`)."""
        labels = self.data.val.labels
        acquired = self.changed_inputs(steps)
        everyone = self.config.evaluation.threshold == "shift_youden"
        index = np.arange(len(labels)) if everyone else np.flatnonzero(labels == 0)
        if steps.key() not in self._guard_films:
            self._guard_films[steps.key()] = GuardFilms.stacked(
                labels,
                self.inputs(steps).val.images,
                acquired[AS_GIVEN],
                {name: films[index] for name, films in acquired.items() if name != AS_GIVEN},
                index,
            )
        return self._guard_films[steps.key()]

    def validation_sources(self) -> tuple[str, ...] | None:
        """Where each validation film comes from (the dataset's MANIFEST.csv), or None without one."""
        if self._val_sources is False:
            root = Path(self.data.root)
            self._val_sources = read_sources(root, [root / f for f in self.data.val.files])
        return self._val_sources  # type: ignore[return-value]

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
            first.append(
                SelectionGuards(
                    self.config,
                    self.masked_inputs(steps, "borders") if tuner.max_borders_only_auc is not None else None,
                    data.val.labels,
                    self.guard_films(steps) if tuner.watches_acquisition else None,
                )
            )
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

    # -- reporting --------------------------------------------------------------------------------------
    def trial_scores(self, hp: kt.HyperParameters, network: keras.Model) -> TrialScores:
        """The test metrics and, on validation, the audit, threshold, acquisition shift and per-source calls of a
        trial's network (holding its best epoch's weights). The masked and changed films go through the same
        steps as the registered model's layer, computed once per preprocessing (data.preprocess holds the two
        equal), so the network predicts them directly."""
        steps, _ = self.preprocessing(hp)
        inputs = self.inputs(steps)
        test = score_set(inputs.test.labels, predict_probabilities(network, inputs.test.images), None, 0, 0)
        val = self.data.val
        heatmaps = gradcam(self.registered_model(hp, network), val.images[:TRIAL_GRADCAM_IMAGES].astype(np.float32))
        masked = {
            BORDERS_ONLY: predict_distinct(network, self.masked_inputs(steps, "borders")),
            LUNGS_ONLY: predict_distinct(network, self.masked_inputs(steps, "lungs")),
        }
        seed = self.config.seed
        audit = audit_scores(
            val.labels, masked, heatmaps.shares_of(len(val)), resamples=TRIAL_AUDIT_RESAMPLES, seed=seed
        )
        clean = predict_probabilities(network, inputs.val.images)
        acquired = {name: predict_probabilities(network, x) for name, x in self.changed_inputs(steps).items()}
        changed = {name: p for name, p in acquired.items() if name != AS_GIVEN}
        threshold = choose_by(self.config.evaluation, val.labels, clean, changed)
        shift = shift_scores(
            val.labels, acquired[AS_GIVEN], changed, threshold.value, resamples=TRIAL_AUDIT_RESAMPLES, seed=seed
        )
        sources = self.validation_sources()
        per_source = (
            {}
            if sources is None
            else clinical_scores(
                val.labels,
                clean,
                threshold.value,
                threshold.rule,
                sources=np.asarray(sources, dtype=object),
                resamples=TRIAL_AUDIT_RESAMPLES,
                seed=seed,
            ).per_source
        )
        return TrialScores(test, audit, threshold, shift, per_source)
