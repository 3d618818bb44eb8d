"""The MLflow Model Registry: log the best model, register a version, and promote it only if it is better.

A new version gets the alias `champion` if it beats the current champion on the objective (the same
validation metric the search selected on), otherwise `challenger`. Moving the alias is the last step, so a
failure while logging or registering leaves the previous champion where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from xraycnn.errors import ModelNotFoundError
from xraycnn.tracking.runs import TAG_PREFIX

CHAMPION = "champion"
CHALLENGER = "challenger"
OBJECTIVE_TAG = f"{TAG_PREFIX}objective"
OBJECTIVE_VALUE_TAG = f"{TAG_PREFIX}objective_value"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME/VERSION
    previous_champion: str | None  # version
    previous_value: float | None
    reason: str


def signature_for(input_shape: tuple[int, int, int]) -> ModelSignature:
    """float32 images (n, size, size, channels), values 0-255 -> float32 P(COVID19) (n, 1)."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1))]),
    )


def current_champion(client: MlflowClient, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _beats(new: float, old: float, direction: str) -> bool:
    return new > old if direction == "max" else new < old


def decide_alias(champion: Any | None, objective: str, value: float, direction: str) -> tuple[str, str]:
    """(alias, why) for a new version scoring `value` on `objective`."""
    if champion is None:
        return CHAMPION, "no champion yet"
    old_objective = champion.tags.get(OBJECTIVE_TAG)
    old_raw = champion.tags.get(OBJECTIVE_VALUE_TAG)
    if old_objective != objective or old_raw is None:
        return CHALLENGER, (
            f"champion v{champion.version} was selected on {old_objective or 'an unknown objective'}, not {objective}; "
            "compare them and set the alias by hand if this one should serve"
        )
    old = float(old_raw)
    if _beats(value, old, direction):
        return CHAMPION, f"{objective} {value:.4f} beats champion v{champion.version} ({old:.4f})"
    return CHALLENGER, f"{objective} {value:.4f} does not beat champion v{champion.version} ({old:.4f})"


def serving_requirements() -> list[str]:
    """What loading the model needs, pinned to what trained it. MLflow would infer the same list by loading
    the model in a subprocess, which costs ~12 s per logged model."""
    import tensorflow as tf

    return [
        f"mlflow=={mlflow.__version__}",
        f"keras=={keras.__version__}",
        f"numpy=={np.__version__}",
        f"tensorflow=={tf.__version__}",
    ]


def log_and_register(
    model: keras.Model,
    *,
    model_name: str,
    objective: str,
    objective_value: float,
    direction: str,
    tags: dict[str, Any],
    description: str,
) -> Registration:
    """Log `model` to the active run, register it under `model_name` and set its alias (last)."""
    client = MlflowClient()
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    info = mlflow.keras.log_model(
        model,  # type: ignore[arg-type]
        name=MODEL_ARTIFACT,
        signature=signature_for(input_shape),
        pip_requirements=serving_requirements(),
    )
    version_tags = {
        **{k: str(v) for k, v in tags.items()},
        OBJECTIVE_TAG: objective,
        OBJECTIVE_VALUE_TAG: repr(float(objective_value)),
    }
    version = mlflow.register_model(info.model_uri, model_name, tags=version_tags)
    client.update_model_version(model_name, version.version, description=description)
    champion = current_champion(client, model_name)
    alias, reason = decide_alias(champion, objective, objective_value, direction)
    client.set_registered_model_alias(model_name, alias, version.version)
    return Registration(
        name=model_name,
        version=str(version.version),
        alias=alias,
        model_uri=f"models:/{model_name}/{version.version}",
        previous_champion=None if champion is None else str(champion.version),
        previous_value=None if champion is None else float(champion.tags.get(OBJECTIVE_VALUE_TAG, "nan")),
        reason=reason,
    )


def registered_summary(client: MlflowClient) -> str:
    """'xraycnn (champion=v3, challenger=v4; versions 1-4), ...' for error messages."""
    models = client.search_registered_models()
    if not models:
        return "no models are registered in this store yet (run `make search`)"
    parts = []
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((m.aliases or {}).items()))
        versions = [int(v.version) for v in client.search_model_versions(f"name = '{m.name}'")]
        span = f"versions {min(versions)}-{max(versions)}" if versions else "no versions"
        parts.append(f"{m.name} ({aliases + '; ' if aliases else ''}{span})")
    return "registered: " + ", ".join(parts)


def load_keras_model(model_uri: str) -> keras.Model:
    """Load a logged or registered Keras model, or raise `ModelNotFoundError` listing what is registered."""
    try:
        return mlflow.keras.load_model(model_uri)
    except MlflowException as exc:
        client = MlflowClient()
        raise ModelNotFoundError(
            f"cannot load {model_uri!r}: {exc.message.splitlines()[0]}. {registered_summary(client)}; "
            "use models:/NAME@ALIAS or models:/NAME/VERSION"
        ) from None
