from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from xraycnn.errors import ModelNotFoundError, RegistryError, UnsafeModelError
from xraycnn.registry import (
    BORDERS_ONLY_TAG,
    CHALLENGER,
    CHAMPION,
    GATE_LIMIT_TAG,
    OBJECTIVE_TAG,
    OBJECTIVE_VALUE_TAG,
    SHIFT_GUARD_TAG,
    SHIFT_SPECIFICITY_TAG,
    THRESHOLD_TAG,
    Selection,
    decide_alias,
    describe_model,
    load_keras_model,
    load_keras_model_with_card,
    log_and_register,
)
from xraycnn.serving.flavor import serves_images
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


def gated_version(v: str, value: float, borders_only: float | None, gate: float | None = None) -> SimpleNamespace:
    tags = {OBJECTIVE_TAG: "val_auc", OBJECTIVE_VALUE_TAG: repr(value)}
    if borders_only is not None:
        tags[BORDERS_ONLY_TAG] = repr(borders_only)
    if gate is not None:
        tags[GATE_LIMIT_TAG] = repr(gate)
    return SimpleNamespace(version=v, tags=tags)


def test_the_shortcut_gate_comes_before_the_objective() -> None:
    over = gated_version("1", 0.98, 0.83)
    under = gated_version("2", 0.90, 0.52, gate=0.6)
    # a better val_auc over the gate does not take the alias from a champion under it
    alias, why = decide_alias(under, "val_auc", 0.99, "max", borders_only=0.8, gate=0.6, versions=[over, under])
    assert alias == CHALLENGER and "does not meet the shortcut gate 0.6 while v2" in why
    # nor from any other version under the gate, even when the champion is over it
    alias, _ = decide_alias(over, "val_auc", 0.99, "max", borders_only=0.8, gate=0.6, versions=[over, under])
    assert alias == CHALLENGER
    # a version under the gate takes it from a champion over it, whatever their val_auc
    alias, why = decide_alias(over, "val_auc", 0.85, "max", borders_only=0.55, gate=0.6, versions=[over])
    assert alias == CHAMPION and "champion v1 (0.830) does not" in why
    # a version registered before the audit counts as over the gate
    assert decide_alias(version("1", "val_auc", 0.99), "val_auc", 0.8, "max", borders_only=0.5, gate=0.6)[0] == CHAMPION
    # both under: the objective decides; the champion's own gate applies when the new search has none
    assert decide_alias(under, "val_auc", 0.95, "max", borders_only=0.58, versions=[under])[0] == CHAMPION
    assert decide_alias(under, "val_auc", 0.99, "max", borders_only=0.7, versions=[under])[0] == CHALLENGER
    # both over, nothing under: the objective decides
    assert decide_alias(over, "val_auc", 0.99, "max", borders_only=0.7, gate=0.6, versions=[over])[0] == CHAMPION


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests log to MLflow's Default experiment, whose artifacts MLflow puts in ./mlruns of the working
    directory when it creates the store: here, not in the checkout."""
    monkeypatch.chdir(tmp_path)


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
            selection=Selection(value),
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
    # the pyfunc flavour takes image bytes and answers with the call at the model's threshold (0.5 here)
    pyfunc = mlflow.pyfunc.load_model("models:/m@challenger")
    png = io.BytesIO()
    Image.new("L", (32, 32)).save(png, format="PNG")
    answer = pyfunc.predict(pd.DataFrame({"image": [png.getvalue()]}))
    assert answer.loc[0, "probability_covid19"] == pytest.approx(1 / (1 + np.exp(-1)))
    assert (answer.loc[0, "call"], answer.loc[0, "threshold"]) == ("COVID19", 0.5)


def test_reading_a_model_writes_nothing_into_the_store(store_uri: str) -> None:
    register(-2.0, 0.80)
    artifacts = Path.cwd()  # the store and the Default experiment's artifacts (./mlruns), both in this test's folder
    before = sorted((p.relative_to(artifacts), p.stat().st_mtime_ns) for p in artifacts.rglob("*") if p.is_file())
    describe_model("models:/m@champion")
    load_keras_model_with_card("models:/m/1")
    after = sorted((p.relative_to(artifacts), p.stat().st_mtime_ns) for p in artifacts.rglob("*") if p.is_file())
    assert [p for p, _ in after if p.name == "registered_model_meta"] == []
    assert [(p, t) for p, t in after if not p.name.startswith("mlflow.db")] == [
        (p, t) for p, t in before if not p.name.startswith("mlflow.db")
    ]


def test_missing_model_lists_what_is_registered(store_uri: str) -> None:
    resolve_store(store_uri)
    with pytest.raises(ModelNotFoundError, match="no models are registered"):
        load_keras_model("models:/nope@champion")
    register(0.0, 0.9)
    with pytest.raises(ModelNotFoundError, match=r"registered: m \(champion=v1; versions 1-1\)"):
        load_keras_model("models:/m@staging")


def champion_output(x: np.ndarray) -> float:
    return float(load_keras_model("models:/m@champion").predict(x, verbose=0)[0, 0])


@pytest.mark.parametrize(
    ("target", "step"),
    [
        ("xraycnn.serving.flavor.log_model", "logging the model of m"),
        ("mlflow.register_model", "registering m"),
        ("mlflow.tracking.MlflowClient.update_model_version", "finishing m v2"),
        ("mlflow.tracking.MlflowClient.set_registered_model_alias", "finishing m v2"),
    ],
)
def test_a_failed_registration_leaves_the_champion_untouched(
    store_uri: str, monkeypatch: pytest.MonkeyPatch, target: str, step: str
) -> None:
    resolve_store(store_uri)
    register(0.0, 0.90)
    x = np.zeros((1, 8, 8, 1), np.float32)
    before = champion_output(x)

    def unreachable(*args, **kwargs):
        raise MlflowException("connection refused by the tracking store")

    with monkeypatch.context() as patch:
        patch.setattr(target, unreachable)
        with pytest.raises(RegistryError) as error:
            register(5.0, 0.99)  # better: it would have become champion
    message = str(error.value)
    assert message.startswith(f"{step} failed (MlflowException: connection refused by the tracking store)")
    assert "the champion, m v1, is untouched" in message and "run the same command again" in message
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("m", CHAMPION).version) == "1"
    assert champion_output(x) == before
    # a version whose registration did not finish is withdrawn, not left without an alias or description
    assert [str(v.version) for v in client.search_model_versions("name = 'm'")] == ["1"]
    # and once the store is back, the same call promotes as usual
    assert register(5.0, 0.99).alias == CHAMPION


def test_models_are_saved_as_keras_files(store_uri: str) -> None:
    resolve_store(store_uri)
    first = register(0.0, 0.9)
    files = {
        Path(f.path).name
        for f in mlflow.MlflowClient().list_artifacts(mlflow.MlflowClient().get_model_version("m", "1").run_id, "model")
    }
    assert first.version == "1" and files >= {"MLmodel", "data", "requirements.txt"}
    assert not any(name.endswith(".py") for name in files)  # data only: the installed package loads it
    local = Path(mlflow.artifacts.download_artifacts("models:/m@champion"))
    # one .keras file behind both flavours: keras for Keras users, python_function (image bytes) for serving
    assert [p.name for p in local.rglob("*.keras")] == ["model.keras"]
    mlmodel = mlflow.models.Model.load(local / "MLmodel")
    assert mlmodel.flavors["keras"]["data"] == "data/network" and serves_images(mlmodel)
    pyfunc = mlmodel.flavors["python_function"]
    assert pyfunc["loader_module"] == "xraycnn.serving.loader" and "model_code_path" not in pyfunc
    # no path of the machine that logged it
    lines = (local / "MLmodel").read_text().splitlines()
    assert [line for line in lines if "/" + "tmp" in line or "file:" in line] == []
    assert "xraycnn==0.1.0" in (local / "requirements.txt").read_text().split()


def test_a_model_that_would_run_code_is_refused(store_uri: str) -> None:
    resolve_store(store_uri)
    # A Lambda layer carries Python bytecode in the model file: loading it unsafely would run it.
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Lambda(lambda t: t * 2.0),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    with mlflow.start_run():
        info = mlflow.keras.log_model(model, name="model")
    mlflow.register_model(info.model_uri, "lambda")
    for uri in ("models:/lambda/1", info.model_uri):
        with pytest.raises(UnsafeModelError, match="asks to run code of its own"):
            load_keras_model(uri)


def test_the_threshold_travels_with_the_model(store_uri: str) -> None:
    resolve_store(store_uri)
    without = register(0.0, 0.9)
    with mlflow.start_run():
        carried = log_and_register(
            tiny_model(1.0),
            model_name="m",
            objective="val_auc",
            selection=Selection(0.95),
            direction="max",
            tags={THRESHOLD_TAG: "0.37"},
            description="test",
            metadata={"threshold": 0.37, "threshold_rule": "youden on validation"},
        )
    card = describe_model(f"models:/m/{carried.version}")
    assert (card.threshold, card.threshold_rule, card.name, card.version) == (0.37, "youden on validation", "m", "2")
    assert card.model_id and card.model_id.startswith("m-")  # its logged model, to link evaluations to
    model, same = load_keras_model_with_card("models:/m@champion")
    assert same.version == card.version and same.threshold == 0.37 and model.output_shape == (None, 1)
    old = describe_model(f"models:/m/{without.version}")  # registered before thresholds: none, 0.5 is used
    assert old.threshold is None and old.version == "1"
    logged = describe_model(f"runs:/{mlflow.MlflowClient().get_model_version('m', '2').run_id}/model")
    assert logged.threshold == 0.37 and logged.version is None  # read from the model's own metadata


def test_a_model_with_the_project_s_batch_norm_loads_in_a_fresh_process(store_uri: str, tmp_path: Path) -> None:
    """`xraycnn predict` (a new process, nothing imported but the CLI) loads a network with the project's
    own layers: the registry registers them, not the caller."""
    import subprocess

    from tests.tiny_search import XRAYCNN
    from xraycnn.model.layers import FusedBatchNormalization

    resolve_store(store_uri)
    network = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, use_bias=False),
            FusedBatchNormalization(momentum=0.9),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    with mlflow.start_run():
        log_and_register(
            network,
            model_name="bn",
            objective="val_auc",
            selection=Selection(0.9),
            direction="max",
            tags={},
            description="test",
        )
    image = tmp_path / "film.png"
    Image.new("L", (32, 32), 120).save(image)
    result = subprocess.run(
        [XRAYCNN, "predict", "--model", "models:/bn@champion", str(image)],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": store_uri},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "film.png" in result.stdout


def guarded_version(v: str, value: float, specificity: float | None, guard: float | None = None) -> SimpleNamespace:
    tags = {OBJECTIVE_TAG: "val_auc", OBJECTIVE_VALUE_TAG: repr(value)}
    if specificity is not None:
        tags[SHIFT_SPECIFICITY_TAG] = repr(specificity)
    if guard is not None:
        tags[SHIFT_GUARD_TAG] = repr(guard)
    return SimpleNamespace(version=v, tags=tags)


def test_a_higher_val_auc_never_buys_the_alias_with_calls_that_move_at_another_hospital() -> None:
    """The issue's case: v2's val_auc 0.948 beat v1's 0.931, and v2 was the worse model outside."""
    v1 = guarded_version("1", 0.931, 0.90, guard=0.85)
    # over the guard, better val_auc, but lower worst-change specificity than the champion: challenger
    alias, why = decide_alias(v1, "val_auc", 0.948, "max", versions=[v1], shift_specificity=0.87, shift_guard=0.85)
    assert alias == CHALLENGER and "lower than the champion's (0.900)" in why
    # under the guard while v1 meets it: challenger, whatever its val_auc
    alias, why = decide_alias(v1, "val_auc", 0.99, "max", versions=[v1], shift_specificity=0.70, shift_guard=0.85)
    assert alias == CHALLENGER and "does not meet the acquisition guard 0.85 while v1" in why
    # better on both: champion; the champion's guard applies when the new version's search had none
    assert decide_alias(v1, "val_auc", 0.95, "max", versions=[v1], shift_specificity=0.91)[0] == CHAMPION
    assert decide_alias(v1, "val_auc", 0.95, "max", versions=[v1], shift_specificity=0.80)[0] == CHALLENGER
    # meeting the guard takes the alias from a champion under it (or registered before it), whatever the val_auc
    old = guarded_version("1", 0.97, None)
    alias, why = decide_alias(old, "val_auc", 0.90, "max", versions=[old], shift_specificity=0.9, shift_guard=0.85)
    assert alias == CHAMPION and "does not" in why
    # a version without the figure never replaces a champion that has it
    assert decide_alias(v1, "val_auc", 0.99, "max", versions=[v1])[0] == CHALLENGER
