"""How a trial is judged beyond its loss, on films it never trained on: at every epoch's end the shortcut gate
and the acquisition guard (`SelectionGuards`, what a guarded tuner ranks epochs by), and at its end the test
metrics, the shortcut audit, its threshold, its calls under acquisition changes and per source (`TrialScores`).

`TrialScorer` holds what those need of the validation films, through each trial's preprocessing (masked,
changed, stacked for the guard), made once per preprocessing and shared by the trials of a process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np

from xraycnn.config import ExperimentConfig
from xraycnn.data.external import read_sources
from xraycnn.data.preprocess import FilmSteps, preprocess_films
from xraycnn.evaluation import ranking_metrics
from xraycnn.evaluation.acquisition import AS_GIVEN, ShiftScores, acquired_files, shift_scores
from xraycnn.evaluation.clinical import Scored, clinical_scores, score_set, source_figures
from xraycnn.evaluation.gradcam import gradcam
from xraycnn.evaluation.shortcuts import BORDERS_ONLY, LUNGS_ONLY, AuditScores, audit_scores, blackout
from xraycnn.evaluation.threshold import Threshold, choose_by
from xraycnn.model.hypermodel import EVAL_BATCH_SIZE, CxrHyperModel
from xraycnn.model.predict import predict_probabilities

TRIAL_GRADCAM_IMAGES = 256  # validation images explained per trial for its Grad-CAM share
TRIAL_AUDIT_RESAMPLES = 500  # bootstrap resamples of a trial's audit intervals (a champion's: the experiment's)


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


class TrialScorer:
    """Judges the trials of `hypermodel`: gives it the callbacks that add the selection figures to every epoch
    (`epoch_guards`, which it calls when its tuner is guarded) and scores a trained network (`scores`)."""

    def __init__(self, hypermodel: CxrHyperModel) -> None:
        self.hypermodel = hypermodel
        self.config = hypermodel.config
        self.data = hypermodel.data
        self._masked: dict[tuple[str, str], np.ndarray] = {}  # (steps, kept) -> preprocessed masked validation films
        self._changed: dict[str, dict[str, np.ndarray]] = {}  # steps -> change -> those films through the steps
        self._guard_films: dict[str, GuardFilms] = {}  # steps -> what the acquisition guard predicts every epoch
        self._val_sources: tuple[str, ...] | bool | None = False  # False: not read yet
        hypermodel.epoch_guards = self.epoch_guards

    def epoch_guards(self, hp: kt.HyperParameters) -> list[keras.callbacks.Callback]:
        """What adds the selection figures the tuner's configuration needs to every epoch's logs."""
        tuner = self.config.tuner
        if not (tuner.guarded or tuner.watches_acquisition):
            return []
        steps, _ = self.hypermodel.preprocessing(hp)
        return [
            SelectionGuards(
                self.config,
                self.masked_inputs(steps, "borders") if tuner.max_borders_only_auc is not None else None,
                self.data.val.labels,
                self.guard_films(steps) if tuner.watches_acquisition else None,
            )
        ]

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
                self.hypermodel.inputs(steps).val.images,
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

    def scores(self, hp: kt.HyperParameters, network: keras.Model) -> TrialScores:
        """The test metrics and, on validation, the audit, threshold, acquisition shift and per-source calls of a
        trial's network (holding its best epoch's weights). The masked and changed films go through the same
        steps as the registered model's layer, computed once per preprocessing (data.preprocess holds the two
        equal), so the network predicts them directly."""
        steps, _ = self.hypermodel.preprocessing(hp)
        inputs = self.hypermodel.inputs(steps)
        test = score_set(inputs.test.labels, predict_probabilities(network, inputs.test.images), None, 0, 0)
        val = self.data.val
        films = val.images[:TRIAL_GRADCAM_IMAGES].astype(np.float32)
        heatmaps = gradcam(self.hypermodel.registered_model(hp, network), films)
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
