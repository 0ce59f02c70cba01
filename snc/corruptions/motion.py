"""ImageMagick's ``MotionBlurImage`` in NumPy (what the original motion_blur and snow call).

Observed behaviour of ImageMagick 6.9 (the project's corruption reference, section 5):
``2 * radius + 1`` taps with weights ``exp(-i^2 / (2 sigma^2))`` normalized to sum 1; the kernel
is one-sided, ``out(p) = sum_i w_i * in(p + o_i)`` with integer offsets
``o_i = (ceil(i cos(theta) - 1/2), ceil(i sin(theta) - 1/2))`` (column, row; theta in degrees
from +x towards +y, rows growing downwards); edge pixels are replicated.
"""

from __future__ import annotations

import math

import numpy as np


def motion_blur_kernel_apply(
    img: np.ndarray, radius: int, sigma: float, angle: float
) -> np.ndarray:
    """Blurs ``img`` (``(H, W)`` or ``(H, W, C)``) along ``angle`` degrees.

    Returns:
        float64 array of the input's shape, rounded to whole grey levels as ImageMagick's 8-bit
        output is.
    """
    width = 2 * int(radius) + 1
    taps = np.arange(width)
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    theta = math.radians(angle)
    h, w = img.shape[:2]
    src = img.astype(np.float64)
    out = np.zeros_like(src)
    base_rows, base_cols = np.arange(h), np.arange(w)
    for i in range(width):
        ox = math.ceil(i * math.cos(theta) - 0.5)
        oy = math.ceil(i * math.sin(theta) - 0.5)
        rows = np.clip(base_rows + oy, 0, h - 1)
        cols = np.clip(base_cols + ox, 0, w - 1)
        out += weights[i] * src[rows][:, cols]
    return np.floor(out + 1e-9)
