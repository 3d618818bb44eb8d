"""A trial judged on validation: the selection figures its epochs add to the logs, and its scores at the end."""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest

from tests.model.test_hypermodel import _fit, config, prepared
from xraycnn.data.dataset import PreparedData
from xraycnn.evaluation.trial_scoring import SelectionGuards, TrialScorer
from xraycnn.model.hypermodel import CxrHyperModel


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return prepared(tmp_path_factory.mktemp("scoring"))


def test_the_gate_adds_the_borders_only_auc_and_a_gated_score_to_every_epoch(data: PreparedData) -> None:
    gated = config(tuner__max_borders_only_auc=0.6, space__conv_blocks=1)
    hm = CxrHyperModel(gated, data)
    TrialScorer(hm)  # gives the hypermodel its epoch guards
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    spy = _fit(hm, epochs=2)
    callbacks = spy.kwargs["callbacks"]
    assert isinstance(callbacks[0], SelectionGuards)  # first: the tuner's callbacks read what it adds
    early = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))
    assert early.monitor == "val_gated_auc"
    history = spy.model.history.history
    for value, borders, score in zip(
        history["val_auc"], history["val_borders_only_auc"], history["val_gated_auc"], strict=True
    ):
        assert 0 <= borders <= 1
        assert score == (value if borders <= 0.6 else value - 100.0)


def test_the_acquisition_guard_adds_the_threshold_and_worst_change_specificity_to_every_epoch(
    data: PreparedData,
) -> None:
    guarded = config(tuner__min_shift_specificity=0.8, space__conv_blocks=1)
    hm = CxrHyperModel(guarded, data)
    scorer = TrialScorer(hm)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    spy = _fit(hm, epochs=2)
    callbacks = spy.kwargs["callbacks"]
    assert isinstance(callbacks[0], SelectionGuards)
    history = spy.model.history.history
    for value, threshold, worst, shift_auc, score in zip(
        history["val_auc"],
        history["val_threshold"],
        history["val_shift_worst_specificity"],
        history["val_shift_auc"],
        history["val_gated_auc"],
        strict=True,
    ):
        assert 0 <= threshold <= 1 and 0 <= worst <= 1 and 0 <= shift_auc <= 1
        assert score == (value if worst >= 0.8 else worst - 40.0)
    # the trial's own figures at its end: on every validation film, with intervals, at the threshold it chose
    scores = scorer.scores(hp, spy.model)
    metrics = scores.validation_metrics()
    assert metrics["best_val_threshold"] == scores.threshold.value
    assert 0 <= metrics["best_val_shift_worst_specificity"] <= 1
    assert "best_val_shift_blur_2_specificity_ci_low" in metrics
    per_source = {k for k in metrics if k.startswith("best_val_source_site-")}  # the manifest's two sites
    assert any(k.endswith("_thr_specificity") for k in per_source)
    assert any(k.endswith("_thr_sensitivity") for k in per_source)


def test_an_objective_of_calls_that_transfer_ranks_epochs_by_the_auc_against_changed_normals(
    data: PreparedData,
) -> None:
    transfer = config(
        tuner__objective="val_shift_auc",
        evaluation__threshold="shift_specificity",
        evaluation__target_shift_specificity=0.75,
        space__conv_blocks=1,
    )
    hm = CxrHyperModel(transfer, data)
    scorer = TrialScorer(hm)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    spy = _fit(hm, epochs=2)
    early = next(c for c in spy.kwargs["callbacks"] if isinstance(c, keras.callbacks.EarlyStopping))
    assert early.monitor == "val_shift_auc"  # no gate: the objective itself
    history = spy.model.history.history
    # the threshold keeps 75 % of the NORMAL validation films NORMAL under every change
    assert all(w >= 0.75 for w in history["val_shift_worst_specificity"])
    # the epoch's figure is the trial's own at its end: the same films, the same weights (the best epoch's, which
    # early stopping restores)
    best = int(np.argmax(history["val_shift_auc"]))
    scores = scorer.scores(hp, spy.model)
    assert scores.shift.values["shift_auc"] == pytest.approx(history["val_shift_auc"][best], abs=1e-6)
    assert scores.threshold.value == pytest.approx(history["val_threshold"][best], abs=1e-6)
