"""How a process's trials end when they do not finish: the open runs closed with why, one error of ours."""

from __future__ import annotations

from pathlib import Path

import keras_tuner as kt
import pytest
from mlflow.entities import RunStatus

from xraycnn.errors import DiskFullError, InterruptedByUserError, XrayCnnError
from xraycnn.jobs.trials import failed_in_a_row, run_trials
from xraycnn.tuning.tuners import SearchStopped


class Raising(kt.HyperModel):
    """Every trial raises `error` in `build` (not the tuner's own first look at the space, when it is made)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error, self.armed = error, False

    def build(self, hp: kt.HyperParameters) -> None:
        hp.Choice("units", [4, 8, 16, 32])
        if self.armed:
            raise self.error


def Failing() -> Raising:
    return Raising(ValueError("a trial that cannot be built"))


def _tuner(hypermodel: Raising, folder: Path) -> kt.RandomSearch:
    tuner = kt.RandomSearch(
        hypermodel, objective="val_loss", max_trials=10, directory=folder, project_name="p", overwrite=True
    )
    hypermodel.armed = True
    return tuner


def _closed() -> tuple[list[tuple[str, str]], object]:
    calls: list[tuple[str, str]] = []
    return calls, lambda status, why: calls.append((status, why))


def _never_interrupted() -> tuple[int, str, XrayCnnError]:
    raise AssertionError("not interrupted")


def test_keras_tuners_stop_after_failed_trials_is_said_in_our_words(tmp_path: Path) -> None:
    tuner = _tuner(Failing(), tmp_path)
    calls, close = _closed()
    with pytest.raises(XrayCnnError, match="3 trials in a row failed") as caught:
        run_trials(tuner, close, _never_interrupted, tmp_path)
    assert "a trial that cannot be built" in str(caught.value)  # the last error, its last line
    assert "Traceback" not in str(caught.value)
    assert calls and calls[0][0] == "FAILED"
    assert failed_in_a_row(tuner.oracle) == 3


def test_a_search_that_stops_for_a_full_disk_closes_its_runs_as_killed(tmp_path: Path) -> None:
    full = DiskFullError("no space left on the store's disk")
    calls, close = _closed()
    with pytest.raises(DiskFullError, match="no space left"):
        run_trials(_tuner(Raising(SearchStopped(full)), tmp_path), close, _never_interrupted, tmp_path)
    assert calls == [("KILLED", "no space left on the store's disk")]


def test_ctrl_c_ends_in_the_processs_own_error_and_status(tmp_path: Path) -> None:
    calls, close = _closed()
    own = InterruptedByUserError("stopped by the user")
    with pytest.raises(InterruptedByUserError, match="stopped by the user"):
        run_trials(
            _tuner(Raising(KeyboardInterrupt()), tmp_path),
            close,
            lambda: (RunStatus.KILLED, "interrupted", own),
            tmp_path,
        )
    assert calls == [("KILLED", "interrupted")]


def test_one_failed_trial_is_not_keras_tuners_stop(tmp_path: Path) -> None:
    tuner = _tuner(Failing(), tmp_path)
    with pytest.raises(XrayCnnError):
        run_trials(tuner, lambda *_: None, _never_interrupted, tmp_path)
    oracle = tuner.oracle
    # a completed trial after the failures breaks the run of them, as the oracle counts
    last = oracle.trials[oracle.end_order[-1]]
    last.status = kt.engine.trial.TrialStatus.COMPLETED
    assert failed_in_a_row(oracle) == 0
