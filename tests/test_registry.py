from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pytest

from xraycnn.errors import ModelNotFoundError
from xraycnn.registry import (
    CHALLENGER,
    CHAMPION,
    OBJECTIVE_TAG,
    OBJECTIVE_VALUE_TAG,
    decide_alias,
    load_keras_model,
    log_and_register,
)
from xraycnn.tracking.store import resolve_store


def version(v: str, objective: str | None, value: float | None) -> SimpleNamespace:
    tags = {} if objective is None else {OBJECTIVE_TAG: objective, OBJECTIVE_VALUE_TAG: repr(value)}
    return SimpleNamespace(version=v, tags=tags)


def test_alias_rules() -> None:
    assert decide_alias(None, "val_auc", 0.9, "max")[0] == CHAMPION
    assert decide_alias(version("1", "val_auc", 0.9), "val_auc", 0.95, "max")[0] == CHAMPION
    assert (
        decide_alias(version("1", "val_auc", 0.9), "val_auc", 0.9, "max")[0] == CHALLENGER
    )  # a tie keeps the champion
    assert decide_alias(version("1", "val_auc", 0.9), "val_auc", 0.8, "max")[0] == CHALLENGER
    assert decide_alias(version("1", "val_loss", 0.3), "val_loss", 0.2, "min")[0] == CHAMPION
    alias, why = decide_alias(version("1", "val_loss", 0.3), "val_auc", 0.99, "max")
    assert alias == CHALLENGER and "selected on val_loss" in why


def tiny_model(bias: float) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.layers[-1].set_weights([np.zeros((64, 1)), np.array([bias])])
    return model


def register(bias: float, value: float):
    with mlflow.start_run():
        return log_and_register(
            tiny_model(bias),
            model_name="m",
            objective="val_auc",
            objective_value=value,
            direction="max",
            tags={"xraycnn.trial_id": "1"},
            description="test",
        )


def test_champion_moves_only_to_a_better_version(store_uri: str) -> None:
    resolve_store(store_uri)
    first = register(0.0, 0.90)
    assert (first.version, first.alias) == ("1", CHAMPION)
    worse = register(1.0, 0.85)
    assert (worse.version, worse.alias, worse.previous_champion) == ("2", CHALLENGER, "1")
    better = register(2.0, 0.95)
    assert (better.version, better.alias) == ("3", CHAMPION)
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("m", CHAMPION).version) == "3"
    assert str(client.get_model_version_by_alias("m", CHALLENGER).version) == "2"
    x = np.zeros((1, 8, 8, 1), np.float32)
    assert float(load_keras_model("models:/m@champion").predict(x, verbose=0)[0, 0]) == pytest.approx(
        1 / (1 + np.exp(-2))
    )
    requirements = Path(mlflow.artifacts.download_artifacts(f"{better.model_uri}/requirements.txt")).read_text()
    assert f"keras=={keras.__version__}" in requirements.split() and "tensorflow==" in requirements
    pyfunc = mlflow.pyfunc.load_model("models:/m@challenger")
    assert float(np.asarray(pyfunc.predict(x)).ravel()[0]) == pytest.approx(1 / (1 + np.exp(-1)))


def test_missing_model_lists_what_is_registered(store_uri: str) -> None:
    resolve_store(store_uri)
    with pytest.raises(ModelNotFoundError, match="no models are registered"):
        load_keras_model("models:/nope@champion")
    register(0.0, 0.9)
    with pytest.raises(ModelNotFoundError, match=r"registered: m \(champion=v1; versions 1-1\)"):
        load_keras_model("models:/m@staging")
