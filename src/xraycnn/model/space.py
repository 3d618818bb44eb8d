"""Search-space specs from the experiment file, declared as Keras Tuner hyperparameters."""

from __future__ import annotations

import keras_tuner as kt

from xraycnn.config import Choice, Fixed, FloatRange, IntRange, Spec


def declare(hp: kt.HyperParameters, name: str, spec: Spec) -> int | float | str | bool:
    """Declare `name` on `hp` as `spec` says and return its value for the current trial."""
    if isinstance(spec, Fixed):
        return hp.Fixed(name, spec.value)
    if isinstance(spec, Choice) and all(isinstance(v, bool) for v in spec.values):
        # Keras Tuner's Choice turns booleans into 0 and 1: its Boolean keeps them booleans
        if len(set(spec.values)) == 1:
            return hp.Fixed(name, spec.values[0])
        return hp.Boolean(name, default=bool(spec.values[0]))
    if isinstance(spec, Choice):
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in spec.values)
        return hp.Choice(name, list(spec.values), ordered=numeric)
    if isinstance(spec, IntRange):
        return hp.Int(name, spec.min, spec.max, step=spec.step, sampling=spec.sampling)
    if isinstance(spec, FloatRange):
        return hp.Float(name, spec.min, spec.max, step=spec.step, sampling=spec.sampling)
    raise TypeError(f"not a search-space spec: {spec!r}")


def possible_values(spec: Spec) -> list[int]:
    """Every value an integer spec can take (used for conv_blocks, to scope the per-block filters)."""
    if isinstance(spec, Fixed):
        return [int(spec.value)]
    if isinstance(spec, Choice):
        return sorted(int(v) for v in spec.values)
    if isinstance(spec, IntRange) and spec.sampling == "linear":
        return list(range(spec.min, spec.max + 1, spec.step))
    if isinstance(spec, IntRange):
        return list(range(spec.min, spec.max + 1))
    raise TypeError(f"not an integer spec: {spec!r}")


def choice_tokens(values: dict[str, object]) -> list[str]:
    """Short words for a trial's preprocessing and architecture choices, for run names and the console:
    `crop`, `eq-global`, `eq-clahe`, `mask`, `std`, `bn`, `gap` (nothing for the notebook's defaults)."""
    tokens = []
    if values.get("preprocess_crop") is True:
        tokens.append("crop")
    if values.get("preprocess_equalize") not in (None, "none"):
        tokens.append(f"eq-{values['preprocess_equalize']}")
    if values.get("preprocess_mask") is True:
        tokens.append("mask")
    if values.get("preprocess_standardize") is True:
        tokens.append("std")
    if values.get("batch_norm") is True:
        tokens.append("bn")
    if values.get("head") == "gap":
        tokens.append("gap")
    return tokens
