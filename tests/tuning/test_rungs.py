from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial, TrialStatus
from mlflow.tracking import MlflowClient

from tests.tiny_search import random_search, seed_store, xraycnn
from xraycnn.config import ExperimentConfig
from xraycnn.tracking.tags import RUNG_STOP_TAG
from xraycnn.tuning.rungs import Bar, Rungs, RungStop, rung_metric
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


def _kept(earlier: list[float], score: float, factor: int, lower: bool = False) -> tuple[bool, int]:
    """ASHA's rule, counted rather than sorted: whether `score` is among the best ceil(n / factor) of the n
    scores at a rung (the earlier ones and it; a tie goes on; the best the highest unless `lower`), and that
    share."""
    kept = math.ceil((len(earlier) + 1) / factor)
    return sum((e < score) if lower else (e > score) for e in earlier) < kept, kept


def test_a_trial_outside_the_best_share_at_a_rung_stops_there(tmp_path: Path) -> None:
    oracle = RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=12, seed=3, state_dir=tmp_path / "p")
    seen = _Epochs()
    tuner = TrackedTuner(
        oracle,
        hypermodel=_Scored(),
        directory=str(tmp_path),
        project_name="p",
        listeners=[seen],
        rungs=RUNGS,
        rung_factor=2,
    )
    tuner.search(verbose=0)

    trials = [oracle.trials[t] for t in oracle.end_order]
    assert len(trials) == 12
    reached: dict[int, list[float]] = {2: [], 4: []}  # the scores of the trials finished before, at each rung
    stopped_at = {2: 0, 4: 0}
    for trial in trials:
        early, late = trial.hyperparameters.get("early"), trial.hyperparameters.get("late")
        metrics = trial.metrics
        assert metrics.get_last_value(rung_metric("score", 2)) == early
        on_at_2, kept_2 = _kept(reached[2], early, 2)
        on_at_4, kept_4 = _kept(reached[4], late, 2)
        if not on_at_2:
            assert seen.epochs[trial.trial_id] == 2
            stop = seen.stops[trial.trial_id]
            assert (stop.epoch, stop.score, stop.kept, stop.reached) == (2, early, kept_2, len(reached[2]) + 1)
            assert stop.bar == sorted(reached[2], reverse=True)[kept_2 - 1] and stop.bar > early
            assert not metrics.exists(rung_metric("score", 4))
            stopped_at[2] += 1
        elif not on_at_4:
            assert seen.epochs[trial.trial_id] == 4
            stop = seen.stops[trial.trial_id]
            assert (stop.epoch, stop.score, stop.kept, stop.reached) == (4, late, kept_4, len(reached[4]) + 1)
            assert stop.bar == sorted(reached[4], reverse=True)[kept_4 - 1] and stop.bar > late
            stopped_at[4] += 1
        else:
            assert seen.epochs[trial.trial_id] == EPOCHS and trial.trial_id not in seen.stops
        reached[2].append(early)  # a trial stopped at a rung counts there too
        if metrics.exists(rung_metric("score", 4)):
            assert metrics.get_last_value(rung_metric("score", 4)) == late
            reached[4].append(late)
    assert stopped_at[2] > 0 and stopped_at[4] > 0, "the seed must exercise both rungs"
    # not only the best goes on: some trial behind an earlier one at a rung went past it
    assert any(
        seen.epochs[t.trial_id] > 2 and any(e.trial_id != t.trial_id and e.hyperparameters.get("early") >
        t.hyperparameters.get("early") for e in trials[: trials.index(t)])
        for t in trials
    )  # fmt: skip
    for trial in trials:  # the trial's score stays its best epoch's, as Keras Tuner records it
        early, late = trial.hyperparameters.get("early"), trial.hyperparameters.get("late")
        assert trial.score == (early if seen.epochs[trial.trial_id] == 2 else max(early, late))


def test_the_bar_keeps_the_best_share_a_tie_goes_on_and_a_minimised_metric_stops_above_it() -> None:
    rungs = Rungs((3,), kt.Objective("val_loss", "min"), factor=3)
    done = [_finished({"val_loss_at_epoch_3": v}) for v in (0.5, 0.3, 0.9, 0.4, 0.7)]
    bars = rungs.bars(done)  # 6 trials at the rung with the next one: the best 2 go on, so the bar is the 2nd best
    assert bars == {3: Bar(0.4, 2, 6)}
    assert rungs.verdict(3, {"val_loss": 0.4}, bars) is None  # a tie goes on
    assert rungs.verdict(3, {"val_loss": 0.35}, bars) is None
    assert rungs.verdict(3, {"val_loss": 0.6}, bars) == RungStop(3, 0.6, 0.4, 2, 6)
    assert rungs.verdict(2, {"val_loss": 0.9}, bars) is None  # not a rung
    assert rungs.bars([]) == {}  # the first trial goes on whatever it scores
    assert rungs.bars(done[:1]) == {3: Bar(0.5, 1, 2)}  # 2 or 3 at the rung: only the best goes on
    assert rungs.bars(done[:2]) == {3: Bar(0.3, 1, 3)}
    assert rungs.bars(done[:3]) == {3: Bar(0.5, 2, 4)}  # 4: the best 2
    assert rungs.verdict(3, {"val_loss": 0.9}, {}) is None  # no earlier trial reached it
    unfinished = _finished({"val_loss_at_epoch_3": 0.1})
    unfinished.status = TrialStatus.RUNNING
    assert rungs.bars([*done, unfinished]) == bars  # a trial still running has not reached its verdict
    with pytest.raises(ValueError, match="at least 2"):
        Rungs((3,), kt.Objective("val_loss", "min"), factor=1)


def _finished(metrics: dict[str, float], trial_id: str = "0") -> Trial:
    trial = Trial(kt.HyperParameters(), trial_id=trial_id, status=TrialStatus.COMPLETED)
    for name, value in metrics.items():
        trial.metrics.register(name, direction="min")
        trial.metrics.update(name, value)
    return trial


RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
MEASURED = "20261206-avx2-float32-intel-xeon-avx512bf16-amx.json"


@pytest.mark.parametrize("seed", ["", "-seed7", "-seed3"])
def test_the_rule_replayed_on_a_full_search_stops_what_the_real_search_stopped(seed: str) -> None:
    """The committed searches of the default with and without rungs (docs/search.md) trained the same networks
    to the same scores epoch by epoch; `Rungs`, replayed on the full search's curves, stops each trial after
    the epoch the search with rungs stopped it, and the trials it lets through are the ones that search trained."""
    full = json.loads((RESULTS / f"search-default-8trials-no-rungs{seed}-{MEASURED}").read_text())
    with_rungs = json.loads((RESULTS / f"search-default-8trials-asha{seed}-{MEASURED}").read_text())
    metric = with_rungs["objective"]
    rungs = Rungs((2, 5), kt.Objective(metric, "max"), factor=3)
    done: list[Trial] = []
    replayed = []
    for i, trial in enumerate(full["timeline"]["trials"]):
        curve = trial["objective_by_epoch"]
        bars = rungs.bars(done)
        epochs = next((e for e in range(1, len(curve) + 1) if rungs.verdict(e, {metric: curve[e - 1]}, bars)), None)
        epochs = epochs or len(curve)
        replayed.append(epochs)
        reached = {rung_metric(metric, e): curve[e - 1] for e in rungs.epochs if e <= epochs}
        done.append(_finished(reached, str(i)))
    measured = [t["epochs"] for t in with_rungs["timeline"]["trials"]]
    assert replayed == measured
    assert sum(e > 2 for e in measured) > 1  # more than the first trial went past the first rung
    for real, replay in zip(with_rungs["timeline"]["trials"], full["timeline"]["trials"], strict=True):
        assert real["objective_by_epoch"] == replay["objective_by_epoch"][: real["epochs"]]


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
    """The real CLI: a trial's MLflow run says why it stopped, and has the epochs it trained, not the budget's.
    Ranked by the validation loss, which two trials do not tie on (tiny networks may all reach an AUC of 1)."""
    experiment = tmp_path / "rungs.toml"
    text = random_search(small_dataset, seed=5, trials=5, epochs=3, model="xraycnn-rungs")
    text = text.replace("[budget]", "[budget]\nrungs = [1, 2]\nrung_factor = 2")
    experiment.write_text(text.replace("[tuner]", '[tuner]\nobjective = "val_loss"'))
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
    reached: dict[int, list[float]] = {1: [], 2: []}  # epoch -> the val_loss of the trials before, at that rung
    stopped = 0
    for run in trials:
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
        verdicts = {e: _kept(reached[e], curve[e], 2, lower=True) for e in (1, 2) if e in curve}
        behind = next((e for e, (on, _) in verdicts.items() if not on), None)
        tag = run.data.tags.get(RUNG_STOP_TAG)
        if behind is None:
            assert tag is None and max(curve) == 3, run.info.run_name
        else:
            stopped += 1
            kept = verdicts[behind][1]
            bar = sorted(reached[behind])[kept - 1]
            assert max(curve) == behind, run.info.run_name
            share = "the best" if kept == 1 else f"among the best {kept}"
            assert tag == (
                f"stopped at rung {behind}: val_loss {curve[behind]:.4f}, not {share} of the "
                f"{len(reached[behind]) + 1} trials at this epoch (the bar: {bar:.4f})"
            )
            assert f"(stopped after epoch {behind}: behind {bar:.4f})" in result.stdout
        for epoch in (1, 2):
            if epoch in curve:
                reached[epoch].append(curve[epoch])
    assert stopped > 0, "the seed must stop a trial"
