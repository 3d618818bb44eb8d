"""Trial run names: short, ordered, and telling trials apart in the UI's run list."""

from __future__ import annotations

import pytest

from xraycnn.tracking.trial_tracker import run_name


@pytest.mark.parametrize(
    ("trial_id", "values", "expected"),
    [
        (
            "7",
            {
                "conv_blocks": 2,
                "filters_1": 32,
                "filters_2": 64,
                "filters_3": 128,
                "dropout": 0.3,
                "learning_rate": 1e-3,
            },
            "trial-0007 f32-64 d0.3 lr1e-3",
        ),
        (
            "12",
            {"conv_blocks": 1, "filters_1": 8, "dropout": 0.1, "learning_rate": 0.0012345},
            "trial-0012 f8 d0.1 lr1.2e-3",
        ),
        (
            "0013",
            {"conv_blocks": 1, "filters_1": 8, "dropout": 0.5, "learning_rate": 0.05, "tuner/trial_id": "0003"},
            "trial-0013 f8 d0.5 lr0.05 from-0003",
        ),
        ("ab", {"learning_rate": 3e-4}, "trial-ab lr3e-4"),
    ],
)
def test_run_name(trial_id: str, values: dict, expected: str) -> None:
    assert run_name(trial_id, values) == expected
