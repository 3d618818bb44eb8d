from __future__ import annotations

import keras_tuner as kt
from keras_tuner.engine.trial import Trial, TrialStatus
from rich.console import Console

from xraycnn.config import TunerConfig
from xraycnn.tuning.progress import SearchProgress, describe_hyperparameters, top_trials_table


def trial(trial_id: str, values: dict, status: str = TrialStatus.COMPLETED, score: float | None = None) -> Trial:
    hp = kt.HyperParameters()
    hp.values.update(values)
    t = Trial(hp, trial_id=trial_id, status=status)
    t.score = score
    return t


VALUES = {
    "conv_blocks": 2,
    "filters_1": 32,
    "filters_2": 64,
    "filters_3": 128,
    "kernel_size": 3,
    "dropout": 0.3,
    "learning_rate": 1e-3,
    "batch_size": 32,
}


def test_describe_hyperparameters_shows_only_active_blocks() -> None:
    assert describe_hyperparameters(VALUES) == "blocks 2 f 32-64 k 3 drop 0.3 lr 1e-03 bs 32"


def test_log_mode_prints_one_line_per_trial_with_best_so_far() -> None:
    console = Console(record=True, width=200, force_terminal=False)
    progress = SearchProgress(console, "val_auc", "max", planned_trials=3, planned_epochs=6)
    progress.start()
    for i, score in enumerate((0.8, 0.9, None)):
        t = trial(
            f"0{i}",
            {**VALUES, "tuner/epochs": 2, "tuner/initial_epoch": 0},
            score=score,
            status=TrialStatus.COMPLETED if score else TrialStatus.FAILED,
        )
        if score is None:
            t.message = "Traceback ...\nValueError: out of memory"
        progress.trial_begin(t)
        progress.epoch_end(t, 0, {"val_auc": 0.5})
        progress.epoch_end(t, 1, {"val_auc": score or 0.5})
        progress.trial_end(t)
    progress.stop()
    lines = console.export_text().strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("trial 00 (1/3) blocks 2 f 32-64") and "val_auc 0.8000" in lines[0]
    assert "best val_auc 0.9000 (trial 01)" in lines[1] and "left" in lines[1]
    assert "FAILED: ValueError: out of memory" in lines[2] and "best val_auc 0.9000 (trial 01)" in lines[2]


def test_top_trials_table() -> None:
    console = Console(record=True, width=200)
    rows = [{"trial_id": "07", "score": 0.99, "test_auc": 0.98, "best_epoch": 4, "hyperparameters": VALUES}]
    console.print(top_trials_table(rows, TunerConfig()))
    text = console.export_text()
    assert "Top trials by val_auc" in text and "0.9900" in text and "0.9800" in text and "f 32-64" in text
    assert "gate" not in text


def test_a_gated_table_shows_the_objective_and_the_gate_behind_each_score() -> None:
    console = Console(record=True, width=240)
    gated = TunerConfig(max_borders_only_auc=0.6)
    values = {**VALUES, "preprocess_crop": True, "preprocess_equalize": "global", "batch_norm": True, "head": "gap"}
    rows = [
        {"trial_id": "02", "score": 0.91, "best_val_borders_only_auc": 0.5, "gate": "pass", "hyperparameters": values},
        {
            "trial_id": "01",
            "score": 0.97 - 100,
            "best_val_borders_only_auc": 0.83,
            "gate": "fail",
            "hyperparameters": VALUES,
        },
    ]
    console.print(top_trials_table(rows, gated))
    text = console.export_text()
    assert "over the shortcut gate (borders-only AUC > 0.6) last" in text
    first, second = (line for line in text.splitlines() if line.startswith(("│    1", "│    2")))
    assert "0.9100" in first and "pass" in first and "crop eq-global bn gap" in first
    assert "0.9700" in second and "0.8300" in second and "fail" in second


def test_a_gated_score_is_shown_as_its_objective() -> None:
    console = Console(record=True, width=200, force_terminal=False)
    progress = SearchProgress(console, "val_auc", "max", 2, 4, tuner=TunerConfig(max_borders_only_auc=0.6))
    progress.start()
    progress.trial_end(trial("00", VALUES, score=0.97 - 100))
    progress.trial_end(trial("01", VALUES, score=0.91))
    lines = console.export_text().splitlines()
    assert "-> val_auc 0.9700 over the shortcut gate" in lines[0]
    assert "-> val_auc 0.9100 •" in lines[1] and "best val_auc 0.9100 (trial 01)" in lines[1]
