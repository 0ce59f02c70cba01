"""FixMatch's weak and strong augmentations on uint8 image batches, on the batch's device.

Sohn et al., "FixMatch", NeurIPS 2020; reference re-implementation kekmodel/FixMatch-pytorch
@040be3b (``dataset/randaugment.py``: ``fixmatch_augment_pool``, ``RandAugmentMC``,
``CutoutAbs``; ``dataset/cifar.py``: ``TransformFixMatch``), the code the CrossNorm paper's
Fig. 4 builds on (kekmodel/FixMatch-pytorch ``dataset/randaugment.py``, ``fixmatch_augment_pool``).

- weak: horizontal flip (p=1/2), then a 32x32 random crop of the 4 px **reflect**-padded image.
- strong: weak, then RandAugmentMC(n=2, m=10): per image two ops drawn with replacement from
  the 14-op pool; per op an integer magnitude ``v`` uniform in 1..9 and the op applied with
  probability 1/2; then always Cutout: a 16 px square (17x17 with PIL's inclusive rectangle,
  clipped at the borders) filled with grey 127.

The reference applies each op with PIL to one image. Here an op acts on all images of a batch
that drew it, with PIL's integer conventions: enhance ops blend in float32 and truncate (PIL's
``ImagingBlend``), geometric ops use PIL's nearest-neighbour inverse map with pixel centres
and black fill (the reference passes no ``resample``), lookups (posterize, solarize,
autocontrast, equalize) are exact. Every random draw comes from a CPU ``torch.Generator``;
index tensors are moved to the device, so no host-device synchronisation is needed.
"""

from __future__ import annotations

import functools
import math
from typing import Tuple

import torch
from torchvision.transforms.v2 import functional as TF

# (name, max_v, bias) in the reference's order; value = v * max_v / 10 (+ bias)
POOL: Tuple[Tuple[str, float, float], ...] = (
    ("autocontrast", 0, 0),
    ("brightness", 0.9, 0.05),
    ("color", 0.9, 0.05),
    ("contrast", 0.9, 0.05),
    ("equalize", 0, 0),
    ("identity", 0, 0),
    ("posterize", 4, 4),
    ("rotate", 30, 0),
    ("sharpness", 0.9, 0.05),
    ("shear_x", 0.3, 0),
    ("shear_y", 0.3, 0),
    ("solarize", 256, 0),
    ("translate_x", 0.3, 0),
    ("translate_y", 0.3, 0),
)
OPS = tuple(name for name, _, _ in POOL)
PARAMETER_MAX = 10
SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """numpy/torch ``reflect`` padding index (edge pixel not repeated) for offsets < n."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def weak_augment(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Reference weak view of a uint8 ``(B, C, H, W)`` batch: flip, then reflect-padded crop.

    Equals ``RandomHorizontalFlip()`` then ``RandomCrop(H, padding, padding_mode="reflect")``:
    the crop's top-left corner is uniform in ``[0, 2 * padding]`` per axis.
    """
    b, c, h, w = x.shape
    dev = x.device
    flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(dev)
    # output column j <- padded column ox + j <- column reflect(ox + j - padding) of the flipped
    # image <- column w - 1 - that of x where flipped (the reference flips, then crops)
    cols = _reflect_index(ox[:, None] - padding + torch.arange(w, device=dev), w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols)
    rows = _reflect_index(oy[:, None] - padding + torch.arange(h, device=dev), h)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(-1, c, -1)
    return x.reshape(b, c, h * w).gather(2, flat).view(b, c, h, w)


# ----- per-op kernels (uint8 (n, 3, H, W) in, uint8 out; per-image parameters) --------------

def _autocontrast_pil(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0) per image and channel: the lookup
    ``int(v * scale + offset)`` in double precision with ``scale = 255.0 / (hi - lo)``,
    ``offset = -lo * scale``; a flat channel is unchanged.

    ``255.0 / t`` on a tensor is computed as ``255 * (1 / t)``, which differs from Python's
    division in the last bit and moves a few values by one level; a tensor-by-tensor division
    is exact.
    """
    xf = x.double()
    lo = xf.amin(dim=(-2, -1), keepdim=True)
    hi = xf.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo
    span = torch.where(flat, torch.ones_like(hi), hi - lo)
    scale = torch.full_like(span, 255.0) / span
    out = torch.trunc(xf * scale + (-lo * scale)).clamp(0, 255).to(torch.uint8)
    return torch.where(flat, x, out)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, x, factor)`` for factors in [0, 1]: the float32
    ``in1 + alpha * (in2 - in1)`` truncated to uint8."""
    a = factor.to(torch.float32).view(-1, 1, 1, 1)
    d = degenerate.to(torch.float32)
    out = d + a * (x.to(torch.float32) - d)
    return out.clamp(0, 255).to(torch.uint8)  # truncation of a non-negative float


def _grayscale_pil(x: torch.Tensor) -> torch.Tensor:
    """PIL ``convert("L")``: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``; (n, 1, H, W)."""
    r, g, b = x.long().unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def _smooth_pil(x: torch.Tensor) -> torch.Tensor:
    """PIL ``filter(ImageFilter.SMOOTH)`` (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, divided by 13) in
    PIL's float32 accumulation order, rounded; the border rows and columns are copied."""
    k = torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float32) / 13
    k = k.tolist()
    xf = x.to(torch.float32)
    h, w = x.shape[-2:]

    def row(r: int, kk) -> torch.Tensor:  # in[x-1]*k0 + in[x]*k1 + in[x+1]*k2 over interior x
        line = xf[:, :, r:r + h - 2]
        return line[..., :-2] * kk[0] + line[..., 1:-1] * kk[1] + line[..., 2:] * kk[2]

    ss = torch.zeros_like(xf[:, :, 1:-1, 1:-1])
    ss = ss + row(2, k[0:3])  # PIL adds the row below first (kernel rows reversed; symmetric)
    ss = ss + row(1, k[3:6])
    ss = ss + row(0, k[6:9])
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = torch.floor(ss + 0.5).clamp(0, 255).to(torch.uint8)
    return out


def _affine_nearest(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.transform(size, AFFINE, matrix)`` with NEAREST resampling and black fill.

    ``matrix``: ``(n, 2, 3)`` ``(a, b, c; d, e, f)`` mapping output pixel centres
    ``(i + 0.5, j + 0.5)`` to input coordinates. For images this small Pillow takes its
    fixed-point path (``affine_fixed`` in ``Geometry.c``): every coefficient becomes
    ``floor(v * 65536 + 0.5)`` (16.16 fixed point, the offsets including the half-pixel
    shift), the source pixel is ``acc >> 16``, and negative or too large indices are outside.
    The same integer arithmetic is used here (measured against Pillow 13: no pixel differs,
    where a float64 map differs at points that land on pixel edges).
    """
    n, c, h, w = x.shape
    dev = x.device
    m = matrix.to(torch.float64)

    def fix(v: torch.Tensor) -> torch.Tensor:
        return torch.floor(v * 65536.0 + 0.5).long().to(dev)

    a0, a1, a3, a4 = fix(m[:, 0, 0]), fix(m[:, 0, 1]), fix(m[:, 1, 0]), fix(m[:, 1, 1])
    a2 = fix(m[:, 0, 2] + m[:, 0, 0] * 0.5 + m[:, 0, 1] * 0.5)
    a5 = fix(m[:, 1, 2] + m[:, 1, 0] * 0.5 + m[:, 1, 1] * 0.5)
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    ix = (a2[:, None, None] + ys * a1[:, None, None] + xs * a0[:, None, None]) >> 16
    iy = (a5[:, None, None] + ys * a4[:, None, None] + xs * a3[:, None, None]) >> 16
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    flat = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    return torch.where(inside[:, None], out, torch.zeros_like(out))


@functools.lru_cache(maxsize=1)
def _rotation_table() -> torch.Tensor:
    """``(360, 2)`` float64 ``(cos, sin)`` of ``-radians(angle % 360)`` for integer angles, each
    rounded to 15 digits as ``Image.rotate`` does (Python's correctly rounded ``round``)."""
    rows = []
    for deg in range(360):
        a = -math.radians(deg % 360.0)
        rows.append((round(math.cos(a), 15), round(math.sin(a), 15)))
    return torch.tensor(rows, dtype=torch.float64)


def _geometric_matrix(op: str, value: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The PIL inverse-map matrices of the reference geometric ops; ``value`` signed."""
    h, w = size
    n = len(value)
    m = torch.zeros(n, 2, 3, dtype=torch.float64)
    m[:, 0, 0] = 1
    m[:, 1, 1] = 1
    value = value.to(torch.float64)
    if op == "shear_x":
        m[:, 0, 1] = value
    elif op == "shear_y":
        m[:, 1, 0] = value
    elif op == "translate_x":
        m[:, 0, 2] = value
    elif op == "translate_y":
        m[:, 1, 2] = value
    elif op == "rotate":  # Image.rotate(angle) about the centre; integer degrees
        cx, cy = w / 2.0, h / 2.0
        cos, sin = _rotation_table()[(value.round().long() % 360)].unbind(1)
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, sin, cos * -cx + sin * -cy + cx
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = -sin, cos, -sin * -cx + cos * -cy + cy
    else:
        raise ValueError(op)
    return m


def apply_op(op: str, x: torch.Tensor, v: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """One reference op on a uint8 ``(n, 3, H, W)`` batch.

    Args:
        op: a name of :data:`OPS`.
        x: uint8 images.
        v: ``(n,)`` integer magnitudes (1..9 in RandAugmentMC).
        sign: ``(n,)`` of +1/-1; used by the signed ops (rotate, shear, translate).
    """
    dev = x.device
    max_v, bias = {name: (mv, b) for name, mv, b in POOL}[op]
    vf = v.to(torch.float64)
    if op == "identity":
        return x
    if op == "autocontrast":
        return _autocontrast_pil(x)
    if op == "equalize":
        return TF.equalize(x)
    if op in ("brightness", "color", "contrast", "sharpness"):
        factor = (vf * max_v / PARAMETER_MAX + bias).to(dev)
        if op == "brightness":
            degenerate = torch.zeros_like(x)
        elif op == "color":
            degenerate = _grayscale_pil(x).expand_as(x)
        elif op == "contrast":  # int(mean of the L image + 0.5), as a flat grey image
            mean = _grayscale_pil(x).to(torch.float64).mean(dim=(1, 2, 3))
            degenerate = torch.floor(mean + 0.5).to(torch.uint8).view(-1, 1, 1, 1).expand_as(x)
        else:
            degenerate = _smooth_pil(x)
        return _blend(degenerate, x, factor)
    if op == "posterize":
        bits = (torch.floor(vf * max_v / PARAMETER_MAX) + bias).long()
        mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8).to(dev)
        return x & mask.view(-1, 1, 1, 1)
    if op == "solarize":
        threshold = (256 - torch.floor(vf * max_v / PARAMETER_MAX)).to(dev).view(-1, 1, 1, 1)
        return torch.where(x.long() >= threshold, 255 - x, x)
    s = sign.to(torch.float64)
    if op == "rotate":
        value = torch.floor(vf * max_v / PARAMETER_MAX) * s
    elif op in ("shear_x", "shear_y"):
        value = (vf * max_v / PARAMETER_MAX) * s
    elif op == "translate_x":  # int(signed fraction * width): truncation toward zero
        value = (vf * max_v / PARAMETER_MAX * s * x.shape[-1]).trunc()
    elif op == "translate_y":  # the reference scales by img.size[1] (the height)
        value = (vf * max_v / PARAMETER_MAX * s * x.shape[-2]).trunc()
    else:
        raise ValueError(f"unknown RandAugmentMC op {op!r}; choose from {', '.join(OPS)}")
    return _affine_nearest(x, _geometric_matrix(op, value, x.shape[-2:]))


def cutout(x: torch.Tensor, generator: torch.Generator, size: int = 16, fill: int = 127
           ) -> torch.Tensor:
    """Reference ``CutoutAbs(img, size)`` on a uint8 ``(B, C, H, W)`` batch.

    Centre ``(x0, y0)`` uniform in ``[0, W) x [0, H)``; ``x0 = int(max(0, x0 - size / 2))``,
    ``x1 = int(min(W, x0 + size))``; PIL's rectangle fills ``x0..x1`` inclusive (clipped).
    """
    b, _, h, w = x.shape
    dev = x.device
    cx = torch.rand(b, generator=generator, dtype=torch.float64) * w
    cy = torch.rand(b, generator=generator, dtype=torch.float64) * h
    x0 = (cx - size / 2.0).clamp(min=0).floor()
    y0 = (cy - size / 2.0).clamp(min=0).floor()
    x1 = (x0 + size).clamp(max=w).floor()
    y1 = (y0 + size).clamp(max=h).floor()
    cols = torch.arange(w, device=dev)
    rows = torch.arange(h, device=dev)
    x0, x1, y0, y1 = (t.long().to(dev) for t in (x0, x1, y0, y1))
    in_x = (cols[None] >= x0[:, None]) & (cols[None] <= x1[:, None])
    in_y = (rows[None] >= y0[:, None]) & (rows[None] <= y1[:, None])
    box = (in_y[:, :, None] & in_x[:, None, :])[:, None]
    return torch.where(box, torch.full_like(x, fill), x)


class RandAugmentMC:
    """Reference ``RandAugmentMC(n, m)`` (with its final Cutout) on uint8 batches.

    Args:
        n: ops per image, drawn with replacement from :data:`POOL`.
        m: magnitudes are uniform integers in ``1 .. m - 1`` (``np.random.randint(1, m)``).
        prob: probability that each drawn op is applied.
        cutout_size: side of the Cutout square in pixels (reference: ``int(32 * 0.5)``).
    """

    def __init__(self, n: int = 2, m: int = 10, prob: float = 0.5, cutout_size: int = 16) -> None:
        if n < 0 or m < 2:
            raise ValueError(f"RandAugmentMC needs n >= 0 and m >= 2, got n={n}, m={m}")
        self.n, self.m, self.prob, self.cutout_size = n, m, prob, cutout_size

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Strong-augments a uint8 ``(B, 3, H, W)`` batch; returns uint8."""
        b = len(x)
        out = x.clone()
        for _ in range(self.n):
            op_index = torch.randint(len(POOL), (b,), generator=generator)
            v = torch.randint(1, self.m, (b,), generator=generator)
            apply = torch.rand(b, generator=generator) < self.prob
            sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
            for k, op in enumerate(OPS):
                chosen = torch.nonzero((op_index == k) & apply).flatten()
                if len(chosen) and op != "identity":
                    idx = chosen.to(x.device)
                    out[idx] = apply_op(op, out[idx], v[chosen], sign[chosen])
        return cutout(out, generator, self.cutout_size)


def strong_augment(x: torch.Tensor, generator: torch.Generator,
                   randaugment: RandAugmentMC) -> torch.Tensor:
    """Reference strong view: :func:`weak_augment` then RandAugmentMC (+ Cutout)."""
    return randaugment(weak_augment(x, generator), generator)


__all__ = ["OPS", "PARAMETER_MAX", "POOL", "RandAugmentMC", "apply_op", "cutout",
           "strong_augment", "weak_augment"]
