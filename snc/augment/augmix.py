"""AugMix on uint8 image batches, on the batch's device.

Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness and
Uncertainty", ICLR 2020; reference code google-research/augmix @ 9b9824c (``augmentations.py``,
``cifar.py``): ``width=3`` chains, each of depth uniform in {1, 2, 3}, each step one of 9 ops
(autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y, translate_x,
translate_y; the ops that overlap the test corruptions are excluded) at a level drawn from
U(0.1, severity); chain weights ~ Dirichlet(alpha), mixing weight ~ Beta(alpha, alpha);
``mixed = (1 - m) * normalize(x) + m * sum_i w_i * normalize(chain_i(x))``.

The reference applies the ops with PIL on single images. Here each op acts on the images of a
batch that drew it: geometric ops share one bilinear affine warp with PIL's conventions
(pixel centres, inverse map, zero fill), the others are the same per-image lookups. Between ops
images stay uint8, as PIL images do.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
       "translate_x", "translate_y")


def _affine_pil(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.transform(AFFINE, (a, b, c, d, e, f), BILINEAR)`` on a uint8 batch.

    ``matrix``: ``(B, 2, 3)`` mapping output pixel coordinates (centres at ``i + 0.5``) to input
    coordinates; outside the image the fill is 0.
    """
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    ones = torch.ones_like(gx)
    coords = torch.stack((gx, gy, ones), dim=-1).reshape(1, h * w, 3)  # (1, HW, 3)
    src = coords @ matrix.transpose(1, 2).to(coords.dtype)  # (B, HW, 2) input x, y
    grid = torch.stack((src[..., 0] / w * 2 - 1, src[..., 1] / h * 2 - 1), dim=-1)
    # PIL fills 0 where the source point is outside the image and clamps the bilinear
    # neighbours at the border otherwise.
    out = F.grid_sample(x.float(), grid.reshape(b, h, w, 2), mode="bilinear",
                        padding_mode="border", align_corners=False)
    outside = ((src[..., 0] < 0) | (src[..., 0] >= w) | (src[..., 1] < 0) | (src[..., 1] >= h))
    out = out.masked_fill(outside.reshape(b, 1, h, w), 0.0)
    # PIL's 8-bit bilinear result is truncated, not rounded (the epsilon absorbs float error)
    return out.add(1e-3).floor().clamp(0, 255).to(torch.uint8)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float ``(x / 255 - mean) / std`` (``mean``/``std`` broadcast)."""
    return (x.float() / 255 - mean) / std


def _autocontrast_pil(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0) per image and channel: the lookup
    ``int(v * scale + offset)`` in double precision, ``scale = 255 / (hi - lo)``."""
    xf = x.double()
    lo = xf.amin(dim=(-2, -1), keepdim=True)
    hi = xf.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo
    span = torch.where(flat, torch.ones_like(hi), hi - lo)
    scale = torch.full_like(span, 255.0) / span  # tensor / tensor: 255.0 / t is 1 ulp off PIL
    out = torch.trunc(xf * scale - lo * scale).clamp(0, 255).to(torch.uint8)
    return torch.where(flat, x, out)


def _geometric_matrices(op: str, levels: torch.Tensor, signs: torch.Tensor, size: Tuple[int, int]
                        ) -> torch.Tensor:
    h, w = size
    n = len(levels)
    m = torch.zeros(n, 2, 3)
    m[:, 0, 0] = 1
    m[:, 1, 1] = 1
    if op == "shear_x":
        m[:, 0, 1] = levels * 0.3 / 10 * signs
    elif op == "shear_y":
        m[:, 1, 0] = levels * 0.3 / 10 * signs
    elif op == "translate_x":
        m[:, 0, 2] = torch.floor(levels * (w / 3) / 10) * signs
    elif op == "translate_y":
        m[:, 1, 2] = torch.floor(levels * (h / 3) / 10) * signs
    elif op == "rotate":
        degrees = torch.floor(levels * 30 / 10) * signs
        a = -torch.deg2rad(degrees)
        cos, sin = torch.cos(a), torch.sin(a)
        cx, cy = w / 2, h / 2
        m[:, 0, 0], m[:, 0, 1] = cos, sin
        m[:, 1, 0], m[:, 1, 1] = -sin, cos
        m[:, 0, 2] = cx - cos * cx - sin * cy
        m[:, 1, 2] = cy + sin * cx - cos * cy
    return m


def apply_op(op: str, x: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor
             ) -> torch.Tensor:
    """One AugMix op on a uint8 ``(B, 3, H, W)`` batch with per-image ``levels``/``signs``."""
    if op == "autocontrast":
        return _autocontrast_pil(x)
    if op == "equalize":
        return TF.equalize(x)
    if op == "posterize":
        bits = 4 - torch.floor(levels * 4 / 10).long()
        mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8).to(x.device)
        return x & mask.view(-1, 1, 1, 1)
    if op == "solarize":
        threshold = (256 - torch.floor(levels * 256 / 10)).to(x.device).view(-1, 1, 1, 1)
        return torch.where(x.long() >= threshold, 255 - x, x)
    matrix = _geometric_matrices(op, levels, signs, x.shape[-2:]).to(x.device)
    return _affine_pil(x, matrix)


class AugMix:
    """Makes AugMix views of uint8 batches.

    Args:
        mean, std: per-channel normalization of the mixed output (0-1 scale).
        severity: op strength (3 on CIFAR, 1 on ImageNet in the reference).
        width: number of chains.
        depth: chain depth; <= 0 draws it uniformly from {1, 2, 3} per chain and image.
        alpha: Dirichlet / Beta parameter.
        ops: the op names to draw from.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], severity: int = 3,
                 width: int = 3, depth: int = -1, alpha: float = 1.0,
                 ops: Sequence[str] = OPS) -> None:
        unknown = set(ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown AugMix ops {sorted(unknown)}; choose from {OPS}")
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.severity, self.width, self.depth, self.alpha = severity, width, depth, alpha
        self.ops = tuple(ops)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> normalized float."""
        return normalize(x, self.mean.to(x.device), self.std.to(x.device))

    def chain(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One augmentation chain per image; returns uint8."""
        b = len(x)
        depth = (torch.randint(1, 4, (b,), generator=generator) if self.depth <= 0
                 else torch.full((b,), self.depth))
        out = x.clone()
        for step in range(int(depth.max())):
            op_index = torch.randint(len(self.ops), (b,), generator=generator)
            levels = torch.rand(b, generator=generator) * (self.severity - 0.1) + 0.1
            signs = torch.where(torch.rand(b, generator=generator) > 0.5, -1.0, 1.0)
            for k, op in enumerate(self.ops):
                chosen = torch.nonzero((op_index == k) & (depth > step)).flatten()
                if len(chosen):
                    idx = chosen.to(x.device)
                    out[idx] = apply_op(op, out[idx], levels[chosen], signs[chosen])
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        """The AugMix view of a uint8 batch (normalized float)."""
        b = len(x)
        if rng is None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        ws = torch.from_numpy(rng.dirichlet([self.alpha] * self.width, size=b)).float()
        m = torch.from_numpy(rng.beta(self.alpha, self.alpha, size=b)).float()
        ws, m = ws.to(x.device), m.to(x.device).view(-1, 1, 1, 1)
        mix = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for i in range(self.width):
            mix += ws[:, i].view(-1, 1, 1, 1) * self.normalize(self.chain(x, generator))
        return (1 - m) * self.normalize(x) + m * mix


__all__ = ["AugMix", "OPS", "apply_op"]
