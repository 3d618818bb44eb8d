"""The report's pure parts on hand-made runs: which attempt counts, ordering, axes, and the page itself."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

from xraycnn.report.figures import _axis, objective_over_trials, parallel_coordinates
from xraycnn.report.page import trials_table_html
from xraycnn.report.snapshot import SearchSnapshot, last_attempts, trials_frame

FIXED = {"seed", "data.image_size"}


def run(run_id: str, trial_id: str, status: str, start: int, score: float | None, **hp: object) -> Run:
    info = RunInfo(
        run_id=run_id,
        experiment_id="1",
        user_id="u",
        status=status,
        start_time=start,
        end_time=start + 60_000,
        lifecycle_stage="active",
        run_name=f"trial-{int(trial_id):04d} <b>",
    )
    metrics = [Metric("best_val_auc", score, 0, 0), Metric("test_auc", 0.5, 0, 0)] if score is not None else []
    params = [Param("seed", "1"), Param("data.image_size", "64"), Param("tuner/epochs", "4")]
    params += [Param(k, str(v)) for k, v in hp.items()]
    return Run(info, RunData(metrics=metrics, params=params, tags=[RunTag("xraycnn.trial_id", trial_id)]))


def frame() -> tuple[pd.DataFrame, list[str]]:
    children = [
        run("a1", "0", "FAILED", 1, None, conv_blocks=1, filters_1=8, learning_rate=1e-3),
        run("a2", "0", "FINISHED", 2, 0.80, conv_blocks=1, filters_1=8, learning_rate=1e-3),  # a retry wins
        run("b1", "1", "FINISHED", 3, 0.90, conv_blocks=2, filters_1=8, filters_2=16, learning_rate=2e-2),
        run("c1", "2", "KILLED", 4, None, conv_blocks=2, filters_1=8, filters_2=32, learning_rate=1e-4),
        run("d1", "10", "FINISHED", 5, 0.85, conv_blocks=1, filters_1=8, learning_rate=3e-3),
    ]
    return trials_frame(children, FIXED, "val_auc", "max")


def test_one_row_per_trial_its_last_finished_attempt_best_first() -> None:
    trials, varying = frame()
    assert list(trials["trial_id"]) == ["1", "10", "0", "2"]  # by score, unfinished last
    assert list(trials["run_id"]) == ["b1", "d1", "a2", "c1"]
    assert list(trials["attempts"]) == [1, 1, 2, 1]
    assert trials["score"].iloc[-1] is None or np.isnan(trials["score"].iloc[-1])
    assert set(varying) == {"conv_blocks", "filters_2", "learning_rate"}  # filters_1 is the same everywhere
    assert "hp.seed" not in trials and "hp.tuner/epochs" not in trials and trials["epochs"].iloc[0] == 4


def test_one_rule_for_the_attempt_that_counts() -> None:
    """The rule trials.csv (jobs.trials) and the report both use: the last FINISHED attempt, else the latest."""
    attempts = [
        run("x1", "0", "FAILED", 1, None),
        run("x2", "0", "KILLED", 2, None),  # no attempt finished: the latest counts
        run("y1", "1", "KILLED", 3, None),
        run("y2", "1", "FINISHED", 4, 0.7),
        run("y3", "1", "FAILED", 5, None),  # a later failure does not undo a finished attempt
    ]
    counted = last_attempts(list(reversed(attempts)))  # whatever order the store returns them in
    assert {k: (r.info.run_id, n) for k, (r, n) in counted.items()} == {"0": ("x2", 2), "1": ("y2", 3)}


def test_axes_log_scale_and_unused_values() -> None:
    positions, ticks = _axis(pd.Series([1e-4, 1e-3, 1e-2]))
    np.testing.assert_allclose(positions, [0.0, 0.5, 1.0])  # log: a decade is a decade
    positions, ticks = _axis(pd.Series([16.0, None, 32.0]))
    assert positions[1] == 0.0 and min(positions[[0, 2]]) > 0  # unused sits below the values
    assert ("unused" in [t for _, t in ticks]) and positions[2] == 1.0
    positions, ticks = _axis(pd.Series(["relu", "gelu", "relu"]))
    assert [t for _, t in ticks] == ["gelu", "relu"] and list(positions) == [1.0, 0.0, 1.0]


def test_figures_draw_finished_trials_only() -> None:
    trials, varying = frame()
    fig = parallel_coordinates(trials, varying, "val_auc", "1")
    lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) == len(varying) + 1]
    assert len(lines) == 3
    assert max(lines, key=lambda line: line.get_linewidth()).get_color() == "#d62728"  # the best, in red
    over = objective_over_trials(trials, "val_auc", "max")
    trial_dots, best_so_far = over.axes[0].get_lines()
    assert list(trial_dots.get_xdata()) == [0, 1, 10]
    assert list(best_so_far.get_ydata()) == [0.80, 0.90, 0.90]
    assert "1 unfinished" in over.axes[0].get_title()


def test_table_is_escaped_sortable_and_marks_the_best() -> None:
    trials, varying = frame()
    parent = Run(RunInfo("p", "1", "u", "FINISHED", 0, 1, "active", run_name="search"), RunData())
    snapshot = SearchSnapshot("xraycnn-x", parent, "val_auc", "max", trials, varying, [], None)
    html = trials_table_html(snapshot)
    assert "<b>" not in html and "&lt;b&gt;" in html
    rows = re.findall(r'<tr class="(\w*)"', html)
    assert rows == ["best", "", "", "failed"]
    assert 'data-v="0.9"' in html and 'data-v=""' in html  # numbers sort by value, blanks last


@pytest.mark.parametrize(
    ("experiment", "part"),
    [
        ("xraycnn-default", "default"),
        ("/etc/cron.d", "_etc_cron.d"),
        ("xraycnn-../../outside", "_.._outside"),
        ("..", "experiment"),
    ],
)
def test_a_report_folder_never_leaves_the_reports_dir(tmp_path: Path, experiment: str, part: str) -> None:
    from xraycnn.report import report_folder

    folder = report_folder(tmp_path, experiment)
    assert folder == tmp_path / part and folder.resolve().parent == tmp_path.resolve()
