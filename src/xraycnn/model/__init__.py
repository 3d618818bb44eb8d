"""The searchable network (hypermodel) and its search space.

Importing this package registers `FilmPreprocessing`, the layer a registered model carries when its
experiment preprocesses films: `import xraycnn.model` before loading such a model with MLflow or Keras.
"""

from xraycnn.data.preprocess import FilmPreprocessing

__all__ = ["FilmPreprocessing"]
