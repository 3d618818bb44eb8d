"""Search-space specs from the experiment file, declared as Keras Tuner hyperparameters."""

from __future__ import annotations

import keras_tuner as kt

from xraycnn.config import Choice, Fixed, FloatRange, IntRange, Spec


def declare(hp: kt.HyperParameters, name: str, spec: Spec) -> int | float | str | bool:
    """Declare `name` on `hp` as `spec` says and return its value for the current trial."""
    if isinstance(spec, Fixed):
        return hp.Fixed(name, spec.value)
    if isinstance(spec, Choice):
        return hp.Choice(name, list(spec.values), ordered=all(isinstance(v, int | float) for v in spec.values))
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
