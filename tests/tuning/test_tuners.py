from __future__ import annotations

import pytest

from xraycnn.config import ExperimentConfig
from xraycnn.tuning.tuners import hyperband_schedule, planned_budget

# (max_epochs, factor, iterations, max_trials) -> (trials, epochs trained) of Keras Tuner's HyperbandOracle, as
# its brackets give them (also what an independent re-derivation of its arithmetic gave, before the schedule was
# read from the oracle itself).
KNOWN = {
    (9, 3, 1, None): (23, 75),
    (2, 2, 1, None): (5, 7),
    (27, 3, 1, None): (70, 375),
    (10, 3, 2, None): (60, 240),
    (3, 3, 1, None): (6, 11),
    (2, 2, 1, 3): (3, 3),
    (10, 3, 1, 26): (26, 80),
    (9, 3, 1, 10): (10, 11),
}


@pytest.mark.parametrize(("budget", "schedule"), KNOWN.items(), ids=str)
def test_hyperband_schedule_is_keras_tuner_s(
    budget: tuple[int, int, int, int | None], schedule: tuple[int, int]
) -> None:
    assert hyperband_schedule(*budget) == schedule


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
