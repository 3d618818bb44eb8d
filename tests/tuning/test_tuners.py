from __future__ import annotations

import random
from pathlib import Path

import keras_tuner as kt
import pytest
from keras_tuner.engine.trial import TrialStatus

from xraycnn.config import ExperimentConfig
from xraycnn.tuning.tuners import hyperband_schedule, planned_budget


def run_oracle(
    directory: Path, max_epochs: int, factor: int, iterations: int = 1, max_trials: int | None = None
) -> tuple[int, int]:
    """Drive Keras Tuner's own HyperbandOracle with random scores: (trials, epochs trained)."""
    hp = kt.HyperParameters()
    hp.Float("x", 0, 1)
    oracle = kt.oracles.HyperbandOracle(
        objective=kt.Objective("score", "max"),
        max_epochs=max_epochs,
        factor=factor,
        hyperband_iterations=iterations,
        hyperparameters=hp,
        seed=1,
    )
    oracle._set_project_dir(str(directory), "oracle")  # where it saves trials, as a tuner would set it
    oracle.max_trials = max_trials
    rng = random.Random(0)
    trials = epochs = 0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            return trials, epochs
        values = trial.hyperparameters.values
        trials += 1
        epochs += values["tuner/epochs"] - values["tuner/initial_epoch"]
        oracle.update_trial(trial.trial_id, {"score": rng.random()})
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)


@pytest.mark.parametrize(
    ("max_epochs", "factor", "iterations"), [(9, 3, 1), (2, 2, 1), (27, 3, 1), (10, 3, 2), (3, 3, 1)]
)
def test_hyperband_schedule_matches_keras_tuner(tmp_path: Path, max_epochs: int, factor: int, iterations: int) -> None:
    assert hyperband_schedule(max_epochs, factor, iterations) == run_oracle(tmp_path, max_epochs, factor, iterations)


@pytest.mark.parametrize(("max_epochs", "factor", "max_trials"), [(2, 2, 3), (10, 3, 26), (9, 3, 10)])
def test_max_trials_caps_hyperband(tmp_path: Path, max_epochs: int, factor: int, max_trials: int) -> None:
    assert hyperband_schedule(max_epochs, factor, max_trials=max_trials) == run_oracle(
        tmp_path, max_epochs, factor, max_trials=max_trials
    )


def test_capped_budget() -> None:
    config = ExperimentConfig.model_validate({"budget": {"max_epochs": 2, "hyperband_factor": 2, "max_trials": 3}})
    assert planned_budget(config)[0] == 3


def test_planned_budget() -> None:
    default = ExperimentConfig.model_validate({"budget": {"max_epochs": 9}})
    assert planned_budget(default) == (23, 75)
    random_search = ExperimentConfig.model_validate(
        {
            "tuner": {"algorithm": "random"},
            "budget": {"max_trials": 4, "max_epochs": 10},
            "space": {"epochs": {"min": 2, "max": 6}},
        }
    )
    assert planned_budget(random_search) == (4, 16)
