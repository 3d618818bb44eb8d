"""`training.steps_per_execution` (default 8) changes how often Python calls into the graph, nothing else."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from xraycnn.config import TrainingConfig
from xraycnn.model.layers import FusedBatchNormalization


def _train(steps_per_execution: int) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            FusedBatchNormalization(momentum=0.9),
            keras.layers.Activation("relu"),
            keras.layers.Dropout(0.3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
        steps_per_execution=steps_per_execution,
    )
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (100, 12, 12, 1)).astype("float32"), rng.integers(0, 2, (100, 1)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 7 batches: the last group is partial
    history = model.fit(batches, epochs=2, verbose=0, validation_data=batches, shuffle=False)
    return model.get_weights(), history.history


def test_the_default_trains_the_same_weights_and_metrics_as_one_step_at_a_time() -> None:
    default = TrainingConfig().steps_per_execution
    assert default > 1
    one, grouped = _train(1), _train(default)
    for a, b in zip(one[0], grouped[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert one[1] == grouped[1]
