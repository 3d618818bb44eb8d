"""Logs a registered model as one MLflow model with two flavours: `keras` (the network, for Keras users:
`mlflow.keras.load_model`) and `python_function` (image bytes in: `serving.model.ImageServingModel`, logged
as code, not a pickle, for `mlflow.pyfunc.load_model` and MLflow's model server). One `.keras` file serves
both.

Used as the `flavor` of `mlflow.models.Model.log`, the way MLflow's own flavours are logged, so the logged
model, its run link and the registry work as for any MLflow model.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import keras
import mlflow
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME

from xraycnn.serving.model import KERAS_ARTIFACT, model_config, serving_signature

ARTIFACTS_DIR = "artifacts"  # where mlflow.pyfunc.save_model puts a PythonModel's artifacts
KERAS_FILE = "model.keras"  # the name the keras flavour's loader expects inside its data folder
ENTRY_FILE = "pyfunc_entry.py"  # the pyfunc flavour's code


def serves_images(mlmodel: Model) -> bool:
    """Whether a logged model has this pyfunc flavour (versions registered before it have Keras' own)."""
    pyfunc = mlmodel.flavors.get("python_function", {})
    return Path(str(pyfunc.get("model_code_path", ""))).name == ENTRY_FILE and "input_shape" in (mlmodel.metadata or {})


def save_model(
    keras_model: keras.Model,
    path: str,
    *,
    threshold: float,
    threshold_rule: str,
    mlflow_model: Model | None = None,
    pip_requirements: list[str] | None = None,
) -> None:
    """Write the model to `path`: the pyfunc flavour with the network as its artifact, then the keras flavour
    pointing at that same file."""
    mlflow_model = mlflow_model or Model()
    with tempfile.TemporaryDirectory() as tmp:
        network = Path(tmp) / KERAS_FILE
        keras_model.save(network)
        with warnings.catch_warnings():  # no input example, by choice: MLflow would load and run the model to check it
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            mlflow.pyfunc.save_model(
                path,
                python_model=str(Path(__file__).with_name(ENTRY_FILE)),
                artifacts={KERAS_ARTIFACT: str(network)},
                model_config=model_config(threshold, threshold_rule),
                signature=serving_signature(),
                mlflow_model=mlflow_model,
                pip_requirements=pip_requirements,
            )
    # mlflow.keras's loader reads <data>/model.keras when <data> is a folder
    mlflow_model.add_flavor(
        "keras",
        data=ARTIFACTS_DIR,
        keras_version=keras.__version__,
        keras_backend=keras.backend.backend(),
        save_exported_model=False,
    )
    mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))


def log_model(keras_model: keras.Model, name: str, **kwargs: Any) -> Any:
    """Log to the active run (as `mlflow.keras.log_model` does); returns MLflow's ModelInfo. `kwargs`: those of
    `save_model`, and `metadata`, which `Model.log` writes into the MLmodel file itself."""
    return Model.log(None, name=name, flavor=sys.modules[__name__], keras_model=keras_model, **kwargs)
