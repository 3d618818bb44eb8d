"""The searchable network (hypermodel) and its search space.

Importing this package registers the project's own layers with Keras: `FilmPreprocessing`, which a
registered model carries when its experiment preprocesses films, and `FusedBatchNormalization`, the batch
normalisation of its networks: `import xraycnn.model` before loading such a model with MLflow or Keras.
"""

from xraycnn.data.preprocess import FilmPreprocessing
from xraycnn.model.layers import FusedBatchNormalization

__all__ = ["FilmPreprocessing", "FusedBatchNormalization"]
