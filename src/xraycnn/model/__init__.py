"""The searchable network (hypermodel) and its search space.

Registered models are stock Keras (their preprocessing a sub-model of Keras operations, their batch
normalisation Keras' own) and load anywhere. Importing this package registers the project's own layers with
Keras, which versions registered before that carry: `FilmPreprocessing` and `FusedBatchNormalization` (the
batch normalisation the networks train with).
"""

from xraycnn.data.preprocess import FilmPreprocessing
from xraycnn.model.layers import FusedBatchNormalization

__all__ = ["FilmPreprocessing", "FusedBatchNormalization"]
