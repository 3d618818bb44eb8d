"""Experiment files: TOML in, frozen and validated config objects out.

An experiment file names the data, the image size, the search space, the tuner, the objective, the budget
and the seed. Every table rejects unknown keys and wrong types; `load_experiment` turns all problems into
one `ConfigError` that names the file, each key and what is expected there.

A search-space entry is written in one of three ways:

    dropout = 0.5                                   # fixed
    kernel_size = { values = [3, 5] }               # a choice
    learning_rate = { min = 1e-4, max = 3e-3, sampling = "log" }   # a range (step optional)

`filters` is one spec for every conv block, or a list with one spec per block (`filters = [32, 64]`).
"""

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from xraycnn.errors import ConfigError
from xraycnn.regions import LUNG_BOX, box_pixels

Scalar = int | float | str | bool


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- search-space specs -------------------------------------------------------------------------------


class Fixed(_Frozen):
    value: Scalar

    def describe(self) -> Scalar:
        return self.value

    def bounds(self) -> tuple[float, float]:
        return self.value, self.value  # type: ignore[return-value]

    def mean(self) -> float:
        return float(self.value)

    def options(self) -> list[Scalar]:
        return [self.value]

    def declare(self, hp: Any, name: str) -> Scalar:
        """Declare `name` on Keras Tuner's `hp` and return its value for the current trial."""
        return hp.Fixed(name, self.value)


class Choice(_Frozen):
    values: tuple[Scalar, ...]

    def describe(self) -> str:
        return "|".join(str(v) for v in self.values)

    def bounds(self) -> tuple[float, float]:
        return min(self.values), max(self.values)  # type: ignore[type-var,return-value]

    def mean(self) -> float:
        return sum(self.values) / len(self.values)  # type: ignore[arg-type]

    def options(self) -> list[Scalar]:
        return sorted(self.values) if all(isinstance(v, int | float) for v in self.values) else list(self.values)

    def declare(self, hp: Any, name: str) -> Scalar:
        if all(isinstance(v, bool) for v in self.values):
            # Keras Tuner's Choice turns booleans into 0 and 1: its Boolean keeps them booleans
            if len(self.values) == 1:
                return hp.Fixed(name, self.values[0])
            return hp.Boolean(name, default=bool(self.values[0]))
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.values)
        return hp.Choice(name, list(self.values), ordered=numeric)


class IntRange(_Frozen):
    min: int
    max: int
    step: int = 1
    sampling: Literal["linear", "log"] = "linear"

    def describe(self) -> str:
        return f"{self.min}..{self.max}" + (" log" if self.sampling == "log" else "")

    def bounds(self) -> tuple[float, float]:
        return self.min, self.max

    def mean(self) -> float:
        return (self.min + self.max) / 2

    def options(self) -> list[Scalar]:
        """Every value it can take (Keras Tuner ignores the step of a log range)."""
        return list(range(self.min, self.max + 1, self.step if self.sampling == "linear" else 1))

    def declare(self, hp: Any, name: str) -> Scalar:
        return hp.Int(name, self.min, self.max, step=self.step, sampling=self.sampling)


class FloatRange(_Frozen):
    min: float
    max: float
    step: float | None = None
    sampling: Literal["linear", "log"] = "linear"

    def describe(self) -> str:
        return f"{self.min:g}..{self.max:g}" + (" log" if self.sampling == "log" else "")

    def bounds(self) -> tuple[float, float]:
        return self.min, self.max

    def mean(self) -> float:
        return (self.min + self.max) / 2

    def options(self) -> list[Scalar]:
        raise TypeError(f"a continuous range has no list of options: {self.describe()}")

    def declare(self, hp: Any, name: str) -> Scalar:
        return hp.Float(name, self.min, self.max, step=self.step, sampling=self.sampling)


Spec = Fixed | Choice | IntRange | FloatRange


@dataclass(frozen=True)
class _SpecParser:
    """Turns the raw TOML value of one search-space entry into a `Spec`, or says what was expected."""

    kind: type  # int or float
    low: float
    high: float
    low_inclusive: bool = True

    def expected(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        left = "[" if self.low_inclusive else "("
        return (
            f"{noun} in {left}{_fmt(self.low)}, {_fmt(self.high)}], a choice {{ values = [...] }}, "
            f"or a range {{ min = ..., max = ... }} (optional step, sampling = 'linear' | 'log')"
        )

    def scalar(self, raw: Any, what: str) -> int | float:
        ok = isinstance(raw, int) if self.kind is int else isinstance(raw, int | float)
        if isinstance(raw, bool) or not ok:
            raise ValueError(f"{what} must be {'an integer' if self.kind is int else 'a number'}, got {raw!r}")
        value = self.kind(raw)
        too_low = value < self.low if self.low_inclusive else value <= self.low
        if too_low or value > self.high or (isinstance(value, float) and not math.isfinite(value)):
            left = "[" if self.low_inclusive else "("
            raise ValueError(f"{what} {raw!r} is out of bounds; expected {left}{_fmt(self.low)}, {_fmt(self.high)}]")
        return value

    def __call__(self, raw: Any) -> Spec:
        if isinstance(raw, Fixed | Choice | IntRange | FloatRange):
            return raw
        if isinstance(raw, list):
            raise ValueError(f"a bare list is not a spec; write a choice as {{ values = {raw!r} }}")
        if isinstance(raw, dict) and set(raw) == {"value"}:  # a dumped config read back (model_dump)
            raw = raw["value"]
        if not isinstance(raw, dict):
            try:
                return Fixed(value=self.scalar(raw, "value"))
            except ValueError as exc:
                raise ValueError(f"{exc}; expected {self.expected()}") from None
        keys = set(raw)
        if "values" in keys:
            if keys != {"values"}:
                raise ValueError(f"a choice takes only 'values', got keys {sorted(keys)}")
            values = raw["values"]
            if not isinstance(values, list | tuple) or not values:
                raise ValueError("'values' must be a non-empty list")
            parsed = tuple(self.scalar(v, "each value") for v in values)
            if len(set(parsed)) != len(parsed):
                raise ValueError(f"'values' has duplicates: {values!r}")
            return Choice(values=parsed)
        unknown = keys - {"min", "max", "step", "sampling"}
        if unknown or not {"min", "max"} <= keys:
            raise ValueError(f"got keys {sorted(keys)}; expected {self.expected()}")
        lo, hi = self.scalar(raw["min"], "min"), self.scalar(raw["max"], "max")
        if lo >= hi:
            raise ValueError(
                f"min ({raw['min']!r}) must be smaller than max ({raw['max']!r}); for one value write it alone"
            )
        sampling = raw.get("sampling", "linear")
        if sampling not in ("linear", "log"):
            raise ValueError(f"sampling must be 'linear' or 'log', got {sampling!r}")
        if sampling == "log" and lo <= 0:
            raise ValueError("log sampling needs min > 0")
        step = raw.get("step")
        if step is not None:
            step = self.scalar(step, "step")
            if step <= 0 or step > hi - lo:
                raise ValueError(f"step {step!r} must be > 0 and no larger than max - min")
        if self.kind is int:
            return IntRange(min=int(lo), max=int(hi), step=int(step or 1), sampling=sampling)
        return FloatRange(min=float(lo), max=float(hi), step=None if step is None else float(step), sampling=sampling)


@dataclass(frozen=True)
class _OptionParser:
    """A searchable entry over named options (booleans or words): one option, or a choice of several."""

    options: tuple[Scalar, ...]

    def expected(self) -> str:
        shown = ", ".join(repr(o).lower() if isinstance(o, bool) else repr(o) for o in self.options)
        return f"one of {shown}, or a choice {{ values = [...] }} of them"

    def one(self, raw: Any) -> Scalar:
        # bool is an int in Python: compare types too, so `1` is not taken for `true`
        if not any(type(raw) is type(o) and raw == o for o in self.options):
            raise ValueError(f"{raw!r} is not an option; expected {self.expected()}")
        return raw

    def __call__(self, raw: Any) -> Spec:
        if isinstance(raw, Fixed | Choice):
            return raw
        if isinstance(raw, dict) and set(raw) == {"value"}:  # a dumped config read back (model_dump)
            raw = raw["value"]
        if isinstance(raw, dict):
            if set(raw) != {"values"} or not isinstance(raw["values"], list | tuple) or not raw["values"]:
                raise ValueError(f"got {raw!r}; expected {self.expected()}")
            values = tuple(self.one(v) for v in raw["values"])
            if len(set(values)) != len(values):
                raise ValueError(f"'values' has duplicates: {raw['values']!r}")
            return Choice(values=values)
        return Fixed(value=self.one(raw))


def _options(*options: Scalar) -> Any:
    return Annotated[Spec, BeforeValidator(_OptionParser(options))]


def _fmt(x: float) -> str:
    return "inf" if x == math.inf else f"{x:g}"


def _spec(kind: type, low: float, high: float, low_inclusive: bool = True) -> Any:
    return Annotated[Spec, BeforeValidator(_SpecParser(kind, low, high, low_inclusive))]


ConvBlocksSpec = _spec(int, 1, 6)
KernelSpec = _spec(int, 1, 15)
DropoutSpec = _spec(float, 0.0, 0.9)
UnitsSpec = _spec(int, 1, 8192)
LearningRateSpec = _spec(float, 0.0, 1.0, low_inclusive=False)
BatchSpec = _spec(int, 1, 4096)
EpochsSpec = _spec(int, 1, 10_000)
BoolSpec = _options(False, True)


_FILTERS = _SpecParser(int, 1, 1024)


def _parse_filters(raw: Any) -> Spec | tuple[Spec, ...]:
    if isinstance(raw, list | tuple):
        if not raw:
            raise ValueError("the per-block list of filters is empty")
        return tuple(_FILTERS(item) for item in raw)
    return _FILTERS(raw)


class SearchSpace(_Frozen):
    """The hyperparameters and their ranges. Defaults are the published notebook's network."""

    conv_blocks: ConvBlocksSpec = Fixed(value=2)
    filters: Annotated[Spec | tuple[Spec, ...], BeforeValidator(_parse_filters)] = (
        Fixed(value=32),
        Fixed(value=64),
    )
    kernel_size: KernelSpec = Fixed(value=5)
    dropout: DropoutSpec = Fixed(value=0.5)
    dense_units: UnitsSpec = Fixed(value=256)
    learning_rate: LearningRateSpec = Fixed(value=1e-3)
    batch_size: BatchSpec = Fixed(value=32)
    epochs: EpochsSpec | None = None
    # Conv -> BatchNorm -> ReLU in every block (the notebook has none)
    batch_norm: BoolSpec = Fixed(value=False)
    # after the conv blocks: "flatten" (the notebook's) or "gap", global average pooling, which makes the dense
    # layer see what each filter found anywhere on the film rather than where
    head: _options("flatten", "gap") = Fixed(value="flatten")
    # the first convolution's stride: 2 halves the side of everything after it, the costliest layers on a CPU;
    # not given, 1, and not a hyperparameter (so earlier experiments keep their trials' seeds)
    stem_stride: _spec(int, 1, 4) | None = None

    @property
    def max_conv_blocks(self) -> int:
        return int(self.conv_blocks.bounds()[1])

    def filters_for_block(self, block: int) -> Spec:
        """The spec of block `block` (0-based)."""
        return self.filters[block] if isinstance(self.filters, tuple) else self.filters

    def items(self) -> Iterator[tuple[str, Spec]]:
        """(name, spec) of every entry, one per conv block for filters; epochs and stem_stride only when given."""
        for name in (
            "conv_blocks",
            "kernel_size",
            "dropout",
            "dense_units",
            "learning_rate",
            "batch_size",
            "epochs",
            "batch_norm",
            "head",
            "stem_stride",
        ):
            spec = getattr(self, name)
            if spec is not None:
                yield name, spec
        for block in range(self.max_conv_blocks):
            yield f"filters_{block + 1}", self.filters_for_block(block)

    @model_validator(mode="after")
    def _filters_cover_blocks(self) -> "SearchSpace":
        if isinstance(self.filters, tuple) and len(self.filters) < self.max_conv_blocks:
            raise ValueError(
                f"filters lists {len(self.filters)} block(s) but conv_blocks can reach {self.max_conv_blocks}; "
                "give one spec per block, or one spec for all blocks"
            )
        return self


# --- the other tables ---------------------------------------------------------------------------------


class Augmentation(_Frozen):
    """Training-batch augmentation, in the input pipeline. Every entry is searchable; 0 (or false) turns it
    off. The defaults are the notebook's: zoom 0.2 and horizontal flip. The others imitate how films differ
    between hospitals and machines, so a network cannot lean on one hospital's framing, exposure or markers.

    `stage` says what is changed: "input" (the default), what the network sees, after the preprocessing (which
    is then computed once and cached); "film", the film itself, before the preprocessing (recomputed per batch),
    as another hospital's acquisition and processing would change it: noise or blur added before a histogram
    equalisation look different after it."""

    zoom: _spec(float, 0.0, 0.9) = Fixed(value=0.2)  # scale by [1-z, 1+z] about the centre
    horizontal_flip: BoolSpec = Fixed(value=True)
    translate: _spec(float, 0.0, 0.5) = Fixed(value=0.0)  # shift by up to this fraction of the side, each axis
    crop: _spec(float, 0.0, 0.9) = Fixed(value=0.0)  # a random window of [1-c, 1] of the side, resized back
    rotate: _spec(float, 0.0, 45.0) = Fixed(value=0.0)  # degrees, either way
    brightness: _spec(float, 0.0, 1.0) = Fixed(value=0.0)  # shift by up to this fraction of the image's range
    contrast: _spec(float, 0.0, 0.9) = Fixed(value=0.0)  # scale about the image's mean by [1-c, 1+c]
    gamma: _spec(float, 0.0, 2.0) = Fixed(value=0.0)  # gamma in [exp(-g), exp(g)] on the image's own range
    noise: _spec(float, 0.0, 1.0) = Fixed(value=0.0)  # Gaussian noise, sd up to this fraction of the image's sd
    blur: _spec(float, 0.0, 5.0) = Fixed(value=0.0)  # Gaussian blur, sigma up to this many pixels
    erase: _spec(float, 0.0, 1.0) = Fixed(value=0.0)  # chance of blanking one corner and one border strip
    sharpen: _spec(float, 0.0, 3.0) = Fixed(value=0.0)  # unsharp mask, amount up to this (radius 0.5-1.5 px)
    stage: Literal["input", "film"] = "input"  # what is changed: the network's input, or the film (see above)

    def items(self) -> Iterator[tuple[str, Spec]]:
        """The augmentations and their specs (not `stage`)."""
        for name in type(self).model_fields:
            if name != "stage":
                yield name, getattr(self, name)


class Preprocess(_Frozen):
    """Per-image preprocessing, done once when the data is decoded and carried by the registered model as its
    first layer, so every way of using the model applies exactly the same steps. In order: crop to `box`,
    histogram equalisation, masking outside `box`, standardisation. `crop`, `equalize`, `mask` and
    `standardize` are searchable (a value or { values = [...] })."""

    crop: BoolSpec = Fixed(value=False)  # keep only `box` (the network sees fewer pixels: raise image_size)
    equalize: _options("none", "global", "clahe") = Fixed(value="none")
    mask: BoolSpec = Fixed(value=False)  # black out everything outside `box`, keeping the film's geometry
    standardize: BoolSpec = Fixed(value=False)  # per image: zero mean, unit variance (instead of x / 255)
    # top, bottom, left, right: fractions of the film (a TOML list; not strict, so [0, 1, ...] is taken too)
    box: tuple[float, float, float, float] = Field(LUNG_BOX, strict=False)
    clahe_clip_limit: float = Field(2.0, gt=0.0, le=100.0)  # CLAHE: contrast limit, in multiples of a flat bin
    clahe_tiles: int = Field(8, ge=2, le=32)  # CLAHE: tiles per side

    @model_validator(mode="after")
    def _box_is_a_box(self) -> "Preprocess":
        top, bottom, left, right = self.box
        if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
            raise ValueError(
                f"box {list(self.box)} is not [top, bottom, left, right] with 0 <= top < bottom <= 1 and "
                "0 <= left < right <= 1 (fractions of the film's height and width)"
            )
        return self

    def items(self) -> Iterator[tuple[str, Spec]]:
        for name in ("crop", "equalize", "mask", "standardize"):
            yield name, getattr(self, name)


MIN_NETWORK_SIDE = 16  # a crop must leave the network at least this many pixels a side


class DataConfig(_Frozen):
    root: str | None = None  # dataset folder, relative to the experiment file; see data.discovery
    image_size: int = Field(150, ge=16, le=1024)  # the film, as decoded: the registered model's input
    color_mode: Literal["grayscale", "rgb"] = "grayscale"
    validation_split: float = Field(0.2, gt=0.0, lt=1.0)
    augmentation: Augmentation = Augmentation()
    preprocess: Preprocess = Preprocess()

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def network_side(self) -> int:
        """The shortest side of what the network sees: the film, or the smallest crop of it."""
        if True not in self.preprocess.crop.options():
            return self.image_size
        r0, r1, c0, c1 = box_pixels(self.preprocess.box, self.image_size, self.image_size)
        return min(r1 - r0, c1 - c0)

    @model_validator(mode="after")
    def _crop_leaves_pixels(self) -> "DataConfig":
        if True in self.preprocess.crop.options():
            r0, r1, c0, c1 = box_pixels(self.preprocess.box, self.image_size, self.image_size)
            if self.network_side < MIN_NETWORK_SIDE:
                raise ValueError(
                    f"preprocess.box: {list(self.preprocess.box)} crops a {self.image_size}px film to "
                    f"{r1 - r0}x{c1 - c0} pixels; at least {MIN_NETWORK_SIDE} a side are needed: enlarge the box "
                    "or raise data.image_size"
                )
        return self


# The objective is always measured on validation data: test metrics are reported, never selected on.
OBJECTIVE_DIRECTIONS: dict[str, Literal["max", "min"]] = {
    "val_auc": "max",
    "val_accuracy": "max",
    "val_precision": "max",
    "val_recall": "max",
    "val_loss": "min",
    # the AUC of the COVID-19 films as given against the NORMAL films changed as another hospital would acquire
    # them, under the worst change (evaluation.acquisition): how well a new hospital's normals are told apart
    "val_shift_auc": "max",
}
SHIFT_OBJECTIVE = "val_shift_auc"


GATE_PENALTY = 100.0  # a gated score is the objective moved this far the wrong way: below every passing one
# An epoch under the acquisition guard scores its worst-change specificity moved this far the wrong way: below
# every epoch that meets the guard, above every epoch over the shortcut gate, and ranked among its like by how
# near it comes to the guard (the feasibility rule of constrained search), not by its objective.
SHIFT_PENALTY = 40.0


@dataclass(frozen=True)
class Verdict:
    """What a selection score says: the objective (None when the score ranks by the guard instead), whether the
    shortcut gate and the acquisition guard passed, and the worst-change specificity where the guard failed."""

    objective: float | None
    borders_passed: bool
    shift_passed: bool
    shift_specificity: float | None = None

    @property
    def passed(self) -> bool:
        return self.borders_passed and self.shift_passed


class TunerConfig(_Frozen):
    algorithm: Literal["hyperband", "random", "bayesian"] = "hyperband"
    objective: Literal["val_auc", "val_accuracy", "val_precision", "val_recall", "val_loss", "val_shift_auc"] = (
        "val_auc"
    )
    # The shortcut gate: a trial whose validation AUC on films with the lungs blacked out (the borders alone)
    # is above this ranks below every trial under it, whatever its objective. None: no gate.
    max_borders_only_auc: float | None = Field(None, ge=0.5, le=1.0)
    # The acquisition guard: a trial whose NORMAL validation films, changed as another hospital would acquire
    # them (evaluation.acquisition), keep their NORMAL call at its threshold less often than this under the
    # worst change ranks below every trial that meets it. None: no guard.
    min_shift_specificity: float | None = Field(None, ge=0.0, le=1.0)

    @property
    def direction(self) -> Literal["max", "min"]:
        return OBJECTIVE_DIRECTIONS[self.objective]

    @property
    def guarded(self) -> bool:
        """Whether a gate or the guard moves the score the tuner ranks by away from the objective."""
        return self.max_borders_only_auc is not None or self.min_shift_specificity is not None

    @property
    def watches_acquisition(self) -> bool:
        """Whether every epoch needs the calls under acquisition changes (for the guard or the objective)."""
        return self.min_shift_specificity is not None or self.objective == SHIFT_OBJECTIVE

    @property
    def selection_metric(self) -> str:
        """What the tuner ranks trials and epochs by: the objective, or with a gate or guard its gated twin."""
        if not self.guarded:
            return self.objective
        return f"val_gated_{self.objective.removeprefix('val_')}"

    def gated(
        self, value: float, borders_only_auc: float | None = None, shift_specificity: float | None = None
    ) -> float:
        """The selection score of an epoch. Meeting the gate and the guard: the objective. Under the acquisition
        guard: its worst-change specificity moved SHIFT_PENALTY the wrong way (ranked by how near it comes).
        Over the shortcut gate: moved GATE_PENALTY further (below every epoch under the gate)."""
        sign = 1.0 if self.direction == "max" else -1.0
        score = value
        if self.min_shift_specificity is not None:
            specificity = 0.0 if shift_specificity is None else shift_specificity
            if specificity < self.min_shift_specificity:
                score = specificity - SHIFT_PENALTY if sign > 0 else SHIFT_PENALTY + 1.0 - specificity
        gate = self.max_borders_only_auc
        if gate is not None and (borders_only_auc is None or borders_only_auc > gate):
            score -= sign * GATE_PENALTY
        return score

    def verdict(self, score: float) -> Verdict:
        """What is behind a selection score (the inverse of `gated`)."""
        sign = 1.0 if self.direction == "max" else -1.0
        rest = score
        borders_passed = True
        if self.max_borders_only_auc is not None and sign * rest < -GATE_PENALTY / 2:
            borders_passed, rest = False, rest + sign * GATE_PENALTY
        if self.min_shift_specificity is not None and sign * rest < -SHIFT_PENALTY / 2:
            specificity = rest + SHIFT_PENALTY if sign > 0 else SHIFT_PENALTY + 1.0 - rest
            return Verdict(None, borders_passed, False, specificity)
        return Verdict(rest, borders_passed, True)

    def selection_rule(self) -> str:
        """The rule in words, printed at the start of a search and stored on its parent run."""
        rule = f"trials ranked by {self.objective} ({self.direction}) on validation"
        if self.objective == SHIFT_OBJECTIVE:
            rule += (
                " (the AUC of the COVID-19 films as given against the NORMAL films changed as another hospital would "
                "acquire them, under the worst change)"
            )
        if not self.guarded:
            return rule + "; no shortcut gate, no acquisition guard"
        parts = []
        if self.min_shift_specificity is not None:
            parts.append(
                f"guarded: a trial whose NORMAL films, changed as another hospital would acquire them, keep their "
                f"NORMAL call at its threshold (Youden's J) less often than {self.min_shift_specificity:g} under the "
                f"worst change ranks below every trial that meets it, whatever its {self.objective}; such trials "
                "rank among themselves by that worst-change specificity"
            )
        if self.max_borders_only_auc is not None:
            parts.append(
                f"gated: a trial whose validation AUC with the lung box blacked out (borders only) is above "
                f"{self.max_borders_only_auc:g} ranks below every trial at or under it, whatever its {self.objective}"
            )
        return f"{rule}, " + "; ".join(parts) + "; within a trial, the best epoch by the same rule is kept"


class BudgetConfig(_Frozen):
    max_trials: int | None = Field(None, ge=1)  # required for random and bayesian; a cap for hyperband
    max_epochs: int = Field(10, ge=1, le=10_000)  # Hyperband's max_epochs; the default epochs otherwise
    hyperband_factor: int = Field(3, ge=2)
    hyperband_iterations: int = Field(1, ge=1)
    # Random and Bayesian search: after each of these epoch counts, a trial goes on only if it is among the best
    # 1/rung_factor of the trials that reached the same count (tuning/rungs.py); each trial's schedule still
    # spans max_epochs
    rungs: tuple[int, ...] = Field((), strict=False)  # a TOML list
    rung_factor: int = Field(3, ge=2)

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, rungs: tuple[int, ...]) -> tuple[int, ...]:
        if any(r < 1 for r in rungs) or list(rungs) != sorted(set(rungs)):
            raise ValueError(f"rungs are epoch counts, at least 1 and increasing, got {list(rungs)}")
        return rungs


class TrainingConfig(_Frozen):
    early_stopping_patience: int = Field(3, ge=1)
    precision: Literal["auto", "float32", "mixed_bfloat16"] = "auto"
    # Training steps per call into TensorFlow's graph: fewer Python round trips per epoch, the same weights
    # and per-epoch metrics as one step at a time (tests/model/test_steps_per_execution.py).
    steps_per_execution: int = Field(8, ge=1, le=1000)
    # "cosine": each epoch's rate is the trial's learning_rate times a half cosine over the trial's epochs
    # (model/schedules.py); "constant": the learning_rate throughout.
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"


class EvaluationConfig(_Frozen):
    """How a final model is judged: the decision threshold chosen on validation, and the confidence intervals."""

    # Youden's J; Youden's J under the worst acquisition change; the lowest threshold whose NORMAL films keep
    # their call under every acquisition change at least target_shift_specificity of the time; or the highest
    # threshold meeting target_sensitivity (evaluation.threshold)
    threshold: Literal["youden", "shift_youden", "shift_specificity", "sensitivity"] = "youden"
    target_shift_specificity: float = Field(0.88, gt=0, lt=1)  # with threshold = "shift_specificity"
    target_sensitivity: float = Field(0.95, gt=0, lt=1)  # with threshold = "sensitivity"
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000)  # stratified, seeded with the experiment's seed
    # The input guard (model.input_guard) refuses this share of the validation films (as given and under each
    # acquisition change) and what lies further from the training films; 0: no guard
    input_guard_reject_share: float = Field(0.005, ge=0, le=0.1)


class RegistryConfig(_Frozen):
    model_name: str = Field("xraycnn", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ExperimentConfig(_Frozen):
    """What an experiment file says."""

    description: str = ""
    seed: int = Field(42, ge=1, lt=2**31)  # Keras Tuner treats 0 as "no seed"
    data: DataConfig = DataConfig()
    space: SearchSpace = SearchSpace()
    tuner: TunerConfig = TunerConfig()
    budget: BudgetConfig = BudgetConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        if self.tuner.algorithm == "hyperband" and self.space.epochs is not None:
            raise ValueError(
                "space.epochs: Hyperband owns the epochs of each trial; remove space.epochs and set "
                "budget.max_epochs, or choose tuner.algorithm = 'random' or 'bayesian'"
            )
        if self.tuner.algorithm == "hyperband" and self.training.learning_rate_schedule != "constant":
            raise ValueError(
                f"training.learning_rate_schedule = '{self.training.learning_rate_schedule}' decays over a trial's "
                "epochs, which Hyperband changes from rung to rung; use 'constant', or tuner.algorithm = 'random' "
                "or 'bayesian'"
            )
        if self.tuner.algorithm == "hyperband" and self.budget.rungs:
            raise ValueError(
                "budget.rungs: Hyperband stops trials by its own brackets; remove budget.rungs, or choose "
                "tuner.algorithm = 'random' or 'bayesian'"
            )
        if self.budget.rungs and self.budget.rungs[-1] >= self.budget.max_epochs:
            raise ValueError(
                f"budget.rungs: {self.budget.rungs[-1]} is not below budget.max_epochs ({self.budget.max_epochs}), "
                "so no trial could stop there; use smaller epoch counts"
            )
        if self.tuner.algorithm != "hyperband" and self.budget.max_trials is None:
            raise ValueError(f"budget.max_trials is required by the {self.tuner.algorithm} tuner")
        if self.space.epochs is not None and self.space.epochs.bounds()[1] > self.budget.max_epochs:
            raise ValueError(
                f"space.epochs reaches {self.space.epochs.bounds()[1]:g}, above budget.max_epochs "
                f"({self.budget.max_epochs}); raise the budget or lower the range"
            )
        side = self.data.network_side
        if side // 2**self.space.max_conv_blocks < 1:
            raise ValueError(
                f"space.conv_blocks: {self.space.max_conv_blocks} blocks halve a {side}px image "
                "to nothing; use fewer blocks or a larger data.image_size"
            )
        return self

    def epochs_spec(self) -> Spec | None:
        """The searchable epochs, or None where Hyperband owns them."""
        if self.tuner.algorithm == "hyperband":
            return None
        return self.space.epochs or Fixed(value=self.budget.max_epochs)

    def flat(self) -> dict[str, Scalar]:
        """Every setting outside [space] as one flat dict (`data.image_size`, ...), the way runs log them;
        a searchable entry as its value when fixed, else in words (`0..0.2`, `none|global`)."""
        out: dict[str, Scalar] = {}
        for section in ("data", "tuner", "budget", "training", "evaluation", "registry"):
            out.update(_flatten(getattr(self, section), section))
        out["seed"] = self.seed
        return out


def _flatten(model: BaseModel, prefix: str) -> Iterator[tuple[str, Scalar]]:
    for key in type(model).model_fields:
        value = getattr(model, key)
        if isinstance(value, Fixed | Choice | IntRange | FloatRange):
            yield f"{prefix}.{key}", value.describe()
        elif isinstance(value, BaseModel):
            yield from _flatten(value, f"{prefix}.{key}")
        elif isinstance(value, tuple):
            yield f"{prefix}.{key}", ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        elif value is not None:
            yield f"{prefix}.{key}", value


@dataclass(frozen=True)
class Experiment:
    """An experiment file, loaded: its name (the file's stem), where it is, its hash (of the file and any
    overrides) and its config; `overrides` are the command line's `--set KEY=VALUE`, applied over the file."""

    name: str
    path: Path
    sha256: str
    config: ExperimentConfig
    overrides: tuple[tuple[str, Any], ...] = ()

    def override_args(self) -> list[str]:
        """The overrides as command-line arguments again (`--set key=value` ...), for a process started anew."""
        return [arg for key, value in self.overrides for arg in ("--set", f"{key}={_toml_value(value)}")]

    def resolve(self, relative: str) -> Path:
        """A path written in the file, taken relative to the file."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()


def parse_overrides(items: Iterable[str]) -> tuple[tuple[str, Any], ...]:
    """`KEY=VALUE` pairs from the command line: a dotted key of the experiment file and a TOML value
    (`budget.max_trials=2`, `space.filters=[8, 16]`, `data.preprocess.equalize=clahe`: a bare word is a
    string). Raises `ConfigError` for a pair that is not one."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. budget.max_trials=2")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word: a string
        out.append((key, value))
    return tuple(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _apply_overrides(path: Path, raw: dict[str, Any], overrides: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    for key, value in overrides:
        table = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: --set {key}: {'.'.join(parts[: depth + 1])} is a value, not a table")
        table[parts[-1]] = value
    return raw


def load_experiment(path: str | Path, overrides: tuple[tuple[str, Any], ...] = ()) -> Experiment:
    """Read and validate an experiment file, with `overrides` (see `parse_overrides`) set over it; raise
    `ConfigError` naming every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file; see experiments/ for examples (default.toml, seed.toml)")
    raw_bytes = path.read_bytes()
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw = _apply_overrides(path, raw, overrides)
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc, {key for key, _ in overrides})) from None
    digest = hashlib.sha256(raw_bytes)
    if overrides:  # a search with other overrides is another search: it must not resume this one
        digest.update(json.dumps(overrides, sort_keys=True, default=str).encode())
    return Experiment(path.stem, path.resolve(), digest.hexdigest(), config, overrides)


def format_validation_error(path: Path, exc: ValidationError, overridden: set[str] | None = None) -> str:
    problems = [_describe(err) for err in exc.errors(include_url=False)]
    if overridden:  # say which problems come from the command line, not the file
        problems = [p + (" (from --set)" if p.split(":", 1)[0] in overridden else "") for p in problems]
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    return f"{path}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _describe(err: Any) -> str:
    loc = tuple(str(part) for part in err["loc"] if not str(part).startswith("function-"))
    # Union members show up in the location (e.g. 'tuple[...]'); the user only wrote the key path.
    loc = tuple(part for part in loc if not (part.startswith(("tuple[", "Fixed", "Choice", "IntRange", "FloatRange"))))
    msg = str(err["msg"]).removeprefix("Value error, ")
    # A check across keys names the key it is about ("space.epochs: ..."): report it under that key.
    named = re.match(r"^([a-z_]+(?:\.[a-z_]+)+): (.*)$", msg, re.DOTALL)
    if err["type"] == "value_error" and named:
        loc, msg = (*loc, named.group(1)), named.group(2)
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    if err["type"] not in ("value_error", "assertion_error", "missing"):
        msg = f"{msg} (got {err.get('input')!r})"
    return f"{key}: {msg}"


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    model: Any = ExperimentConfig
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    fields: Callable[[], Any] | None = getattr(model, "model_fields", None)
    return list(fields) if fields else []
