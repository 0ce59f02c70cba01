"""The offline default dataset: shapes (content) rendered in random styles.

Each 32x32 RGB image shows one of ten shapes; the **class is the content** (which shape, with
random position, size and a small rotation). Everything else is random **style**: foreground
and background colours, a sinusoidal texture on each (random frequency, orientation, phase and
amplitude), pixel noise, global contrast and brightness. A classifier must ignore the style to
generalize, which is what SelfNorm and CrossNorm act on; the corrupted test set is made by the
corruption generator at CIFAR parameters.

Generation is vectorized NumPy, deterministic for a seed, and needs no download.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

CLASSES = ("disk", "ring", "square", "frame", "triangle", "plus", "cross", "h_bars",
           "v_bars", "diamond")


def _masks(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape masks ``(N, S, S)`` for class ``label`` in shape coordinates ``u, v`` (unit size)."""
    out = np.zeros(u.shape, dtype=bool)
    for c in np.unique(label):
        chosen = label == c
        out[chosen] = _shape(int(c), u[chosen], v[chosen])
    return out


def _shape(c: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u**2 + v**2)
    box = np.maximum(np.abs(u), np.abs(v))
    diag_u, diag_v = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
    inside = box < 0.9
    if c == 0:
        return r < 0.95  # disk
    if c == 1:
        return (r > 0.55) & (r < 0.95)  # ring
    if c == 2:
        return box < 0.8  # square
    if c == 3:
        return (box > 0.5) & (box < 0.85)  # frame
    if c == 4:
        return (v < 0.7) & (np.abs(u) < (v + 0.9) * 0.55)  # triangle
    if c == 5:
        return ((np.abs(u) < 0.28) | (np.abs(v) < 0.28)) & inside  # plus
    if c == 6:
        return ((np.abs(diag_u) < 0.28) | (np.abs(diag_v) < 0.28)) & (r < 1.0)  # cross
    if c == 7:
        return (np.cos(v * np.pi * 2.2) > 0.2) & inside  # horizontal bars
    if c == 8:
        return (np.cos(u * np.pi * 2.2) > 0.2) & inside  # vertical bars
    return np.abs(u) + np.abs(v) < 1.0  # diamond


def _texture(rng: np.random.Generator, n: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Random sinusoidal texture in [-1, 1], ``(N, S, S)``."""
    freq = rng.uniform(0.2, 1.6, (n, 1, 1))
    theta = rng.uniform(0, np.pi, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    return np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)


def make_synthetic(n: int, seed: int, size: int = 32, num_classes: int = 10
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Renders ``n`` images.

    Args:
        n: number of images (classes are balanced up to rounding, in random order).
        seed: generation seed.
        size: image side in pixels.
        num_classes: how many of the ten shapes to use (2-10).

    Returns:
        ``(images, labels)``: uint8 ``(n, size, size, 3)`` and int64 ``(n,)``.
    """
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"synthetic num_classes must be in 2..{len(CLASSES)}, got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy, xx = yy[None] - (size - 1) / 2, xx[None] - (size - 1) / 2
    # content: shape, placement, scale, small rotation
    cy = rng.uniform(-0.12, 0.12, (n, 1, 1)) * size
    cx = rng.uniform(-0.12, 0.12, (n, 1, 1)) * size
    scale = rng.uniform(0.26, 0.38, (n, 1, 1)) * size
    angle = rng.uniform(-0.26, 0.26, (n, 1, 1))
    dy, dx = (yy - cy) / scale, (xx - cx) / scale
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    mask = _masks(labels, u, v)[..., None]
    # style: colours, textures, noise, contrast, brightness
    fg = rng.uniform(0, 255, (n, 1, 1, 3))
    bg = rng.uniform(0, 255, (n, 1, 1, 3))
    too_close = np.abs(fg - bg).mean(-1, keepdims=True) < 40  # keep the shape visible
    fg = np.where(too_close, 255 - bg, fg)
    fg_tex = _texture(rng, n, yy, xx)[..., None] * rng.uniform(0, 50, (n, 1, 1, 1))
    bg_tex = _texture(rng, n, yy, xx)[..., None] * rng.uniform(0, 50, (n, 1, 1, 1))
    img = np.where(mask, fg + fg_tex, bg + bg_tex)
    img = img + rng.normal(0, 1, img.shape) * rng.uniform(0, 12, (n, 1, 1, 1))
    mean = img.mean(axis=(1, 2, 3), keepdims=True)
    img = (img - mean) * rng.uniform(0.5, 1.2, (n, 1, 1, 1)) + mean
    img = img + rng.uniform(-30, 30, (n, 1, 1, 1))
    return np.clip(img, 0, 255).astype(np.uint8), labels
