"""Logs a registered model as one MLflow model with two flavours: `keras` (the network, stock Keras, for Keras
users: `mlflow.keras.load_model`, no import of xraycnn needed) and `python_function` (image bytes in:
`serving.model.ImageModel`, for `mlflow.pyfunc.load_model` and MLflow's model server, loaded by the installed
package's `serving.loader`, so the artifact holds no code). One `.keras` file serves both; the requirements
name xraycnn at its version.

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

from xraycnn.model.input_guard import GUARD_FILE, InputGuard
from xraycnn.serving import loader
from xraycnn.serving.model import model_config, serving_signature

NETWORK_DIR = "network"  # the data folder: data/network/model.keras
LEGACY_ENTRY_FILE = "pyfunc_entry.py"  # the code of versions logged as "models from code", before `loader`


def serves_images(mlmodel: Model) -> bool:
    """Whether a logged model has this pyfunc flavour (versions registered before it have Keras' own)."""
    pyfunc = mlmodel.flavors.get("python_function", {})
    by_loader = pyfunc.get("loader_module") == loader.__name__
    by_code = Path(str(pyfunc.get("model_code_path", ""))).name == LEGACY_ENTRY_FILE
    return (by_loader or by_code) and "input_shape" in (mlmodel.metadata or {})


def save_model(
    keras_model: keras.Model,
    path: str,
    *,
    threshold: float,
    threshold_rule: str,
    mlflow_model: Model | None = None,
    pip_requirements: list[str] | None = None,
    input_guard: InputGuard | None = None,
) -> None:
    """Write the model to `path`: the network (and its input guard, as data beside it) as the pyfunc flavour's
    data, then the keras flavour pointing at that same file."""
    mlflow_model = mlflow_model or Model()
    with tempfile.TemporaryDirectory() as tmp:
        network = Path(tmp) / NETWORK_DIR
        network.mkdir()
        keras_model.save(network / loader.KERAS_FILE)
        if input_guard is not None:
            input_guard.save(network / GUARD_FILE)
        with warnings.catch_warnings():  # no input example, by choice: MLflow would load and run the model to check it
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            mlflow.pyfunc.save_model(
                path,
                loader_module=loader.__name__,
                data_path=str(network),
                model_config=model_config(threshold, threshold_rule),
                signature=serving_signature(),
                mlflow_model=mlflow_model,
                pip_requirements=pip_requirements,
            )
    data = mlflow_model.flavors["python_function"]["data"]
    # mlflow.keras's loader reads <data>/model.keras when <data> is a folder
    mlflow_model.add_flavor(
        "keras",
        data=data,
        keras_version=keras.__version__,
        keras_backend=keras.backend.backend(),
        save_exported_model=False,
    )
    # MLflow records `artifact_path` as the logging machine's absolute artifact URI; loading never reads it, and
    # a copied model would carry a path of the machine that logged it. Left out of the file, kept on the object
    # (MLflow's ModelInfo reads it after this returns).
    kept, mlflow_model.artifact_path = mlflow_model.artifact_path, None
    try:
        mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))
    finally:
        mlflow_model.artifact_path = kept


def log_model(keras_model: keras.Model, name: str, **kwargs: Any) -> Any:
    """Log to the active run (as `mlflow.keras.log_model` does); returns MLflow's ModelInfo. `kwargs`: those of
    `save_model`, and `metadata`, which `Model.log` writes into the MLmodel file itself."""
    return Model.log(None, name=name, flavor=sys.modules[__name__], keras_model=keras_model, **kwargs)
