"""The cosine schedule: each epoch trains at the trial's rate times a half cosine over its epochs."""

from __future__ import annotations

import math

import pytest

from xraycnn.model.schedules import CosineDecayPerEpoch, cosine_factor


def test_the_factor_falls_from_one_along_a_half_cosine() -> None:
    factors = [cosine_factor(e, 9) for e in range(9)]
    assert factors[0] == 1.0
    assert factors == sorted(factors, reverse=True)
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 9)))  # the last epoch still learns
    assert cosine_factor(3, 6) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one epoch"):
        CosineDecayPerEpoch(0)
