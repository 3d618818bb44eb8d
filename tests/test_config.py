from __future__ import annotations

from pathlib import Path

import pytest

from xraycnn.config import Choice, Fixed, FloatRange, IntRange, TunerConfig, load_experiment, parse_overrides
from xraycnn.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, text))
    message = str(info.value)
    assert "exp.toml" in message  # always names the file
    return message


def test_shipped_experiments_load() -> None:
    default = load_experiment(REPO / "experiments" / "default.toml")
    assert default.name == "default"
    assert default.config.tuner.algorithm == "random"  # measured against Hyperband: docs/lab/2026-11-27-anytime.md
    # ranked by calls that transfer, at a threshold that keeps the normals' calls under acquisition changes
    assert default.config.tuner.objective == "val_shift_auc" and default.config.tuner.direction == "max"
    assert default.config.evaluation.threshold == "shift_specificity"
    assert default.config.space.conv_blocks == Fixed(value=4)  # 3-block networks fell behind on val_shift_auc
    assert isinstance(default.config.space.learning_rate, FloatRange)
    assert default.config.space.learning_rate.sampling == "log"
    assert default.config.epochs_spec() == Fixed(value=15)  # every trial up to budget.max_epochs, early stopping
    assert default.config.training.learning_rate_schedule == "cosine"
    # 8 trials, those outside the best third after 2 or 5 epochs stopped there (docs/search.md)
    assert default.config.budget.max_trials == 8 and default.config.budget.rungs == (2, 5)
    assert default.config.budget.rung_factor == 3

    seed = load_experiment(REPO / "experiments" / "seed.toml").config
    # The published notebook's network.
    assert seed.data.image_size == 150
    assert seed.space.conv_blocks == Fixed(value=2)
    assert seed.space.filters == (Fixed(value=32), Fixed(value=64))
    assert seed.space.kernel_size == Fixed(value=5)
    assert seed.space.dropout == Fixed(value=0.5)
    assert seed.space.dense_units == Fixed(value=256)
    assert seed.space.learning_rate == Fixed(value=1e-3)
    assert seed.epochs_spec() == Fixed(value=35)
    assert seed.data.augmentation.zoom == Fixed(value=0.2)
    assert seed.data.augmentation.horizontal_flip == Fixed(value=True)
    assert seed.data.validation_split == 0.2


def test_empty_file_means_the_notebooks_network(tmp_path: Path) -> None:
    config = load_experiment(write(tmp_path, "")).config
    assert config.space.filters == (Fixed(value=32), Fixed(value=64))
    assert config.data.image_size == 150
    assert config.seed == 42


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_experiment(write(tmp_path, "seed = 3")).config
    with pytest.raises(Exception, match="frozen"):
        config.seed = 4  # type: ignore[misc]


def test_spec_forms(tmp_path: Path) -> None:
    text = """
[tuner]
algorithm = "random"
[budget]
max_trials = 4
max_epochs = 8
[space]
conv_blocks = { values = [1, 2, 3] }
filters = [{ values = [8, 16] }, 32, { min = 16, max = 64, step = 16 }]
dropout = { min = 0, max = 0.5, step = 0.1 }
learning_rate = { min = 1e-4, max = 1e-2, sampling = "log" }
epochs = { min = 2, max = 8 }
"""
    space = load_experiment(write(tmp_path, text)).config.space
    assert space.conv_blocks == Choice(values=(1, 2, 3))
    assert space.filters_for_block(0) == Choice(values=(8, 16))
    assert space.filters_for_block(1) == Fixed(value=32)
    assert space.filters_for_block(2) == IntRange(min=16, max=64, step=16)
    assert space.dropout == FloatRange(min=0.0, max=0.5, step=0.1)  # an int bound is fine for a float
    assert [name for name, _ in space.items()][-3:] == ["filters_1", "filters_2", "filters_3"]


def test_flat_settings_are_one_dict(tmp_path: Path) -> None:
    flat = load_experiment(write(tmp_path, "seed = 5\n[data]\nimage_size = 64")).config.flat()
    assert flat["seed"] == 5
    assert flat["data.image_size"] == 64
    assert flat["data.augmentation.zoom"] == 0.2
    assert flat["tuner.objective"] == "val_auc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed = [", "not valid TOML"),
        ("colour = 1", "colour: unknown key; expected one of: description, seed, data, space"),
        ("[space]\nbogus = 1", "space.bogus: unknown key; expected one of: conv_blocks, filters"),
        ("[data]\nimage_size = 'big'", "data.image_size: Input should be a valid integer (got 'big')"),
        ("[data]\nimage_size = 64.0", "data.image_size: Input should be a valid integer"),
        ("[space]\ndropout = 'high'", "space.dropout: value must be a number, got 'high'"),
        ("[space]\nkernel_size = { values = [] }", "space.kernel_size: 'values' must be a non-empty list"),
        (
            "[space]\nconv_blocks = { min = 3, max = 2 }",
            "space.conv_blocks: min (3) must be smaller than max (2)",
        ),
        ("[space]\nconv_blocks = { min = 2, max = 2 }", "min (2) must be smaller than max (2)"),
        ("[space]\ndropout = 1.5", "space.dropout: value 1.5 is out of bounds"),
        (
            "[space]\nkernel_size = [3, 5]",
            "space.kernel_size: a bare list is not a spec; write a choice as { values = [3, 5] }",
        ),
        (
            "[space]\nlearning_rate = { min = 0.0, max = 0.1, sampling = 'log' }",
            "space.learning_rate: min 0.0 is out of bounds",
        ),
        (
            "[space]\nbatch_size = { min = 8, max = 64, sampling = 'cubic' }",
            "sampling must be 'linear' or 'log'",
        ),
        ("[space]\nfilters = { values = [8, 8] }", "space.filters: 'values' has duplicates"),
        (
            "[space]\nconv_blocks = 3\nfilters = [8, 16]",
            "filters lists 2 block(s) but conv_blocks can reach 3",
        ),
        (
            "[tuner]\nalgorithm = 'grid'",
            "tuner.algorithm: Input should be 'hyperband', 'random' or 'bayesian'",
        ),
        ("[tuner]\nobjective = 'test_auc'", "tuner.objective: Input should be 'val_auc'"),
        ("[tuner]\nalgorithm = 'random'", "budget.max_trials is required by the random tuner"),
        ("[space]\nepochs = 5", "space.epochs: Hyperband owns the epochs"),
        (
            "[training]\nlearning_rate_schedule = 'cosine'",
            "training.learning_rate_schedule = 'cosine' decays over a trial's epochs, which Hyperband changes",
        ),
        ("[training]\nlearning_rate_schedule = 'step'", "Input should be 'constant' or 'cosine'"),
        (
            "[tuner]\nalgorithm = 'random'\n[budget]\nmax_trials = 2\nmax_epochs = 4\n[space]\nepochs = 9",
            "space.epochs reaches 9, above budget.max_epochs (4)",
        ),
        (
            "[data]\nimage_size = 16\n[space]\nconv_blocks = 6\nfilters = 8",
            "6 blocks halve a 16px image to nothing",
        ),
        ("seed = 0", "seed: Input should be greater than or equal to 1"),
        ("[data.preprocess]\nsharpen = true", "data.preprocess.sharpen: unknown key; expected one of: crop, equalize"),
        ("[data.augmentation]\nmixup = 0.2", "data.augmentation.mixup: unknown key; expected one of: zoom,"),
        ("[data.preprocess]\nequalize = 'hist'", "data.preprocess.equalize: 'hist' is not an option"),
        ("[data.preprocess]\ncrop = { values = [true, 1] }", "data.preprocess.crop: 1 is not an option"),
        ("[data.augmentation]\nrotate = 90", "data.augmentation.rotate: value 90 is out of bounds"),
        ("[space]\nhead = 'attention'", "space.head: 'attention' is not an option"),
        (
            "[tuner]\nmax_borders_only_auc = 0.4",
            "tuner.max_borders_only_auc: Input should be greater than or equal to 0.5",
        ),
        ("[tuner]\nmax_borders_only_auc = 1.2", "tuner.max_borders_only_auc: Input should be less than or equal to 1"),
        (
            "[data]\nimage_size = 20\n[data.preprocess]\ncrop = true",
            "data.preprocess.box: [0.1, 0.85, 0.12, 0.88] crops a 20px film to 15x16 pixels; at least 16",
        ),
        (
            "[data]\nimage_size = 64\n[data.preprocess]\ncrop = { values = [false, true] }\nbox = [0.4, 0.6, 0.1, 0.9]",
            "data.preprocess.box: [0.4, 0.6, 0.1, 0.9] crops a 64px film to 12x52 pixels",
        ),
        (
            "[data.preprocess]\nbox = [0.8, 0.2, 0.1, 0.9]",
            "data.preprocess: box [0.8, 0.2, 0.1, 0.9] is not [top, bottom",
        ),
        ("[registry]\nmodel_name = 'no spaces allowed'", "registry.model_name: String should match pattern"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_preprocessing_augmentation_architecture_and_gate(tmp_path: Path) -> None:
    text = """
[data]
image_size = 86
[data.preprocess]
crop = true
equalize = { values = ["global", "clahe"] }
standardize = true
[data.augmentation]
translate = { min = 0.0, max = 0.1 }
horizontal_flip = false
erase = 0.5
[space]
batch_norm = { values = [true, false] }
head = "gap"
[tuner]
max_borders_only_auc = 0.6
"""
    config = load_experiment(write(tmp_path, text)).config
    assert config.data.preprocess.crop == Fixed(value=True)
    assert config.data.preprocess.equalize == Choice(values=("global", "clahe"))
    assert config.data.augmentation.translate == FloatRange(min=0.0, max=0.1)
    assert config.data.augmentation.zoom == Fixed(value=0.2)  # the notebook's default stays
    assert config.space.batch_norm == Choice(values=(True, False)) and config.space.head == Fixed(value="gap")
    assert config.tuner.selection_metric == "val_gated_auc"
    assert config.tuner.gated(0.97, 0.61) == pytest.approx(0.97 - 100) and config.tuner.gated(0.9, 0.6) == 0.9
    verdict = config.tuner.verdict(0.97 - 100)
    assert verdict.objective == pytest.approx(0.97) and not verdict.borders_passed and verdict.shift_passed
    assert "ranks below every trial at or under it" in config.tuner.selection_rule()
    flat = config.flat()
    assert flat["data.preprocess.equalize"] == "global|clahe" and flat["data.augmentation.translate"] == "0..0.1"
    assert flat["data.preprocess.crop"] is True and flat["tuner.max_borders_only_auc"] == 0.6
    assert flat["data.preprocess.box"] == "0.1,0.85,0.12,0.88"


def test_a_dumped_config_reads_back_as_itself() -> None:
    for name in ("default", "robust", "seed"):
        config = load_experiment(REPO / "experiments" / f"{name}.toml").config
        assert type(config).model_validate(config.model_dump()) == config


def test_several_problems_are_listed_together(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[space]\nbogus = 1\n[budget]\nmax_trials = 'x'")
    assert "2 problems" in message
    assert "space.bogus: unknown key" in message
    assert "budget.max_trials: Input should be a valid integer" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "nope.toml")


def test_hash_follows_the_bytes(tmp_path: Path) -> None:
    a = load_experiment(write(tmp_path, "seed = 1", "a.toml"))
    b = load_experiment(write(tmp_path, "seed = 1 ", "b.toml"))
    assert a.sha256 != b.sha256 and a.config == b.config


def test_overrides_from_the_command_line(tmp_path: Path) -> None:
    pairs = parse_overrides(
        ["budget.max_trials=2", "data.preprocess.equalize=clahe", "space.filters=[8, 16]", "space.batch_norm=true"]
    )
    assert pairs == (
        ("budget.max_trials", 2),
        ("data.preprocess.equalize", "clahe"),
        ("space.filters", [8, 16]),
        ("space.batch_norm", True),
    )
    path = write(tmp_path, "seed = 3\n[budget]\nmax_trials = 9\n")
    plain, overridden = load_experiment(path), load_experiment(path, pairs)
    assert overridden.config.budget.max_trials == 2 and overridden.config.data.preprocess.equalize == Fixed(
        value="clahe"
    )
    assert overridden.config.space.filters == (Fixed(value=8), Fixed(value=16)) and overridden.config.seed == 3
    assert overridden.sha256 != plain.sha256  # another search: it must not resume the plain one
    assert parse_overrides(overridden.override_args()[1::2]) == pairs  # what a worker process is started with
    with pytest.raises(ConfigError, match=r"--set 'max_trials': expected KEY=VALUE"):
        parse_overrides(["max_trials"])
    with pytest.raises(
        ConfigError, match=r"exp.toml: budget.max_trials: Input should be greater than or equal to 1 .*\(from --set\)"
    ):
        load_experiment(path, parse_overrides(["budget.max_trials=0"]))
    with pytest.raises(ConfigError, match=r"--set seed.x: seed is a value, not a table"):
        load_experiment(path, parse_overrides(["seed.x=1"]))


def test_specs_answer_for_themselves() -> None:
    import keras_tuner as kt

    assert Fixed(value=3).bounds() == (3, 3) and Fixed(value=3).options() == [3] and Fixed(value=3).mean() == 3
    assert Choice(values=(5, 3)).bounds() == (3, 5) and Choice(values=(5, 3)).options() == [3, 5]
    assert Choice(values=("gap", "flatten")).options() == ["gap", "flatten"]
    assert IntRange(min=2, max=8, step=3).options() == [2, 5, 8] and IntRange(min=2, max=8).mean() == 5
    assert IntRange(min=1, max=4, step=2, sampling="log").options() == [1, 2, 3, 4]
    assert FloatRange(min=0.1, max=0.3).bounds() == (0.1, 0.3)
    with pytest.raises(TypeError):
        FloatRange(min=0.1, max=0.3).options()
    hp = kt.HyperParameters()
    assert Choice(values=(True, False)).declare(hp, "b") is True  # a Boolean, not Keras Tuner's 0 / 1
    assert Choice(values=(False,)).declare(hp, "f") is False and Fixed(value="gap").declare(hp, "h") == "gap"
    assert IntRange(min=2, max=8).declare(hp, "i") == 2 and FloatRange(min=0.1, max=0.3).declare(hp, "x") == 0.1
    assert {p.name: type(p).__name__ for p in hp.space} == {
        "b": "Boolean",
        "f": "Fixed",
        "h": "Fixed",
        "i": "Int",
        "x": "Float",
    }


def test_the_acquisition_guard_ranks_by_feasibility_then_objective() -> None:
    """Deb's rules: meeting the gate and the guard ranks above missing the guard, which ranks above missing the
    gate; among those that miss the guard, the nearer to it ranks first, whatever their objective."""
    tuner = TunerConfig(objective="val_auc", max_borders_only_auc=0.6, min_shift_specificity=0.85)
    epochs = {
        "passes, lower auc": (0.90, 0.5, 0.86),
        "passes, higher auc": (0.92, 0.5, 0.95),
        "misses the guard by 0.05": (0.99, 0.5, 0.80),
        "misses the guard by 0.25": (0.995, 0.5, 0.60),
        "over the gate": (0.99, 0.7, 0.99),
        "both": (0.999, 0.7, 0.10),
    }
    scores = {name: tuner.gated(*values) for name, values in epochs.items()}
    assert sorted(scores, key=scores.__getitem__, reverse=True) == [
        "passes, higher auc",
        "passes, lower auc",
        "misses the guard by 0.05",
        "misses the guard by 0.25",
        "over the gate",
        "both",
    ]
    for name, (auc, borders, specificity) in epochs.items():
        verdict = tuner.verdict(scores[name])
        assert verdict.borders_passed == (borders <= 0.6)
        assert verdict.shift_passed == (specificity >= 0.85)
        if verdict.shift_passed:
            assert verdict.objective == pytest.approx(auc)
        else:
            assert verdict.objective is None and verdict.shift_specificity == pytest.approx(specificity)
    loss = TunerConfig(objective="val_loss", min_shift_specificity=0.85)
    assert loss.selection_metric == "val_gated_loss"
    assert loss.gated(0.3, None, 0.9) < loss.gated(0.01, None, 0.84) < loss.gated(0.01, None, 0.5)
    assert loss.verdict(loss.gated(0.01, None, 0.5)).shift_specificity == pytest.approx(0.5)
    assert "keep their NORMAL call" in tuner.selection_rule()
    assert TunerConfig().selection_metric == "val_auc"


def test_an_objective_of_calls_that_transfer(tmp_path: Path) -> None:
    text = '[tuner]\nobjective = "val_shift_auc"\n[evaluation]\nthreshold = "shift_specificity"\n'
    config = load_experiment(write(tmp_path, text)).config
    assert config.tuner.direction == "max" and config.evaluation.target_shift_specificity == 0.88
    assert config.tuner.watches_acquisition and not config.tuner.guarded
    assert "against the NORMAL films changed" in config.tuner.selection_rule()
