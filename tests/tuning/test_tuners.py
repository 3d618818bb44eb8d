from __future__ import annotations

from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial

from xraycnn.config import ExperimentConfig
from xraycnn.tuning.tuners import (
    RandomSearchOracle,
    SearchListener,
    SearchStopped,
    TrackedTuner,
    hyperband_schedule,
    planned_budget,
)

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


class _TrialStateOnFullDisk(SearchListener):
    """Points each new trial's state file at /dev/full: the kernel answers its next write with ENOSPC, as a full
    file system does, after the trial is created and before the oracle records its result."""

    def __init__(self) -> None:
        self.tuner: kt.Tuner | None = None

    def search_begin(self, tuner: kt.Tuner) -> None:
        self.tuner = tuner

    def trial_begin(self, trial: Trial) -> None:
        assert self.tuner is not None
        state = Path(self.tuner.get_trial_dir(trial.trial_id)) / "trial.json"
        state.unlink()
        state.symlink_to("/dev/full")


def _one_dense_network(hp: kt.HyperParameters) -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(hp.Choice("units", [1, 2]))])
    model.compile(loss="mse")
    return model


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_while_the_oracle_records_a_trial_stops_the_search(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Keras Tuner records a trial after training it, outside the tuner's hooks: a full disk there must end the
    search with our error, not become an INVALID trial reported by Keras Tuner's own traceback."""
    oracle = RandomSearchOracle(objective="loss", max_trials=2, seed=1, state_dir=tmp_path / "p")
    tuner = TrackedTuner(
        oracle,
        hypermodel=_one_dense_network,
        directory=str(tmp_path),
        project_name="p",
        listeners=[_TrialStateOnFullDisk()],
    )
    x = np.zeros((4, 2), dtype="float32")
    with pytest.raises(SearchStopped) as stopped:
        tuner.search(x, x[:, :1], epochs=1, verbose=0)
    message = str(stopped.value.error)
    assert message.startswith(f"no space left on the file system of {tmp_path / 'p'} while writing the search's state")
    assert "Traceback" not in capfd.readouterr().err
    assert [t.status for t in oracle.trials.values()] != ["INVALID"]
