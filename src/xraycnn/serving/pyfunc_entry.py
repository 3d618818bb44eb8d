"""The code MLflow runs to build a registered model's pyfunc flavour ("models from code": the model is
source, not a pickle). Copied into every logged model; not imported by the package."""

import mlflow

from xraycnn.serving.model import ImageServingModel

mlflow.models.set_model(ImageServingModel())
