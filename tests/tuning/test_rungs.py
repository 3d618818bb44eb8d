from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial
from mlflow.tracking import MlflowClient

from tests.tiny_search import random_search, seed_store, xraycnn
from xraycnn.config import ExperimentConfig
from xraycnn.tracking.tags import RUNG_STOP_TAG
from xraycnn.tuning.rungs import Rungs, RungStop, rung_metric
from xraycnn.tuning.tuners import RandomSearchOracle, SearchListener, TrackedTuner

EPOCHS = 6
RUNGS = (2, 4)


class _Scored(kt.HyperModel):
    """A network whose epochs report a `score` the trial's hyperparameters fix: `early` for epochs 1-2,
    `late` after, so that which trial must stop at which rung is known in advance."""

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        hp.Int("early", 1, 5)
        hp.Int("late", 1, 5)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(loss="mse")
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, callbacks: Any = (), **kwargs: Any) -> Any:
        early, late = hp.get("early"), hp.get("late")

        class Score(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                assert logs is not None
                logs["score"] = float(early if epoch < 2 else late)

        x = np.zeros((4, 1), dtype="float32")
        return model.fit(x, x, epochs=EPOCHS, callbacks=[Score(), *callbacks], verbose=0)


class _Epochs(SearchListener):
    def __init__(self) -> None:
        self.epochs: dict[str, int] = {}
        self.stops: dict[str, RungStop] = {}

    def epoch_end(self, trial: Trial, epoch: int, logs: dict[str, float]) -> None:
        self.epochs[trial.trial_id] = epoch + 1

    def trial_stopped(self, trial: Trial, stop: RungStop) -> None:
        self.stops[trial.trial_id] = stop


def test_a_trial_behind_the_best_earlier_one_at_a_rung_stops_there(tmp_path: Path) -> None:
    oracle = RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=10, seed=3, state_dir=tmp_path / "p")
    seen = _Epochs()
    tuner = TrackedTuner(
        oracle, hypermodel=_Scored(), directory=str(tmp_path), project_name="p", listeners=[seen], rungs=RUNGS
    )
    tuner.search(verbose=0)

    trials = [oracle.trials[t] for t in oracle.end_order]
    assert len(trials) == 10
    best = {2: 0.0, 4: 0.0}  # the best score after 2 and 4 epochs among the trials finished before
    stopped_at = {2: 0, 4: 0}
    for trial in trials:
        early, late = trial.hyperparameters.get("early"), trial.hyperparameters.get("late")
        metrics = trial.metrics
        assert metrics.get_last_value(rung_metric("score", 2)) == early
        if early >= best[2] and late >= best[4]:
            assert seen.epochs[trial.trial_id] == EPOCHS and trial.trial_id not in seen.stops
        elif early < best[2]:
            assert seen.epochs[trial.trial_id] == 2
            assert seen.stops[trial.trial_id] == RungStop(2, early, best[2])
            assert not metrics.exists(rung_metric("score", 4))
            stopped_at[2] += 1
        else:
            assert seen.epochs[trial.trial_id] == 4
            assert seen.stops[trial.trial_id] == RungStop(4, late, best[4])
            stopped_at[4] += 1
        best[2] = max(best[2], early)
        if metrics.exists(rung_metric("score", 4)):
            assert metrics.get_last_value(rung_metric("score", 4)) == late
            best[4] = max(best[4], late)
    assert stopped_at[2] > 0 and stopped_at[4] > 0, "the seed must exercise both rungs"
    for trial in trials:  # the trial's score stays its best epoch's, as Keras Tuner records it
        early, late = trial.hyperparameters.get("early"), trial.hyperparameters.get("late")
        assert trial.score == (early if seen.epochs[trial.trial_id] == 2 else max(early, late))


def test_a_tie_goes_on_and_a_minimised_metric_stops_above_the_bar() -> None:
    rungs = Rungs((3,), kt.Objective("val_loss", "min"))
    assert rungs.verdict(3, {"val_loss": 0.5}, {3: 0.5}) is None
    assert rungs.verdict(3, {"val_loss": 0.6}, {3: 0.5}) == RungStop(3, 0.6, 0.5)
    assert rungs.verdict(2, {"val_loss": 0.9}, {3: 0.5}) is None  # not a rung
    assert rungs.verdict(3, {"val_loss": 0.9}, {}) is None  # no earlier trial reached it


@pytest.mark.parametrize(
    ("budget", "tuner", "message"),
    [
        ({"rungs": [3, 2], "max_trials": 2}, {"algorithm": "random"}, "at least 1 and increasing"),
        ({"rungs": [0], "max_trials": 2}, {"algorithm": "random"}, "at least 1 and increasing"),
        ({"rungs": [10], "max_trials": 2, "max_epochs": 10}, {"algorithm": "random"}, "not below budget.max_epochs"),
        ({"rungs": [2]}, {"algorithm": "hyperband"}, "Hyperband stops trials by its own brackets"),
    ],
)
def test_rungs_that_cannot_work_are_refused(budget: dict, tuner: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.model_validate({"budget": budget, "tuner": tuner})


@pytest.mark.slow
def test_a_search_with_rungs_tags_the_trials_it_stopped(small_dataset: Path, tmp_path: Path) -> None:
    """The real CLI: a trial's MLflow run says why it stopped, and has the epochs it trained, not the budget's."""
    experiment = tmp_path / "rungs.toml"
    text = random_search(small_dataset, seed=5, trials=5, epochs=3, model="xraycnn-rungs")
    experiment.write_text(text.replace("[budget]", "[budget]\nrungs = [1, 2]"))
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    seed_store(uri)
    args = ["search", str(experiment), "--tuner-dir", str(tmp_path / "tuner"), "--reports-dir", str(tmp_path / "r")]
    result = xraycnn(*args, env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 0, result.stderr

    client = MlflowClient(uri)
    found = client.get_experiment_by_name("xraycnn-rungs")
    assert found is not None
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 5
    best: dict[int, float] = {}  # epoch -> the best val_auc of the trials before, at that epoch
    stopped = 0
    for run in trials:
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_auc")}
        behind = next((e for e in (1, 2) if e in best and curve[e] < best[e]), None)
        tag = run.data.tags.get(RUNG_STOP_TAG)
        if behind is None:
            assert tag is None and max(curve) == 3, run.info.run_name
        else:
            stopped += 1
            assert max(curve) == behind, run.info.run_name
            assert tag == f"stopped at rung {behind}: val_auc {curve[behind]:.4f} below the best earlier trial's " + (
                f"{best[behind]:.4f}"
            )
            assert f"(stopped after epoch {behind}: behind {best[behind]:.4f})" in result.stdout
        for epoch, value in curve.items():
            if epoch in (1, 2):
                best[epoch] = max(best.get(epoch, value), value)
    assert stopped > 0, "the seed must stop a trial"
