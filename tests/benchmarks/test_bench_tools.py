"""The bench's own arithmetic (the anytime curves, the sorting of a profiled search's samples, each part's figures)
and its registry of parts."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.parts import CORE, PARTS, STUDIES
from benchmarks.studies import anytime, search_against, search_profile

from benchmarks import __main__ as bench


def test_best_so_far_is_a_running_maximum_on_the_grid() -> None:
    points = [(3.0, 0.80), (7.0, 0.85), (9.0, 0.83), (12.0, 0.90), (200.0, 0.99)]
    assert anytime.best_so_far(points, [0.0, 5.0, 10.0, 15.0]) == [None, 0.80, 0.85, 0.90]


def test_summary_averages_only_where_every_seed_has_a_value() -> None:
    runs = [
        {
            "points": [(1.0, 0.8)],
            "champion_test_auc": 0.9,
            "stopped_at_budget": False,
            "epochs_logged": 3,
            "trials_started": 1,
        },
        {
            "points": [(6.0, 0.6)],
            "champion_test_auc": None,
            "stopped_at_budget": True,
            "epochs_logged": 1,
            "trials_started": 1,
        },
    ]
    summary = anytime.summarise({"random": runs}, [0.0, 5.0, 10.0])["random"]
    assert summary["mean"] == [None, None, 0.7]
    assert summary["finished_inside_budget"] == [True, False]


def test_profile_samples_go_to_the_first_matching_phase_of_the_main_thread(tmp_path: Path) -> None:
    main = "_run_module_as_main (<frozen runpy>:198);_tuner (xraycnn/jobs/search.py:158)"
    fit = f"{main};TensorFlowTrainer.fit (keras/src/backend/tensorflow/trainer.py:390)"
    raw = tmp_path / "samples.txt"
    raw.write_text(
        "\n".join(
            [
                f"{fit};Function._call (x.py:1) 100",
                f"{fit};trace_function (tracing_compilation.py:144) 20",  # a step's first call: tracing
                f"{main};_try_build (keras_tuner/src/engine/tuner.py:161) 7",
                "Thread._bootstrap (threading.py:1002);BackgroundWriter._work (background.py:1) 50",  # not main
            ]
        )
        + "\n"
    )
    phases = search_profile.classify(raw)
    assert phases["training steps"] == 100
    assert phases["graph tracing (train, validation, augmentation)"] == 20
    assert phases["garbage collection before each trial"] == 7
    assert sum(phases.values()) == 127


def test_the_anytime_variants_set_their_algorithm_and_budget_in_full() -> None:
    from xraycnn.config import load_experiment, parse_overrides
    from xraycnn.tuning.tuners import planned_budget

    schedules = {}
    for name, (_, overrides) in anytime.VARIANTS.items():
        config = load_experiment(anytime.EXPERIMENT, parse_overrides(overrides)).config
        schedules[name] = (config.tuner.algorithm, planned_budget(config))
        assert config.training.learning_rate_schedule == "constant"  # as they were measured
    assert schedules == {
        "hyperband": ("hyperband", (8, 36)),  # 6 networks x 3 epochs, the best 2 on to 12
        "hyperband_rung2": ("hyperband", (8, 24)),
        "random": ("random", (100, 1200)),  # stopped by the wall budget
        "bayesian": ("bayesian", (100, 1200)),
    }


def test_the_side_by_side_reads_the_champion_both_revisions_print(tmp_path: Path) -> None:
    before = (  # 6c4fade's line (a test AUC in the table before it must not be taken)
        "│ 1 │ 17 │ 0.9776 │ AUC 0.5000 [0.1, 0.2] │\nRegistered xraycnn v1 as champion (no champion yet). Test at "
        "threshold 0.196: accuracy 0.9219 [0.9064, 0.9359], sensitivity 0.9309 [0.9118, 0.9485], specificity\n"
        "0.9129 [0.8922, 0.9335]; AUC 0.9762 [0.9692, 0.9820]; at 0.5: accuracy 0.8873 [0.8710, 0.9020]"
    )
    assert search_against.champion_auc(before) == {"value": 0.9762, "ci_low": 0.9692, "ci_high": 0.982}
    assert search_against.champion_auc("Search already complete; trial 1 is registered") is None
    experiment = tmp_path / "default.toml"
    experiment.write_text('[training]\nprecision = "auto"           # mixed_bfloat16 where ...\n')
    search_against.pin_float32(experiment)
    assert experiment.read_text() == '[training]\nprecision = "float32"           # mixed_bfloat16 where ...\n'
    experiment.write_text("[training]\n")
    try:
        search_against.pin_float32(experiment)
    except SystemExit as exc:
        assert "no `precision = ...` line" in str(exc)
    else:
        raise AssertionError("a file without a precision line was accepted")


def test_the_cuts_part_averages_each_side_of_its_comparisons() -> None:
    cuts = {
        "epoch_seconds": {"per_epoch": [4.0, 3.0, 5.0], "per_trial": [3.0, 3.0, 3.0]},
        "gamma_cpu_seconds_per_epoch_of_films": {"pow": 0.12, "exp_log": 0.03},
        "gradcam_seconds": {"eager": 2.0, "graph": 0.7},
    }
    figures = bench.summarise({"cuts": cuts})
    assert figures["cuts_epoch_seconds_iterator_per_epoch"] == 4.0
    assert figures["cuts_epoch_seconds_iterator_per_trial"] == 3.0
    assert (figures["cuts_gamma_cpu_seconds_pow"], figures["cuts_gamma_cpu_seconds_exp_log"]) == (0.12, 0.03)
    assert (figures["cuts_gradcam_seconds_eager"], figures["cuts_gradcam_seconds_graph"]) == (2.0, 0.7)


def test_every_part_measures_summarises_and_prints_and_the_core_runs_by_default() -> None:
    for name, part in PARTS.items():
        assert callable(part.module.measure) and callable(part.module.summarise) and callable(part.module.rows), name
        assert part.summary, f"{name} says what it measures in its docstring"
    assert set(CORE) <= set(PARTS) and set(STUDIES) <= set(PARTS) and not set(CORE) & set(STUDIES)
    parse = bench._parser().parse_args
    assert bench.chosen_parts(parse([])) == ["training", "efficiency", "serving", "memory"]
    assert "cuts" not in bench.chosen_parts(parse(["--all"])) and len(bench.chosen_parts(parse(["--all"]))) == 11
    assert bench.chosen_parts(parse(["--only", "cuts", "--only", "decode"])) == ["decode", "cuts"]
    with pytest.raises(SystemExit):
        parse(["--only", "nosuch"])


def test_a_part_of_several_processes_plans_one_per_row() -> None:
    options = bench._parser().parse_args(["--training-rows", "notebook", "ceiling", "--memory-trials", "2"])
    assert PARTS["training"].children(options) == [("notebook", ["notebook"]), ("ceiling", ["ceiling"])]
    assert PARTS["memory"].children(options) == [(None, ["2"])]
    assert PARTS["decode"].children(options) == [(None, [])]


# Written before the augmentation part timed the input pipeline alone: today's part cannot read its rows.
OLDER_FORMAT = {"bench-2026-11-27T144831Z-amd-epyc-avx512bf16.json": "augmentation"}


def test_the_figures_of_every_saved_run_are_made_again_from_its_results() -> None:
    """Every `make bench` JSON in benchmarks/results is read by today's parts: the same figures from the same
    results (the parts were one file when they were written)."""
    import json

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    saved_runs = sorted(results.glob("bench-*.json"))
    assert len(saved_runs) > 10
    for path in saved_runs:
        saved = json.loads(path.read_text())
        older = OLDER_FORMAT.get(path.name)
        if older:
            with pytest.raises(KeyError):
                PARTS[older].summarise(saved[older])
            saved.pop(older)
        again = bench.summarise(saved)
        expected = saved["figures"] if not older else {k: v for k, v in saved["figures"].items() if k in again}
        assert again.keys() == expected.keys(), path.name
        assert again == pytest.approx(expected), path.name
