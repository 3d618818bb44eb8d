"""Keep TensorFlow's C++ start-up lines (oneDNN notice, absl preamble, `cuInit` failing on a machine without
a GPU) off the user's terminal: they are written straight to file descriptor 2 and ignore
TF_CPP_MIN_LOG_LEVEL. Python exceptions still surface: they propagate after stderr is restored."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> None:
    """Import TensorFlow (once) with its start-up lines kept off the terminal."""
    if "tensorflow" not in sys.modules:
        with silenced():
            import tensorflow  # noqa: F401
