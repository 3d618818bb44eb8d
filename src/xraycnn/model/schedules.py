"""Learning-rate schedules over a trial's epochs.

A constant rate needs its last epochs to settle: the default search's networks reached their best
validation AUC at epoch 8-10 of 12. Decayed along a half cosine to zero over the trial's own epochs, the
same networks settle by the last one, so fewer epochs reach the same score (docs/speed.md).
"""

from __future__ import annotations

import math
from typing import Any

import keras


def cosine_factor(epoch: int, epochs: int) -> float:
    """The share of the base rate used in `epoch` (0-based) of `epochs`: 1 in the first, near 0 in the last."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


class CosineDecayPerEpoch(keras.callbacks.Callback):
    """Sets the optimizer's rate at the start of every epoch to the compiled rate times `cosine_factor`.

    Per epoch, not per step, so that it holds for any batch size and `steps_per_execution`. The compiled
    rate (the trial's `learning_rate`) is read once when training begins."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        if epochs < 1:
            raise ValueError(f"a cosine schedule needs at least one epoch, got {epochs}")
        self.epochs = epochs
        self.base: float | None = None

    def on_train_begin(self, logs: Any = None) -> None:
        if self.base is None:
            self.base = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        assert self.base is not None
        self.model.optimizer.learning_rate = self.base * cosine_factor(epoch, self.epochs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if logs is not None:  # as Keras' own schedulers do: the run's per-epoch metrics show the rate it trained at
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
