"""The loader module of a registered model's pyfunc flavour (`loader_module` in its MLmodel, the way MLflow's
own flavours are loaded): `mlflow.pyfunc.load_model` imports it from the installed xraycnn and calls
`_load_pyfunc` on the model's data folder. The logged model holds data only (the network, its input guard,
its config), no code: whoever can write the artifact store cannot make a serving host run anything by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from xraycnn.serving.model import ImageModel

KERAS_FILE = "model.keras"  # inside the data folder; the name mlflow.keras's loader expects there too


def _logged_model_id(data_path: str) -> str:
    """The MLflow logged model's id (`m-...`) from the MLmodel file above the data folder, or ''."""
    for folder in Path(data_path).parents:
        mlmodel = folder / "MLmodel"
        if mlmodel.is_file():
            try:
                return str((yaml.safe_load(mlmodel.read_text()) or {}).get("model_id") or "")
            except (OSError, yaml.YAMLError):
                return ""
    return ""


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> ImageModel:
    """MLflow's loader protocol: the data folder, and the model config (the logged one with any override).
    Loaded outside `xraycnn serve` (which sets the registry version), the answers' `model_version` is the
    logged model's id: what the registry's versions point at."""
    config = dict(model_config or {})
    if not config.get("model_version"):
        config["model_version"] = _logged_model_id(data_path)
    return ImageModel.load(str(Path(data_path) / KERAS_FILE), config)
