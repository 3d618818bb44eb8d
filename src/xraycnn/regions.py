"""Where the lungs are on a film: one fixed box, the project's instrument for shortcuts.

The box (rows 10-85 %, columns 12-88 % of the film) is a coarse stand-in for a lung segmentation that fits the
upright PA films of cxr-covid. The shortcut audit and the Grad-CAM indicator always measure against this
box, whatever box an experiment crops or masks to, so a model cannot pass the audit by choosing its own box.
Kept free of TensorFlow and of the rest of xraycnn: the experiment file's checks (config) use it before
anything heavy is imported, and every layer above reads it.
"""

from __future__ import annotations

import numpy as np

Box = tuple[float, float, float, float]  # top, bottom, left, right: fractions of the height and width

LUNG_BOX: Box = (0.10, 0.85, 0.12, 0.88)


def box_pixels(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of `box` on a `height` x `width` image (end exclusive)."""
    top, bottom, left, right = box
    return round(top * height), round(bottom * height), round(left * width), round(right * width)


def box_mask(box: Box, height: int, width: int) -> np.ndarray:
    """bool (height, width): True inside `box`."""
    r0, r1, c0, c1 = box_pixels(box, height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def lung_mask(height: int, width: int) -> np.ndarray:
    return box_mask(LUNG_BOX, height, width)


def uniform_outside_share(box: Box = LUNG_BOX) -> float:
    """The share of a uniform heatmap that falls outside `box`: what an indicator reads with no preference."""
    top, bottom, left, right = box
    return 1 - (bottom - top) * (right - left)
