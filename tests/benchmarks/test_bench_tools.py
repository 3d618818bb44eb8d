"""The bench's own arithmetic: the anytime curves and the sorting of a profiled search's samples."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # their sibling `machine` module
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_so_far_is_a_running_maximum_on_the_grid() -> None:
    anytime = _load("anytime")
    points = [(3.0, 0.80), (7.0, 0.85), (9.0, 0.83), (12.0, 0.90), (200.0, 0.99)]
    assert anytime.best_so_far(points, [0.0, 5.0, 10.0, 15.0]) == [None, 0.80, 0.85, 0.90]


def test_summary_averages_only_where_every_seed_has_a_value() -> None:
    anytime = _load("anytime")
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
    profile = _load("search_profile")
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
    phases = profile.classify(raw)
    assert phases["training steps"] == 100
    assert phases["graph tracing (train, validation, augmentation)"] == 20
    assert phases["garbage collection before each trial"] == 7
    assert sum(phases.values()) == 127


def test_the_anytime_variants_set_their_algorithm_and_budget_in_full() -> None:
    from xraycnn.config import load_experiment, parse_overrides
    from xraycnn.tuning.tuners import planned_budget

    anytime = _load("anytime")
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
    against = _load("search_against")
    before = (  # 6c4fade's line (a test AUC in the table before it must not be taken)
        "│ 1 │ 17 │ 0.9776 │ AUC 0.5000 [0.1, 0.2] │\nRegistered xraycnn v1 as champion (no champion yet). Test at "
        "threshold 0.196: accuracy 0.9219 [0.9064, 0.9359], sensitivity 0.9309 [0.9118, 0.9485], specificity\n"
        "0.9129 [0.8922, 0.9335]; AUC 0.9762 [0.9692, 0.9820]; at 0.5: accuracy 0.8873 [0.8710, 0.9020]"
    )
    assert against.champion_auc(before) == {"value": 0.9762, "ci_low": 0.9692, "ci_high": 0.982}
    assert against.champion_auc("Search already complete; trial 1 is registered") is None
    experiment = tmp_path / "default.toml"
    experiment.write_text('[training]\nprecision = "auto"           # mixed_bfloat16 where ...\n')
    against.pin_float32(experiment)
    assert experiment.read_text() == '[training]\nprecision = "float32"           # mixed_bfloat16 where ...\n'
    experiment.write_text("[training]\n")
    try:
        against.pin_float32(experiment)
    except SystemExit as exc:
        assert "no `precision = ...` line" in str(exc)
    else:
        raise AssertionError("a file without a precision line was accepted")


def test_the_cuts_part_averages_each_side_of_its_comparisons() -> None:
    bench = _load("bench")
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
