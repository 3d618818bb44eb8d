"""The loader module of a registered model's pyfunc flavour (`loader_module` in its MLmodel, the way MLflow's
own flavours are loaded): `mlflow.pyfunc.load_model` imports it from the installed xraycnn and calls
`_load_pyfunc` on the model's data folder. The logged model holds data only (the network, its config), no
code: whoever can write the artifact store cannot make a serving host run anything by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xraycnn.serving.model import ImageModel

KERAS_FILE = "model.keras"  # inside the data folder; the name mlflow.keras's loader expects there too


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> ImageModel:
    """MLflow's loader protocol: the data folder, and the model config (the logged one with any override)."""
    return ImageModel.load(str(Path(data_path) / KERAS_FILE), model_config)
