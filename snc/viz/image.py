"""Image-space CrossNorm (paper Fig. 1a, Fig. 13), image-space SelfNorm (Fig. 1b), PNG grids.

Images here are float tensors ``(N, 3, H, W)`` in [0, 1] unless a docstring says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from snc.errors import ConfigError
from snc.ops import CROSSNORM_EPS, channel_stats, cross_norm, sample_box


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float ``(N, 3, H, W)`` in [0, 1] (clipped) -> uint8 ``(N, H, W, 3)``."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def swap_stats(content: torch.Tensor, style: torch.Tensor,
               style_box: Optional[Tuple[Tuple[int, int], ...]] = None,
               eps: float = CROSSNORM_EPS) -> torch.Tensor:
    """2-instance CrossNorm in image space: each content image standardised with its own
    per-RGB-channel mean/std and given the style image's (of ``style_box`` of it, when given),
    through :func:`snc.ops.cross_norm`.

    Args:
        content, style: ``(N, 3, H, W)`` of one shape; ``style[i]`` is the partner of
            ``content[i]``.
        style_box: ``((r0, r1), (c0, c1))`` box of the partner the statistics come from.
    Returns:
        ``(N, 3, H, W)`` (not clipped: the statistics are exact).
    """
    n = content.shape[0]
    both = torch.cat([content, style])
    perm = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    if style_box is None:
        return cross_norm(both, perm=perm, eps=eps)[:n]
    # the op reads the style box of every row; the content keeps its whole-map statistics
    mean_c, std_c = channel_stats(content, eps)
    mean_s, std_s = channel_stats(style, eps, style_box)
    return (content - mean_c) / std_c * std_s + mean_s


def style_boxes(shape: Sequence[int], count: int, generator: torch.Generator,
                threshold: float = 0.1, beta: float = 1.0):
    """``count`` random boxes of area ratio > ``threshold`` (the CN box sampler)."""
    try:
        return [sample_box(shape, generator, beta, threshold) for _ in range(count)]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def grid(rows: Sequence[Sequence[Optional[np.ndarray]]], scale: int = 1,
         pad: int = 2, background: int = 255) -> np.ndarray:
    """Tiles uint8 ``(H, W, 3)`` images (None: an empty cell) into one uint8 image."""
    tiles = [t for r in rows for t in r if t is not None]
    if not tiles:
        raise ValueError("a grid needs at least one image")
    h = max(t.shape[0] for t in tiles) * scale
    w = max(t.shape[1] for t in tiles) * scale
    ncols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncols * (w + pad) + pad, 3), background,
                  np.uint8)
    for i, r in enumerate(rows):
        for j, t in enumerate(r):
            if t is None:
                continue
            t = np.repeat(np.repeat(t, scale, 0), scale, 1) if scale > 1 else t
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + t.shape[0], x:x + t.shape[1]] = t
    return out


def write_png(path: Path, rows: Sequence[Sequence[Optional[np.ndarray]]], scale: int = 1,
              meta: Optional[Dict[str, Any]] = None) -> Path:
    """Writes the grid of ``rows`` as a PNG (and ``meta`` beside it as ``<name>.json``)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(rows, scale)).save(path, optimize=True)
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path


def load_images(spec: str) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` from an ``.npz`` (``images`` / ``train_images`` array) or a
    comma-separated list of image files (resized to the first one's size)."""
    paths = [Path(p) for p in spec.split(",") if p]
    if len(paths) == 1 and paths[0].suffix == ".npz":
        if not paths[0].exists():
            raise ConfigError(f"images={paths[0]} does not exist")
        with np.load(paths[0], allow_pickle=False) as f:
            for key in ("images", "train_images", "test_images"):
                if key in f.files:
                    return np.asarray(f[key])
            raise ConfigError(f"{paths[0]} has no images, train_images or test_images array")
    from PIL import Image

    arrays: List[np.ndarray] = []
    size = None
    for p in paths:
        if not p.exists():
            raise ConfigError(f"image file {p} does not exist")
        img = Image.open(p).convert("RGB")
        size = size or img.size
        arrays.append(np.asarray(img.resize(size) if img.size != size else img))
    return np.stack(arrays)
