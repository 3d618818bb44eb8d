"""The garbage collector's view of a long search.

Keras Tuner runs `gc.collect()` twice before every trial (its own call and `keras.backend.clear_session`'s).
A full collection walks every container object the process holds: after TensorFlow, Keras, MLflow and the
decoded films are loaded that is about half a million objects and 0.3-0.4 s per call, every trial, for nothing:
those objects live until the process ends. Freezing them (`gc.freeze`) leaves them out of every later
collection; what a trial allocates is still collected as before.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Collect once, then exempt everything alive now from later collections; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """Return the frozen objects to the collector (its oldest generation)."""
    gc.unfreeze()
