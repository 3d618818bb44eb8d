"""xraycnn: search, track and serve CNNs for COVID-19 detection on chest X-rays.

from xraycnn import prepare_images
x = prepare_images(["scan.jpg"], model)   # float32 (n, size, size, channels), values 0-255
"""

import os

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter out of the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from xraycnn.data.images import input_shape_of, prepare_images

__version__ = "0.1.0"
__all__ = ["__version__", "input_shape_of", "prepare_images"]
