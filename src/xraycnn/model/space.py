"""How a trial's choices are told apart at a glance (run names, the console); the specs of the experiment file
declare themselves on Keras Tuner's hyperparameters (config: `Fixed.declare`, `Choice.declare`, ...)."""

from __future__ import annotations


def choice_tokens(values: dict[str, object]) -> list[str]:
    """Short words for a trial's preprocessing and architecture choices, for run names and the console:
    `crop`, `eq-global`, `eq-clahe`, `mask`, `std`, `bn`, `gap`, `s2` (a stem of stride 2; nothing for the
    notebook's defaults)."""
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
    if values.get("stem_stride", 1) != 1:
        tokens.append(f"s{values['stem_stride']}")
    return tokens
