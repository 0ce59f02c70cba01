"""The corruptions as batched tensor operations, on the images' device (CPU or CUDA).

    import torch
    from snc.corruptions.batched import corrupt_batch
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = corrupt_batch(images, "fog", 3, gen, preset="cifar")   # uint8 (N, H, W, 3) in and out

Layout: uint8 ``(N, H, W, 3)`` RGB, the layout of :func:`snc.corruptions.corrupt` and of the
CIFAR-C ``.npy`` files; the output stays on the input's device. The per-severity values come from
:data:`snc.corruptions.params.PARAMS` (the single table both paths read). Every function follows
the per-image algorithm of :mod:`snc.corruptions.functions`, batched over N; the result is cast
to uint8 by truncation, as there.

Deterministic corruptions (brightness, contrast, saturate, pixelate, defocus_blur,
gaussian_blur, zoom_blur) compute what the CPU generator computes, in the same precision
(float64; float32 where the CPU path is float32), so they agree with it up to floating-point
summation order: pixelate reproduces Pillow's fixed-point BOX resampling exactly; defocus blur
is a sum of separable convolutions (the kernel's singular value decomposition) where OpenCV's
``filter2D`` may use a DFT; zoom blur re-implements
SciPy's order-1 ``zoom``; divisions by constants are correctly rounded on CUDA too (see
``_div``). jpeg_compression runs ``torchvision.io.encode_jpeg``/``decode_jpeg`` on the CPU, a
batch at a time: the same libjpeg as Pillow's, so the values are Pillow's. nvJPEG (their CUDA
path) is not used: on an H200 it differed from Pillow by 4.7 grey levels on average (86 at most,
on 86 % of the values) at 32 px, and a JPEG round trip is not what limits the generation time.

Random corruptions draw from a ``torch.Generator`` on the images' device, so their draws are
not those of the NumPy path (which are not those of the original either); their distributions
are the same. :func:`corrupt_in_batches` (set generation) draws per block of :data:`BLOCK`
images of the set, from one generator per block seeded from (seed, block index)
(:class:`RandomBlocks`): every draw is made for a whole block and a batch keeps its images'
rows, and Poisson counts (shot_noise) take one seed per image drawn the same way, so an
image's output does not depend on the batch that holds it, on the batch size or on the
out-of-memory halving.

Substitutions where no exact tensor counterpart exists: ImageMagick's motion blur
(motion_blur, snow) is the kernel model of :mod:`snc.corruptions.motion` with a per-image angle;
OpenCV's ``warpAffine`` (elastic_transform) is bilinear sampling with reflect-101 borders and
1/32-pixel weights; SciPy's ``map_coordinates``/``zoom``/``gaussian_filter`` are re-implemented
(same kernels, border modes and sampling grids). The bounds reached are tested in
``tests/test_corruptions_batched.py``.

-C-bar (``preset`` ``cifar`` or ``imagenet``, severity values from
:mod:`snc.corruptions.cbar`): blue_noise_sample, brownish_noise (spectral noise fields through
``torch.fft``), single_frequency_greyscale, cocentric_sine_waves, ripple, plasma_noise,
checkerboard_cutout, inverse_sparkles, sparkles, pinch_and_twirl,
transverse_chromatic_abberation, perlin_noise, caustic_refraction, circular_motion_blur and
lines (all 15) are batched. lines runs scikit-image's anti-aliased line stepping for all the
lines of the batch in lock step and blends them one after another through uint8, as the
original. circular_motion_blur (deterministic) is the weighted mean of SciPy's 21 cubic spline
rotations as one sparse operator on the spline coefficients (SciPy's prefilter as a matrix;
the rotation's taps, mirror folding and zero outside as ``ndimage.rotate``), in float64 where
the original sums float32 rotations: within one grey level. Their parameters, and the numbers
the original draws from a private ``RandomState`` (checkerboard squares, star rays, Perlin
tables), are drawn from the generator with the same distributions; the appliers
(``_apply_<name>``) given the CPU generator's parameters return its values
(transverse_chromatic_abberation: SciPy's unprefiltered cubic zoom as one matrix per factor,
built from SciPy's own 1-D zoom, within one grey level).

spatter follows OpenCV step by step: Canny (Sobel with replicated borders, the fixed-point
sectors of its non-maximum suppression, hysteresis to convergence), the 5 x 5 chamfer distance
in float32 relaxed until every distance up to the truncation at 20 is final, the 3 x 3 box
filters, equalizeHist and filter2D; given the NumPy generator's noise it returns its values.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Callable, Dict, Sequence, Union

import numpy as np
import torch

from snc.corruptions.params import PARAMS

log = logging.getLogger("snc")

Images = Union[torch.Tensor, Sequence[torch.Tensor]]


# ----------------------------------------------------------------------------- helpers


def _div(x: torch.Tensor, c: float) -> torch.Tensor:
    """``x / c`` correctly rounded: CUDA turns a division by a Python number into a
    multiplication by its reciprocal, which moves some values across a grey-level boundary."""
    return x / torch.tensor(c, dtype=x.dtype, device=x.device)


def _unit(x: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    return _div(x.to(dtype), 255.0)


def _pad_index(n: int, r: int, mode: str, device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``r`` on both sides, as SciPy's / OpenCV's
    border modes: ``nearest`` (edge repeated), ``reflect`` (SciPy: ``d c b a | a b c d``),
    ``reflect101`` (OpenCV default, ``d c b | a b c d``). Works for any ``r`` (several periods)."""
    i = torch.arange(-r, n + r, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = torch.remainder(i, 2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect101":
        if n == 1:
            return torch.zeros_like(i)
        i = torch.remainder(i, 2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(mode)


def _gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    # scipy.ndimage.gaussian_filter1d's kernel (correlation, symmetric)
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x ** 2)
    return phi / phi.sum()


@lru_cache(maxsize=64)
def _filter_matrix(n: int, weights: tuple, mode: str) -> np.ndarray:
    """The ``(n, n)`` matrix of a 1-D correlation with ``weights`` and a border ``mode`` on an
    axis of length ``n`` (padding folded in), so a filter is one matrix product."""
    r = len(weights) // 2
    idx = _pad_index(n, r, mode, "cpu").numpy()
    mat = np.zeros((n, n))
    for i in range(n):
        np.add.at(mat[i], idx[i:i + 2 * r + 1], weights)
    return mat


def _apply_axis(x: torch.Tensor, mat: torch.Tensor, dim: int) -> torch.Tensor:
    """``mat @ x`` along ``dim`` as one matrix product."""
    moved = x.movedim(dim, 0)
    out = torch.matmul(mat.to(x.dtype), moved.reshape(moved.shape[0], -1))
    return out.reshape(mat.shape[0], *moved.shape[1:]).movedim(0, dim)


@lru_cache(maxsize=128)
def _box_band(n_in: int, n_out: int) -> tuple:
    """The matrix ``_pil_box_coeffs(n_in, n_out)`` and its band: per output row the ``K`` input
    indices from its first non-zero weight on and their weights (0 past the end)."""
    mat = _pil_box_coeffs(n_in, n_out)
    nz = mat != 0
    first = nz.argmax(1)
    last = np.where(nz.any(1), mat.shape[1] - 1 - nz[:, ::-1].argmax(1), first)
    k = int((last - first).max()) + 1
    idx = first[:, None] + np.arange(k)
    valid = idx < mat.shape[1]
    idx = np.minimum(idx, mat.shape[1] - 1)
    return mat, idx, np.where(valid, np.take_along_axis(mat, idx, 1), 0.0)


def _correlate1d(x: torch.Tensor, weights: np.ndarray, dim: int, mode: str) -> torch.Tensor:
    """Correlates ``x`` with ``weights`` along ``dim`` with the border ``mode``: on a GPU, or
    for a kernel wider than 1/8 of the axis, one matrix product (:func:`_filter_matrix`); on
    the CPU otherwise, the padded axis shifted and summed tap by tap (a product costs the axis
    length per value, this the kernel's width; measured at 224 px). Same values up to the
    summation order."""
    n, taps = x.shape[dim], tuple(float(w) for w in weights)
    if x.device.type != "cpu" or 8 * len(taps) > n:
        return _apply_axis(x, torch.as_tensor(_filter_matrix(n, taps, mode), device=x.device),
                           dim)
    moved = x.movedim(dim, 0)
    rows = moved.contiguous().view(n, -1)   # the axis first: whole rows shifted
    padded = rows.index_select(0, _pad_index(n, len(taps) // 2, mode, "cpu"))
    out = torch.zeros_like(rows)
    for j in range(0, rows.shape[1], 1024):  # 1024 columns at a time stay in the cache
        part, src = out[:, j:j + 1024], padded[:, j:j + 1024]
        for k, w in enumerate(taps):
            part.add_(src[k:k + n], alpha=w)
    return out.view(moved.shape).movedim(0, dim)


def gaussian_filter(x: torch.Tensor, sigma: float, dims=(1, 2), mode: str = "nearest",
                    truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` along ``dims`` (sigma 0 leaves ``x`` unchanged)."""
    if float(sigma) <= 0:
        return x
    w = _gaussian_weights(sigma, truncate)
    for d in dims:
        x = _correlate1d(x, w, d, mode)
    return x


def rgb2hsv(rgb: torch.Tensor) -> torch.Tensor:
    """:func:`snc.corruptions.functions.rgb2hsv` (scikit-image's) on ``(..., 3)`` tensors."""
    r, g, b = rgb.unbind(-1)
    v = rgb.amax(-1)
    delta = v - rgb.amin(-1)
    zero = delta == 0
    safe = torch.where(zero, torch.ones_like(delta), delta)
    s = torch.where(zero, torch.zeros_like(delta), delta / torch.where(v == 0, 1.0, v))
    h = torch.where(b == v, 4.0 + (r - g) / safe,
                    torch.where(g == v, 2.0 + (b - r) / safe, (g - b) / safe))
    h = torch.remainder(_div(h, 6.0), 1.0)
    h = torch.where(zero, torch.zeros_like(h), h)
    return torch.stack([h, s, v], -1)


def hsv2rgb(hsv: torch.Tensor) -> torch.Tensor:
    """:func:`snc.corruptions.functions.hsv2rgb` (scikit-image's) on ``(..., 3)`` tensors."""
    h, s, v = hsv.unbind(-1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = torch.remainder(hi.to(torch.uint8).to(torch.int64), 6)  # the CPU path's uint8 cast
    choices = torch.stack([
        torch.stack((v, t, p), -1), torch.stack((q, v, p), -1), torch.stack((p, v, t), -1),
        torch.stack((p, q, v), -1), torch.stack((t, p, v), -1), torch.stack((v, p, q), -1),
    ], 0)
    idx = hi.unsqueeze(0).unsqueeze(-1).expand(1, *hi.shape, 3)
    return torch.gather(choices, 0, idx).squeeze(0)


def _zoom_axis(n_in: int, factor: float, device) -> tuple:
    """SciPy ``ndimage.zoom(order=1)`` along one axis of length ``n_in``: output length, and
    for each output sample the two source indices and the weight of the second."""
    n_out = int(round(n_in * factor))
    step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    c = torch.arange(n_out, device=device, dtype=torch.float64) * step
    lo = torch.floor(c).clamp(0, n_in - 1)
    frac = c - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=n_in - 1)
    return n_out, lo, hi, frac


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """:func:`snc.corruptions.functions.clipped_zoom` on ``(N, H, W, ...)``, float64 inside,
    returned in ``x``'s dtype (as SciPy writes its output in the input's dtype)."""
    h = x.shape[1]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    src = x[:, top:top + ch, top:top + ch].to(torch.float64)
    n_out, lo, hi, frac = _zoom_axis(ch, factor, x.device)
    trim = (n_out - h) // 2
    sel = slice(trim, trim + h)
    lo, hi, frac = lo[sel], hi[sel], frac[sel]
    extra = (1,) * (x.ndim - 3)
    fr = frac.view(1, -1, 1, *extra)
    rows = src[:, lo] * (1 - fr) + src[:, hi] * fr
    fc = frac.view(1, 1, -1, *extra)
    out = rows[:, :, lo] * (1 - fc) + rows[:, :, hi] * fc
    return out.to(x.dtype)


def motion_blur_apply(x: torch.Tensor, radius: int, sigma: float,
                      angles: torch.Tensor) -> torch.Tensor:
    """:func:`snc.corruptions.motion.motion_blur_kernel_apply` on ``(N, H, W[, C])`` with one
    angle (degrees) per image; float64 result rounded down to whole grey levels."""
    width = 2 * int(radius) + 1
    taps = np.arange(width)
    weights = np.exp(-(taps ** 2) / (2.0 * sigma ** 2))
    weights /= weights.sum()
    n, h, w = x.shape[:3]
    src = x.to(torch.float64)
    theta = torch.deg2rad(angles.to(torch.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    base_r = torch.arange(h, device=x.device)
    base_c = torch.arange(w, device=x.device)
    nn_ = torch.arange(n, device=x.device).view(n, 1, 1)
    out = torch.zeros_like(src)
    for i in range(width):
        ox = torch.ceil(i * cos - 0.5).long()
        oy = torch.ceil(i * sin - 0.5).long()
        rows = (base_r.view(1, h) + oy.view(n, 1)).clamp(0, h - 1)
        cols = (base_c.view(1, w) + ox.view(n, 1)).clamp(0, w - 1)
        out += float(weights[i]) * src[nn_, rows.view(n, h, 1), cols.view(n, 1, w)]
    return torch.floor(out + 1e-9)


# ----------------------------------------------------------------------------- random streams

BLOCK = 32  # images per random block (see RandomBlocks)


def block_seed(seed: int, block: int) -> int:
    """The seed of block ``block`` of a set generated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(block)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class RandomBlocks:
    """The random stream of images ``first .. first + n - 1`` of a set whose draws are made per
    block of :data:`BLOCK` images: block ``k`` (images ``k * BLOCK .. (k + 1) * BLOCK - 1``)
    draws from its own generator seeded with :func:`block_seed` ``(seed, k)``, every draw for a
    whole block (``BLOCK`` images, the set's last block too), and a batch keeps the rows of its
    images. So every image gets the same draws whatever batch holds it: the result does not
    depend on the batch size, nor on the size of the set.

    A plain ``torch.Generator`` passed to :func:`corrupt_batch` is the stream of one block
    holding exactly the batch.
    """

    def __init__(self, seed: int, first: int, n: int, device, block: int = BLOCK):
        if block < 1 or first < 0 or n < 1:
            raise ValueError(f"RandomBlocks needs block >= 1, first >= 0 and n >= 1, got "
                             f"block={block}, first={first}, n={n}")
        self.device = torch.device(device)
        self.n = int(n)
        self.single = False
        self.parts = []  # (generator, rows drawn, first row kept, end of the rows kept)
        i, end = int(first), int(first) + int(n)
        while i < end:
            k = i // block
            lo, hi = i - k * block, min(block, end - k * block)
            gen = torch.Generator(device=self.device).manual_seed(block_seed(seed, k))
            self.parts.append((gen, block, lo, hi))
            i = k * block + hi

    @classmethod
    def of_generator(cls, gen: torch.Generator, n: int) -> "RandomBlocks":
        stream = cls.__new__(cls)
        stream.device, stream.n, stream.single = torch.device(gen.device), int(n), True
        stream.parts = [(gen, int(n), 0, int(n))]
        return stream

    def draw(self, fn: Callable, shape: Sequence[int], dim: int = 0) -> torch.Tensor:
        """``fn(shape, generator)`` per block, the image axis ``dim`` of ``shape`` (which must
        be the batch's image count) sized to the block, and the batch's rows kept."""
        shape = list(shape)
        if shape[dim] != self.n:
            raise ValueError(f"a draw of shape {tuple(shape)} has {shape[dim]} images on axis "
                             f"{dim}, the batch {self.n}")
        outs = []
        for gen, rows, lo, hi in self.parts:
            shape[dim] = rows
            out = fn(tuple(shape), gen)
            outs.append(out if (lo, hi) == (0, rows) else out.narrow(dim, lo, hi - lo))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim)

    def image_seeds(self) -> list:
        """One 62-bit seed per image of the batch (for draws whose count depends on the
        image's values, such as Poisson sampling)."""
        seeds = self.draw(lambda shape, gen: torch.randint(
            0, 2 ** 62, shape, generator=gen, device=self.device), (self.n,))
        return [int(s) for s in seeds.tolist()]


def _stream(gen, n: int) -> RandomBlocks:
    return gen if isinstance(gen, RandomBlocks) else RandomBlocks.of_generator(gen, n)


def _rand(gen, shape, dim=0, dtype=torch.float64) -> torch.Tensor:
    s = _stream(gen, shape[dim])
    return s.draw(lambda sh, g: torch.rand(sh, generator=g, device=s.device, dtype=dtype),
                  shape, dim)


def _uniform(gen, shape, low, high, dim=0, dtype=torch.float64) -> torch.Tensor:
    return _rand(gen, shape, dim, dtype) * (high - low) + low


def _normal(gen, shape, loc, scale, dim=0, dtype=torch.float64) -> torch.Tensor:
    s = _stream(gen, shape[dim])
    z = s.draw(lambda sh, g: torch.randn(sh, generator=g, device=s.device, dtype=dtype),
               shape, dim)
    return z * scale + loc


def _randint(gen, low, high, shape, dim=0) -> torch.Tensor:
    s = _stream(gen, shape[dim])
    return s.draw(lambda sh, g: torch.randint(low, high, sh, generator=g, device=s.device),
                  shape, dim)


# ----------------------------------------------------------------------------- noise


def gaussian_noise(x, sigma, gen):
    x = _unit(x, torch.float32)
    return (x + _normal(gen, x.shape, 0.0, sigma, dtype=x.dtype)).clamp(0, 1) * 255


def shot_noise(x, c, gen):
    x = _unit(x, torch.float32)
    stream = _stream(gen, len(x))
    if stream.single:
        noisy = torch.poisson(x * c, generator=stream.parts[0][0])
    else:  # the count of draws depends on the values: one generator per image
        noisy = torch.stack([
            torch.poisson(img * c, generator=torch.Generator(device=x.device).manual_seed(sd))
            for img, sd in zip(x, stream.image_seeds(), strict=True)])
    return (noisy / c).clamp(0, 1) * 255


def impulse_noise(x, amount, gen):
    x = _unit(x, torch.float32)
    flipped = _rand(gen, x.shape, dtype=torch.float32) < amount
    salted = _rand(gen, x.shape, dtype=torch.float32) < 0.5
    x = torch.where(flipped & salted, torch.ones_like(x), x)
    x = torch.where(flipped & ~salted, torch.zeros_like(x), x)
    return x.clamp(0, 1) * 255


def speckle_noise(x, sigma, gen):
    x = _unit(x, torch.float32)
    noise = _normal(gen, x.shape, 0.0, sigma, dtype=x.dtype)
    return (x + x * noise).clamp(0, 1) * 255


# ----------------------------------------------------------------------------- blur


def gaussian_blur(x, sigma):
    # float32 on the CPU from 128 px on: twice as fast as float64 there, and within the tested
    # bound (1 grey level on 0.0015 % of the values at 224 px, where float64 is on 0.0003 %;
    # at 32 px float32 reaches 0.12 %, past the bound, so smaller images stay float64)
    small = x.device.type != "cpu" or min(x.shape[1:3]) < 128
    return gaussian_filter(_unit(x, torch.float64 if small else torch.float32),
                           sigma).clamp(0, 1) * 255


@lru_cache(maxsize=None)
def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    from snc.corruptions.functions import _disk

    return _disk(radius, alias_blur).astype(np.float64)


@lru_cache(maxsize=None)
def _separable_terms(radius: float, alias_blur: float) -> tuple:
    """The defocus kernel as a sum of separable terms (its singular value decomposition,
    without the numerically zero ones): ``kernel = sum_i rows_i (x) cols_i``."""
    u, s, vt = np.linalg.svd(_disk_kernel(radius, alias_blur))
    keep = s > s[0] * 1e-13
    return tuple(zip((u[:, keep] * s[keep]).T, vt[keep], strict=True))


def _fft_size(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are 2, 3 and 5 (a fast DFT length)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


@lru_cache(maxsize=32)
def _disk_spectrum(params: tuple, fh: int, fw: int, device: str) -> torch.Tensor:
    kernel = torch.as_tensor(_disk_kernel(*params))
    padded = torch.zeros((fh, fw), dtype=torch.float64)
    padded[:kernel.shape[0], :kernel.shape[1]] = kernel
    return torch.conj(torch.fft.rfft2(padded)).to(device)


def _defocus_separable(x, params):
    # cv2.filter2D (correlation, reflect-101 borders) with the separable terms of the kernel
    x = _unit(x)
    out = torch.zeros_like(x)
    for rows, cols in _separable_terms(*params):
        out += _correlate1d(_correlate1d(x, rows, 1, "reflect101"), cols, 2, "reflect101")
    return out.clamp(0, 1) * 255


def _defocus_fft(x, params):
    # cv2.filter2D as OpenCV computes it for kernels this large: through a DFT (float64), of
    # the image padded with reflect-101 borders; correlation = product with the conjugate
    # spectrum of the kernel, no wrap-around (the DFT is at least the padded size)
    r = _disk_kernel(*params).shape[0] // 2
    n, h, w = x.shape[:3]
    planes = _unit(x.permute(0, 3, 1, 2))
    padded = planes[:, :, _pad_index(h, r, "reflect101", x.device)][
        :, :, :, _pad_index(w, r, "reflect101", x.device)]
    fh, fw = _fft_size(h + 2 * r), _fft_size(w + 2 * r)
    spectrum = torch.fft.rfft2(padded, s=(fh, fw)) * _disk_spectrum(tuple(params), fh, fw,
                                                                     str(x.device))
    out = torch.fft.irfft2(spectrum, s=(fh, fw))[..., :h, :w].permute(0, 2, 3, 1)
    return out.clamp(0, 1) * 255


def defocus_blur(x, params):
    # on the CPU from 128 px on, a DFT costs less than the kernel's separable terms (several
    # per kernel; measured at 224 px); on a GPU the terms' matrix products are fast
    if x.device.type == "cpu" and min(x.shape[1:3]) >= 128:
        return _defocus_fft(x, params)
    return _defocus_separable(x, params)


def glass_shuffle_row(x: torch.Tensor, hh: int, delta: int, d: torch.Tensor) -> None:
    """One row ``hh`` of the original's pixel shuffle, in place, for the whole batch at once.

    The original visits the pixels of the row from right to left; pixel ``(hh, ww)`` takes the
    value its neighbour ``(hh + dy, ww + dx)`` holds at that moment (``d[j] = (dx, dy)`` per
    visited pixel ``j`` and image). Rows below were finished before and pixels on the left are
    still untouched, so only a neighbour on the same row to the right (``dy = 0, dx > 0``) holds
    a new value: a chain, resolved here by pointer doubling instead of a loop over pixels.
    """
    n, h, w = x.shape[:3]
    dev = x.device
    cols = torch.arange(w - delta, delta, -1, device=dev)     # visiting order
    m = len(cols)
    dx, dy = d[..., 0].T, d[..., 1].T                           # (n, m)
    src = x[torch.arange(n, device=dev).view(n, 1), hh + dy, cols.view(1, m) + dx]
    k = torch.arange(m, device=dev).view(1, m)
    chained = (dy == 0) & (dx > 0) & (cols.view(1, m) + dx <= w - delta)
    nxt = torch.where(chained, k - dx, k.expand(n, m))
    for _ in range(max(1, math.ceil(math.log2(max(m, 2))))):
        nxt = torch.gather(nxt, 1, nxt)
    idx = nxt.view(n, m, *([1] * (x.ndim - 3))).expand(n, m, *x.shape[3:])
    x[:, hh, cols] = torch.gather(src, 1, idx)


def glass_blur(x, params, gen):
    sigma, delta, iterations = params
    x = torch.floor(gaussian_filter(_unit(x), sigma) * 255).to(torch.uint8)
    n, h, w = x.shape[:3]
    m = len(range(w - delta, delta, -1))
    for _ in range(iterations):
        for hh in range(h - delta, delta, -1):
            # per visited pixel and image two integers (dx, dy) in [-delta, delta - 1]
            d = _randint(gen, -delta, delta, (m, n, 2), dim=1)
            glass_shuffle_row(x, hh, delta, d)
    return gaussian_filter(_unit(x), sigma).clamp(0, 1) * 255


def motion_blur(x, params, gen):
    radius, sigma = params
    angles = _uniform(gen, (x.shape[0],), -45, 45)
    return motion_blur_apply(x, radius, sigma, angles).clamp(0, 255)


def zoom_blur(x, factors):
    x = _unit(x).to(torch.float32)
    acc = torch.zeros_like(x)
    for z in factors:
        acc += clipped_zoom(x, float(z))
    out = _div(x + acc, float(len(factors) + 1))
    return out.clamp(0, 1) * 255


# ----------------------------------------------------------------------------- weather


def snow(x, params, gen):
    mean, std, zoom, threshold, blur_radius, blur_sigma, blend = params
    x = _unit(x, torch.float32)
    n, h, w = x.shape[:3]
    layer = _normal(gen, (n, h, w), mean, std)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    grey8 = torch.floor(layer.clamp(0, 1) * 255)
    angles = _uniform(gen, (n,), -135, -45)
    blurred = motion_blur_apply(grey8, blur_radius, blur_sigma, angles)
    layer = _unit(blurred.clamp(0, 255).floor()).to(torch.float32).unsqueeze(-1)
    grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).unsqueeze(-1)
    img = blend * x + (1 - blend) * torch.maximum(x, grey * 1.5 + 0.5)
    return (img + layer + torch.flip(layer, (1, 2))).clamp(0, 1) * 255


@lru_cache(maxsize=None)
def _frost_stack(scale: float, device: str):
    from snc.corruptions.functions import _frost_images

    textures = [t[..., ::-1] for t in _frost_images(scale)]  # BGR -> RGB
    th = max(t.shape[0] for t in textures)
    tw = max(t.shape[1] for t in textures)
    stack = np.zeros((len(textures), th, tw, 3), np.uint8)
    for i, t in enumerate(textures):
        stack[i, :t.shape[0], :t.shape[1]] = t
    sizes = np.array([t.shape[:2] for t in textures])
    return torch.from_numpy(stack).to(device), torch.from_numpy(sizes).to(device)


def frost(x, params, gen, scale: float):
    a, b = params
    stack, sizes = _frost_stack(float(scale), str(x.device))
    n, h, w = x.shape[:3]
    if int(sizes[:, 0].min()) <= h or int(sizes[:, 1].min()) <= w:
        raise ValueError(
            f"{h}x{w} images are larger than the frost textures at this preset's scale; "
            "use a preset made for this size")
    idx = _randint(gen, 0, len(sizes), (n,))
    u = _rand(gen, (n, 2))
    top = torch.floor(u[:, 0] * (sizes[idx, 0] - h)).long()
    left = torch.floor(u[:, 1] * (sizes[idx, 1] - w)).long()
    if x.device.type == "cpu":  # a slice per image: a copy of rows, where a gather is slow
        crop = torch.stack([stack[i, t:t + h, l_:l_ + w] for i, t, l_ in zip(
            idx.tolist(), top.tolist(), left.tolist(), strict=True)])
    else:
        r = top.view(n, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
        c = left.view(n, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
        crop = stack[idx.view(n, 1, 1), r, c]
    out = x.to(torch.float64).mul_(a)   # a x + b crop, in place
    return out.add_(crop.to(torch.float64).mul_(b)).clamp_(0, 255)


def plasma_fractal(gen, n: int, mapsize: int, wibbledecay: float, device) -> torch.Tensor:
    """:func:`snc.corruptions.functions.plasma_fractal` for ``n`` maps at once."""
    m = torch.zeros((n, mapsize, mapsize), dtype=torch.float64, device=device)
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * _uniform(gen, array.shape, -wibble, wibble)

    while stepsize >= 2:
        half = stepsize // 2
        corner = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corner + torch.roll(corner, -1, 1)
        square = square + torch.roll(square, -1, 2)
        m[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        dr = m[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ul = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        m[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        m[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def fog(x, params, gen, mapsize: int):
    strength, decay = params
    x = _unit(x)
    n, h, w = x.shape[:3]
    size = max(mapsize, 1 << int(np.ceil(np.log2(max(h, w)))))
    max_val = x.amax((1, 2, 3), keepdim=True)
    maps = plasma_fractal(gen, n, size, decay, x.device)[:, :h, :w, None]
    return ((x + strength * maps) * max_val / (max_val + strength)).clamp(0, 1) * 255


def brightness(x, c):
    hsv = rgb2hsv(_unit(x))
    hsv = torch.stack([hsv[..., 0], hsv[..., 1], (hsv[..., 2] + c).clamp(0, 1)], -1)
    return hsv2rgb(hsv).clamp(0, 1) * 255


def saturate(x, params):
    scale, shift = params
    hsv = rgb2hsv(_unit(x))
    hsv = torch.stack([hsv[..., 0], (hsv[..., 1] * scale + shift).clamp(0, 1), hsv[..., 2]], -1)
    return hsv2rgb(hsv).clamp(0, 1) * 255


# ----------------------------------------------------------------------------- digital


def contrast(x, c):
    x = _unit(x)
    means = x.mean((1, 2), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1) * 255


def _affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``cv2.getAffineTransform`` for a batch: ``(N, 3, 2)`` point sets -> ``(N, 2, 3)``."""
    ones = torch.ones(src.shape[:2] + (1,), dtype=src.dtype, device=src.device)
    a = torch.cat([src, ones], -1)                      # (N, 3, 3)
    return torch.linalg.solve(a, dst).transpose(1, 2)   # (N, 2, 3)


def _reflect_coord(c: torch.Tensor, n: int) -> torch.Tensor:
    # SciPy mode "reflect" (half-sample symmetric) folded into [-0.5, n - 0.5]
    c = torch.remainder(c + 0.5, 2 * n)
    return torch.where(c >= n, 2 * n - c, c) - 0.5


def _bilinear(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor, fold: Callable,
              quantize: bool = False) -> torch.Tensor:
    """Samples ``img`` ``(N, H, W, C)`` at ``(N, H', W')`` coordinates; ``fold`` maps integer
    indices into range (border mode)."""
    n, h, w = img.shape[:3]
    y0, x0 = torch.floor(y), torch.floor(x)
    fy, fx = y - y0, x - x0
    if quantize:  # OpenCV's 1/32-pixel interpolation weights
        fy, fx = torch.round(fy * 32) / 32, torch.round(fx * 32) / 32
    y0, x0 = y0.long(), x0.long()
    nn_ = torch.arange(n, device=img.device).view(n, 1, 1)
    ya, yb = fold(y0, h), fold(y0 + 1, h)
    xa, xb = fold(x0, w), fold(x0 + 1, w)
    fy, fx = fy.unsqueeze(-1).to(img.dtype), fx.unsqueeze(-1).to(img.dtype)
    top = img[nn_, ya, xa] * (1 - fx) + img[nn_, ya, xb] * fx
    bottom = img[nn_, yb, xa] * (1 - fx) + img[nn_, yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def _fold_reflect101(i: torch.Tensor, n: int) -> torch.Tensor:
    if n == 1:
        return torch.zeros_like(i)
    i = torch.remainder(i, 2 * n - 2)
    return torch.where(i >= n, 2 * n - 2 - i, i)


def _fold_clamp(i: torch.Tensor, n: int) -> torch.Tensor:
    return i.clamp(0, n - 1)


def elastic_transform(x, params, gen):
    alpha, sigma, affine = params
    x = _unit(x, torch.float32)
    n, h, w, c = x.shape
    dev = x.device
    center = np.float32((h, w)) // 2
    square = min(h, w) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square],
                       center - square])
    src = torch.as_tensor(pts1, dtype=torch.float64, device=dev).expand(n, 3, 2)
    jitter = _uniform(gen, (n, 3, 2), -affine, affine).to(torch.float32).to(torch.float64)
    m = _affine_from_points(src, src + jitter)          # maps (x, y) of the source to the output
    full = torch.cat([m, torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=dev)
                      .expand(n, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]                 # output (x, y) -> source (x, y)
    gy, gx = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64),
                            torch.arange(w, device=dev, dtype=torch.float64), indexing="ij")
    sx = inv[:, 0, 0, None, None] * gx + inv[:, 0, 1, None, None] * gy + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * gx + inv[:, 1, 1, None, None] * gy + inv[:, 1, 2, None, None]
    img = _bilinear(x, sy, sx, _fold_reflect101, quantize=True)
    noise = _uniform(gen, (2, n, h, w), -1, 1, dim=1)
    fields = gaussian_filter(noise, sigma, dims=(2, 3), mode="reflect", truncate=3) * alpha
    dx, dy = fields.to(torch.float32).to(torch.float64)
    yy = _reflect_coord(gy + dy, h)
    xx = _reflect_coord(gx + dx, w)
    warped = _bilinear(img.to(torch.float64), yy, xx, _fold_clamp)
    return warped.to(torch.float32).clamp(0, 1) * 255


@lru_cache(maxsize=None)
def _pil_box_coeffs(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's fixed-point BOX resampling weights (``precompute_coeffs`` and
    ``normalize_coeffs_8bpc`` of ``Resample.c``) as an ``(n_out, n_in)`` integer matrix."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    mat = np.zeros((n_out, n_in), np.float64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        k = np.zeros(xmax)
        for j in range(xmax):
            t = (j + xmin - center + 0.5) * ss
            k[j] = 1.0 if -0.5 < t <= 0.5 else 0.0
        if k.sum() != 0:
            k = k / k.sum()
        mat[xx, xmin:xmin + xmax] = np.floor(0.5 + k * (1 << 22))
    return mat


def _pil_resample_axis(x: torch.Tensor, n_out: int, dim: int) -> torch.Tensor:
    n_in = x.shape[dim]
    if n_in == n_out:
        return x
    mat, idx, w = _box_band(n_in, n_out)
    if idx.shape[1] == 1 and (w == 1 << 22).all():  # each output copies one input
        return x.index_select(dim, torch.as_tensor(idx[:, 0], device=x.device))
    if x.device.type == "cpu" and 16 * idx.shape[1] <= n_in:
        # on the CPU a matrix product costs the axis length per value, the band its width:
        # Pillow's own integer arithmetic: sums of (22-bit weight x 8-bit value) stay below
        # 2**31 (a row's weights sum to about 2**22)
        # (rows: gathered in place; columns: moved first, so whole rows are gathered)
        moved = x if dim == 1 else x.movedim(dim, 0).contiguous()
        axis = 1 if dim == 1 else 0
        index, weights = torch.as_tensor(idx), torch.as_tensor(w.astype(np.int32))
        shape = [1] * x.ndim
        shape[axis] = n_out
        size = list(moved.shape)
        size[axis] = n_out
        acc = torch.full(size, 1 << 21, dtype=torch.int32)
        for k in range(idx.shape[1]):
            acc.addcmul_(moved.index_select(axis, index[:, k]).to(torch.int32),
                         weights[:, k].view(shape))
        y = torch.bitwise_right_shift(acc, 22).clamp_(0, 255).to(torch.uint8)
        return y if dim == 1 else y.movedim(0, dim).contiguous()
    y = _apply_axis(x.to(torch.float64), torch.as_tensor(mat, device=x.device), dim)
    return torch.floor((y + (1 << 21)) / (1 << 22)).clamp(0, 255)  # exact: integers < 2**53


def pixelate(x, scale):
    n, h, w = x.shape[:3]
    small_w, small_h = int(w * scale), int(h * scale)
    # Pillow resamples horizontally, then vertically, through a uint8 image
    y = _pil_resample_axis(_pil_resample_axis(x, small_w, 2), small_h, 1)
    return _pil_resample_axis(_pil_resample_axis(y, w, 2), h, 1)


def _jpeg_roundtrip(x: torch.Tensor, quality: int, device: torch.device) -> torch.Tensor:
    import warnings

    from torchvision.io import decode_jpeg, encode_jpeg

    chw = [img.permute(2, 0, 1).contiguous() for img in x.to(device)]
    with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = [e.cpu() for e in encode_jpeg(chw, quality=int(quality))]
        decoded = decode_jpeg(encoded, device=device)
    return torch.stack([d.permute(1, 2, 0) for d in decoded])


def jpeg_compression(x, quality):
    # libjpeg on the CPU (Pillow's codec, so the values are Pillow's); nvJPEG's encoder and
    # decoder differ from it by several grey levels on most values (see the module docstring)
    return _jpeg_roundtrip(x.cpu(), quality, torch.device("cpu")).to(x.device)


# ----------------------------------------------------------------------------- spatter


def _box3(x: torch.Tensor) -> torch.Tensor:
    """Sum over the 3 x 3 neighbourhood of ``(N, H, W)`` with reflect-101 borders (OpenCV's
    default)."""
    h, w = x.shape[1:]
    p = x[:, _pad_index(h, 1, "reflect101", x.device)][:, :, _pad_index(w, 1, "reflect101",
                                                                        x.device)]
    rows = p[:, :, :-2] + p[:, :, 1:-1] + p[:, :, 2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def _canny(img: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """``cv2.Canny(img, low, high)`` (aperture 3, L1 gradient) for uint8 ``(N, H, W)``: Sobel
    with replicated borders, non-maximum suppression in OpenCV's fixed-point sectors, and
    hysteresis (weak pixels 8-connected to a strong one), iterated to convergence. Returns a
    bool edge map."""
    n, h, w = img.shape
    dev = img.device
    v = img.to(torch.int32)  # |dy| << 15 and the sector products stay below 2**31
    p = v[:, _pad_index(h, 1, "nearest", dev)][:, :, _pad_index(w, 1, "nearest", dev)]
    dx = ((p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:])
          - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2]))
    dy = ((p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:])
          - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:]))
    mag = dx.abs() + dy.abs()
    m = torch.nn.functional.pad(mag, (1, 1, 1, 1))  # neighbours outside count as 0

    def at(dr, dc):
        return m[:, 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]

    xs, ys = dx.abs(), dy.abs() << 15
    tg22x = xs * 13573                      # tan(22.5 deg) * 2**15
    tg67x = tg22x + (xs << 16)
    horizontal = ys < tg22x
    vertical = ~horizontal & (ys > tg67x)
    s = torch.where((dx ^ dy) < 0, -1, 1)
    # diagonal: neighbours (-1, -s) and (+1, +s)
    diag_a = torch.where(s < 0, at(-1, 1), at(-1, -1))
    diag_b = torch.where(s < 0, at(1, -1), at(1, 1))
    keep = torch.where(horizontal, (mag > at(0, -1)) & (mag >= at(0, 1)),
                       torch.where(vertical, (mag > at(-1, 0)) & (mag >= at(1, 0)),
                                   (mag > diag_a) & (mag > diag_b)))
    weak = keep & (mag > low)
    edge = weak & (mag > high)
    weak, edge = weak.to(torch.uint8), edge.to(torch.uint8)
    while True:  # 8 growth steps (3 x 3 dilations inside the weak pixels) between the checks
        before = edge
        for _ in range(8):
            p = torch.nn.functional.pad(edge, (1, 1, 1, 1))
            rows = torch.maximum(torch.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
            edge = torch.maximum(torch.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:]) & weak
        if torch.equal(edge, before):
            return edge > 0


# OpenCV's 5 x 5 chamfer metric for DIST_L2: 1, 1.4 and 2.1969, added in float32
_CHAMFER = [(dr, dc, c) for dr in range(-2, 3) for dc in range(-2, 3)
            for c in [{1: 1.0, 2: 1.4, 5: 2.1969}.get(dr * dr + dc * dc)] if c]


def _distance_trunc20(zero: torch.Tensor) -> torch.Tensor:
    """``min(cv2.distanceTransform(img, DIST_L2, 5), 20)`` where ``zero`` marks the zero
    pixels of ``img``: every distance is the least float32 sum of the 5 x 5 chamfer weights
    over a path from a zero pixel (the fixed point OpenCV's two raster passes reach), relaxed
    until every distance up to 20 is final (such a path has at most 20 moves)."""
    n, h, w = zero.shape
    # every value is capped at 20: a path to a distance below 20 only passes values below it
    cap = torch.tensor(20.0, dtype=torch.float32, device=zero.device)
    d = torch.where(zero, torch.zeros_like(cap), cap)
    steps = [(dr, dc, torch.tensor(c, dtype=torch.float32, device=zero.device))
             for dr, dc, c in _CHAMFER]
    for _ in range(21):
        p = torch.nn.functional.pad(d, (2, 2, 2, 2), value=20.0)
        new = d
        for dr, dc, c in steps:
            new = torch.minimum(new, p[:, 2 + dr:2 + dr + h, 2 + dc:2 + dc + w] + c)
        if torch.equal(new, d):
            break
        d = new
    return d


def _equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image of uint8 ``(N, H, W)``."""
    n = img.shape[0]
    flat = img.reshape(n, -1).to(torch.int64)
    hist = torch.zeros((n, 256), dtype=torch.int64, device=img.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    total = flat.shape[1]
    first = (hist > 0).to(torch.int64).argmax(1, keepdim=True)          # the lowest value
    low_count = torch.gather(hist, 1, first)
    scale = (torch.tensor(255.0, dtype=torch.float32, device=img.device)
             / (total - low_count).clamp(min=1).to(torch.float32))
    cum = torch.cumsum(hist, 1) - torch.cumsum(
        torch.where(torch.arange(256, device=img.device) <= first, hist, 0), 1)
    lut = torch.round(cum.to(torch.float32) * scale).clamp(0, 255)
    lut = torch.where(torch.arange(256, device=img.device) <= first, 0.0, lut)
    lut = torch.where(low_count == total, first.to(torch.float32), lut)  # one grey level
    return torch.gather(lut, 1, flat).to(torch.uint8).view(img.shape)


def _sample_spatter(gen, n, params, h, w):
    mean, std = params[:2]
    return {"liquid": _normal(gen, (n, h, w), mean, std)}


def _apply_spatter(x, params, p):
    _, _, sigma, threshold, intensity, mud = params
    img = _div(x.to(torch.float32), 255.0)
    liquid = gaussian_filter(p["liquid"], sigma, dims=(1, 2), mode="nearest")
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = (liquid > threshold).to(torch.float64)
        m = gaussian_filter(m, intensity, dims=(1, 2), mode="nearest")
        m = torch.where(m < 0.8, torch.zeros_like(m), m).unsqueeze(-1)
        colour = torch.tensor([63, 42, 20], dtype=torch.float64, device=x.device) / 255.0
        return (img * (1 - m) + colour * m).clamp(0, 1) * 255
    # numpy's float -> uint8 cast keeps the low byte of the integer part
    liquid8 = (torch.floor(liquid * 255).to(torch.int64) & 255).to(torch.uint8)
    dist = _distance_trunc20(_canny(liquid8, 50, 150))
    ninth = torch.tensor(1 / 9, dtype=torch.float32, device=x.device)
    dist = torch.floor(_box3(dist) * ninth).to(torch.uint8)            # blur, astype(uint8)
    dist = _equalize_hist(dist).to(torch.int64)
    kernel = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))
    h, w = dist.shape[1:]
    pad = dist[:, _pad_index(h, 1, "reflect101", x.device)][
        :, :, _pad_index(w, 1, "reflect101", x.device)]
    acc = torch.zeros_like(dist)
    for i in range(3):
        for j in range(3):
            if kernel[i][j]:
                acc += kernel[i][j] * pad[:, i:i + h, j:j + w]
    dist = acc.clamp(0, 255)                                             # filter2D, CV_8U
    dist = torch.round(_box3(dist).to(torch.float32) * ninth).to(torch.float32)  # 8-bit blur
    m = liquid8.to(torch.float32) * dist
    peak = m.amax((1, 2), keepdim=True)
    m = torch.where(peak > 0, m / torch.where(peak > 0, peak, 1), m)
    m = (m * intensity).unsqueeze(-1)
    colour = torch.tensor([175, 238, 238], dtype=torch.float32, device=x.device) / 255.0
    return (img + m * colour).clamp(0, 1).to(torch.float64) * 255


def spatter(x, params, gen):
    return _apply_spatter(x, params, _sample_spatter(gen, len(x), params, *x.shape[1:3]))


# ----------------------------------------------------------------------------- -C-bar
# The per-image parameters are drawn from the generator with the distributions of
# ``snc.corruptions.cbar._sample_<name>``; severity values and strengths come from ``cbar``.


def _grid(size: int, device) -> tuple:
    r, c = torch.meshgrid(torch.arange(size, dtype=torch.float64, device=device),
                          torch.arange(size, dtype=torch.float64, device=device), indexing="ij")
    return r, c


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 255).to(torch.uint8)


def _spectral_fields(gen, amplitude: torch.Tensor, n: int, count: int = 1) -> torch.Tensor:
    """``(n, count)`` fields as :func:`snc.corruptions.cbar._spectral_field`: phases of the left
    half of the spectrum uniform, the right half the left one turned by 180 degrees; real part
    of the inverse DFT, unit population std."""
    size = amplitude.shape[0]
    half = size // 2
    left = _uniform(gen, (n, count, size, half), 0, 2 * math.pi).flatten(0, 1)
    phase = torch.cat([left, torch.flip(left, (1, 2))], 2)
    spectrum = torch.polar(amplitude.expand(n * count, size, size), phase)
    spectrum = torch.roll(spectrum, (half, half), (1, 2))
    field = torch.fft.ifft2(spectrum).real
    return (field / field.std((1, 2), correction=0, keepdim=True)).view(n, count, size, size)


def _centre_distance(size: int, device) -> torch.Tensor:
    r, c = _grid(size, device)
    return torch.sqrt((r - size / 2) ** 2 + (c - size / 2) ** 2)


def blue_noise_sample(x, s, gen):
    from snc.corruptions.cbar import level

    n, size = x.shape[:2]
    field = _spectral_fields(gen, _centre_distance(size, x.device), n)[:, 0]
    return torch.where((field <= level(s, 3.0) - 2.5).unsqueeze(-1), torch.zeros_like(x), x)


def brownish_noise(x, s, gen):
    from snc.corruptions.cbar import level

    n, size = x.shape[:2]
    amplitude = 1 / (1 + _centre_distance(size, x.device) ** 2)
    noise = _spectral_fields(gen, amplitude, n, 3).permute(0, 2, 3, 1)
    return _to_uint8(x.to(torch.float64) + level(s, 64) * noise)


def single_frequency_greyscale(x, s, gen):
    from snc.corruptions.cbar import level

    n, size = x.shape[:2]
    dev = x.device
    m = _uniform(gen, (n,), -math.pi, math.pi)
    f2 = (_rand(gen, (n,)) * 2 - 1) * m.abs()
    swap = _rand(gen, (n,), dtype=torch.float32) < 0.5
    fx, fy = torch.where(swap, f2, m), torch.where(swap, m, f2)
    phase = _uniform(gen, (n,), 0, 2 * math.pi)
    r, c = _grid(size, dev)
    wave = torch.sin(c * fx.view(n, 1, 1) + r * fy.view(n, 1, 1) + phase.view(n, 1, 1))
    return _to_uint8(x.to(torch.float64) + level(s, 196) * wave.unsqueeze(-1))


def cocentric_sine_waves(x, s, gen):
    from snc.corruptions.cbar import level

    n, size = x.shape[:2]
    dev = x.device
    x0, y0 = _uniform(gen, (2, n, 1, 1), 0, size, dim=1)
    freq = _uniform(gen, (n, 1, 1), 0, 10)
    amplitude = _uniform(gen, (n, 1, 1), 0, size / 10)
    width = _uniform(gen, (n, 1, 1), 0, size / 10)
    r, c = _grid(size, dev)
    dx, dy = c - x0, r - y0
    psi = freq * torch.atan2(dx, dy)
    d = torch.sqrt(dx ** 2 + dy ** 2)
    rings = torch.remainder(d + amplitude * torch.sin(psi), width) / width - 0.5
    return _to_uint8(x.to(torch.float64) + level(s, 128) * rings.unsqueeze(-1))


def _bilinear_zero(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`snc.corruptions.cbar._bilinear` for ``(N, S, S, C)`` images at ``(N, S, S)``
    coordinates: neighbours outside count as 0, columns combined first."""
    n, h, w = img.shape[:3]
    y0, x0 = torch.floor(y), torch.floor(x)
    y1, x1 = y0 + 1, x0 + 1
    wx0, wx1 = (1 - x + x0).unsqueeze(-1), (1 - x1 + x).unsqueeze(-1)
    wy0, wy1 = (1 - y + y0).unsqueeze(-1), (1 - y1 + y).unsqueeze(-1)
    nn_ = torch.arange(n, device=img.device).view(n, 1, 1)
    src = img.to(torch.float64)

    def at(yy, xx):
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        values = src[nn_, yy.clamp(0, h - 1).long(), xx.clamp(0, w - 1).long()]
        return torch.where(inside.unsqueeze(-1), values, torch.zeros_like(values))

    top = wx0 * at(y0, x0) + wx1 * at(y0, x1)
    bottom = wx0 * at(y1, x0) + wx1 * at(y1, x1)
    return wy0 * top + wy1 * bottom


def ripple(x, s, gen):
    from snc.corruptions.cbar import level

    n, size = x.shape[:2]
    dev = x.device
    a = level(s, 0.025) * size
    lr, lc = _uniform(gen, (2, n, 1, 1), 0.1, 0.3, dim=1) * size
    pr, pc = _uniform(gen, (2, n, 1, 1), 0, 2 * math.pi, dim=1)
    r, c = _grid(size, dev)
    y = r + a * torch.sin(2 * math.pi * r / lr + pr)
    xx = c + a * torch.sin(2 * math.pi * c / lc + pc)
    return _to_uint8(_bilinear_zero(x, y, xx))


def plasma_noise(x, s, gen):
    from snc.corruptions.cbar import level

    n, size = x.shape[:2]
    dev = x.device
    tau = _uniform(gen, (n, 1, 1), 0, 6 * math.pi)
    iterations = _randint(gen, 4, 7, (n, 1, 1))
    sharp = _uniform(gen, (n, 1, 1), 0.5, 1.0)
    scale = _uniform(gen, (n, 1, 1), 0.075, 0.2) * size
    r, c = _grid(size, dev)
    px, py = c / scale, r / scale
    k0, k1, k2 = 1.0, 1.0, torch.ones_like(sharp)  # k[3] stays 0: it starts at 0, multiplied
    for i in range(int(iterations.max())):
        r0 = torch.cos(py * k0 + tau / k1) / k2
        r1 = torch.sin(px * k0 + tau / k1) / k2
        r0, r1 = r0 + 0.3 * -r1, r1 + 0.3 * r0
        live = iterations > i
        px = torch.where(live, px + r0, px)
        py = torch.where(live, py + r1, py)
        k0, k1, k2 = k0 * 1.93, k1 * 1.15, k2 * (2.25 - sharp)
    colour = torch.stack([torch.sin(px - tau), torch.sin(0.5 * (px + py + torch.sin(tau))),
                          torch.sin(py + tau)], -1)
    a = level(s, 64)
    return _to_uint8((1 - a / 255) * x.to(torch.float64) + a * colour)


# Each of the following is a sampler ``_sample_<name>(gen, n, s, size) -> dict of tensors`` (the
# distributions of ``cbar._sample_<name>`` and of its private draws) and an applier
# ``_apply_<name>(x, p)`` that follows ``cbar._apply_<name>``, so that the tests can replay the
# CPU generator's parameters through the applier.


def _sample_checkerboard_cutout(gen, n, s, size):
    from snc.corruptions.cbar import level

    # the private table has int(4 * size // h) squares a side, at most this many (h >= 0.1 size)
    most = int(4 * size // max(0.1 * size, 1))
    return {"angle": _uniform(gen, (n,), 0, 2 * math.pi),
            "scale": _uniform(gen, (n,), 0.1, 0.25) * size,
            "fraction": level(s, 1.0), "table": _rand(gen, (n, most, most))}


def _apply_checkerboard_cutout(x, p):
    n, size = x.shape[:2]
    h = p["scale"].clamp(min=1).view(n, 1, 1)
    grid = torch.floor(4 * size / h).long()     # int(4 * size // h)
    r, c = _grid(size, x.device)
    cos, sin = torch.cos(p["angle"]).view(n, 1, 1), torch.sin(p["angle"]).view(n, 1, 1)
    u = (r * cos + c * sin) / h
    v = (-r * sin + c * cos) / h
    same = torch.remainder(u, 2).long() == torch.remainder(v, 2).long()
    ui, vi = u.trunc().long(), v.trunc().long()
    ui, vi = torch.where(ui < 0, ui + grid, ui), torch.where(vi < 0, vi + grid, vi)
    active = p["table"] < p["fraction"]
    nn_ = torch.arange(n, device=x.device).view(n, 1, 1)
    cut = same & active[nn_, ui, vi]
    return torch.where(cut.unsqueeze(-1), torch.full_like(x, 128), x)


def checkerboard_cutout(x, s, gen):
    return _apply_checkerboard_cutout(x, _sample_checkerboard_cutout(gen, len(x), s, x.shape[1]))


RAYS = 200  # rays of a star are drawn from randint(50, 200)


def _star_weight(size: int, center: torch.Tensor, lengths: torch.Tensor, rays: torch.Tensor):
    """:func:`snc.corruptions.cbar._star_weight` per image: ``center`` ``(N, 2)`` (row, col),
    ``lengths`` ``(N, RAYS)`` of which the first ``rays`` ``(N,)`` are used."""
    n = len(center)
    r, c = _grid(size, center.device)
    dr, dc = r - center[:, 0].view(n, 1, 1), c - center[:, 1].view(n, 1, 1)
    rho = torch.sqrt(dr * dr + dc * dc)
    count = rays.view(n, 1, 1)
    q = (torch.atan2(dc, dr) + math.pi) / (2 * math.pi) * count
    k = q.long()
    f = q - k
    flat = lengths.view(n, -1)
    lo = torch.gather(flat, 1, (k % count).view(n, -1)).view(k.shape)
    hi = torch.gather(flat, 1, ((k + 1) % count).view(n, -1)).view(k.shape)
    return f, lo + f * (hi - lo), rho ** 2


def _star_blend(old: torch.Tensor, f, length, rho2, amount: float) -> torch.Tensor:
    gain = (length ** 2 / (rho2 + 1e-4)) ** ((100 - amount) / 50)
    w = ((1 - (f - 0.5) ** 2) * gain).clamp(0, 1).unsqueeze(-1)
    return old + w * (255 - old)   # the colour is white


def _sample_inverse_sparkles(gen, n, s, size):
    from snc.corruptions.cbar import level

    return {"center": _uniform(gen, (n, 2), 0.25, 0.75) * size, "radius": 0.25 * size,
            "rays": _randint(gen, 50, 200, (n,)), "z": _normal(gen, (n, RAYS), 0.0, 1.0),
            "amount": 100 - level(s, 65)}


def _apply_inverse_sparkles(x, p):
    radius = p["radius"]
    lengths = radius + 25 / 100 * radius * p["z"]
    f, length, rho2 = _star_weight(x.shape[1], p["center"], lengths, p["rays"])
    # color + w (img - color) = img + (1 - w) (color - img)
    gain = (length ** 2 / (rho2 + 1e-4)) ** ((100 - p["amount"]) / 50)
    w = ((1 - (f - 0.5) ** 2) * gain).clamp(0, 1).unsqueeze(-1)
    return _to_uint8(255 + w * (x.to(torch.float64) - 255))


def inverse_sparkles(x, s, gen):
    return _apply_inverse_sparkles(x, _sample_inverse_sparkles(gen, len(x), s, x.shape[1]))


def _sample_sparkles(gen, n, s, size):
    from snc.corruptions.cbar import level

    return {"centers": _uniform(gen, (n, 5, 2), 0, size), "radius": level(s, 0.1) * size,
            "rays": _randint(gen, 50, 200, (n, 5)), "z": _normal(gen, (n, 5, RAYS), 0.0, 1.0)}


def _apply_sparkles(x, p):
    radius = p["radius"]
    out = x.to(torch.float32)
    for j in range(5):  # applied one after the other, through float32 as the original
        lengths = (radius + 25 / 100 * radius * p["z"][:, j]).clamp(min=1)
        f, length, rho2 = _star_weight(x.shape[1], p["centers"][:, j], lengths, p["rays"][:, j])
        out = _star_blend(out.to(torch.float32).to(torch.float64), f, length, rho2, 50)
    return _to_uint8(out)


def sparkles(x, s, gen):
    return _apply_sparkles(x, _sample_sparkles(gen, len(x), s, x.shape[1]))


def _sample_pinch_and_twirl(gen, n, s, size):
    from snc.corruptions.cbar import level

    cells = 5 if size == 224 else 3
    signs = _randint(gen, 0, 2, (n, cells, cells)).to(torch.float64) * 2 - 1
    return {"angles": signs * level(s, math.pi / 2), "amount": level(s, 0.4) + 0.1}


def _apply_pinch_and_twirl(x, p):
    n, size = x.shape[:2]
    cells = p["angles"].shape[1]
    g = size // cells
    rho0 = g / 2
    span = cells * g  # the last size - cells * g rows and columns are never changed
    r, c = (a[:span, :span] for a in _grid(size, x.device))
    rows, cols = (r // g).long(), (c // g).long()
    twirl = p["angles"][:, cols, rows]          # angles[i][j]: column block i, row block j
    mr, mc = rows * g + rho0, cols * g + rho0
    dr, dc = r - mr, c - mc
    rho = torch.sqrt(dr * dr + dc * dc)
    moved = (rho <= rho0) & (torch.round(rho, decimals=3) != 0)
    d = rho / rho0
    t = torch.sin(math.pi * d / 2) ** (-p["amount"])
    dr2, dc2 = t * dr, t * dc
    beta = twirl * (1 - d) ** 2
    sr = mr + (dr2 * torch.cos(beta) - dc2 * torch.sin(beta))
    sc = mc + (dr2 * torch.sin(beta) + dc2 * torch.cos(beta))
    sr = torch.where(moved, sr, r).expand(n, -1, -1)
    sc = torch.where(moved, sc, c).expand(n, -1, -1)
    out = x.to(torch.float32)
    out[:, :span, :span] = _bilinear_zero(x, sr, sc).to(torch.float32)
    return _to_uint8(out)


def pinch_and_twirl(x, s, gen):
    return _apply_pinch_and_twirl(x, _sample_pinch_and_twirl(gen, len(x), s, x.shape[1]))


@lru_cache(maxsize=64)
def _zoom_matrix(size: int, factor: float) -> np.ndarray:
    """The ``(size, size)`` matrix of ``ndimage.zoom(order=3, prefilter=False)`` by ``factor``
    followed by the centre crop back to ``size``: SciPy's own 1-D zoom of the unit vectors
    (the 2-D zoom is the product of the two axes' 1-D ones)."""
    from scipy import ndimage

    cols = [ndimage.zoom(np.eye(size)[j], factor, prefilter=False) for j in range(size)]
    mat = np.stack(cols, 1)
    e = (mat.shape[0] - size) // 2
    return mat[e:e + size]


def _sample_transverse_chromatic_abberation(gen, n, s, size):
    from snc.corruptions.cbar import level

    z = level(s, 0.5)
    factors = torch.tensor([1.0, 1 + z / 2, 1 + z], dtype=torch.float64)
    perm = torch.argsort(_rand(gen, (n, 3)), 1)   # a uniform permutation per image
    return {"factors": factors, "perm": perm}


def _apply_transverse_chromatic_abberation(x, p):
    # channel ch is magnified by factors[perm[ch]]: each of the three factors zooms every
    # channel, the image keeps the one its permutation names
    size = x.shape[1]
    src = x.to(torch.float64)
    out = torch.zeros_like(src)
    for i, factor in enumerate(p["factors"].tolist()):
        mat = torch.as_tensor(_zoom_matrix(size, factor), device=x.device)
        zoomed = _apply_axis(_apply_axis(src, mat, 1), mat, 2)
        out = torch.where(p["perm"].to(x.device).view(-1, 1, 1, 3) == i, zoomed, out)
    # SciPy writes a uint8 output rounded half up and clipped
    return torch.floor(out + 0.5).clamp(0, 255).to(torch.uint8)


def transverse_chromatic_abberation(x, s, gen):
    return _apply_transverse_chromatic_abberation(
        x, _sample_transverse_chromatic_abberation(gen, len(x), s, x.shape[1]))


def _sample_perlin_noise(gen, n, s, size):
    from snc.corruptions.cbar import level

    # the private tables: 256 gradients with components (a % 512 - 256) / 256, normalised,
    # and the original's shuffle (i from 255 down to 0 swaps with randint(0, 2**31) % 256);
    # the upper halves of both tables repeat the lower ones
    v = (_randint(gen, 0, 512, (n, 256, 2)) - 256).to(torch.float64) / 256
    grads = v / torch.sqrt(v[..., 0:1] * v[..., 0:1] + v[..., 1:2] * v[..., 1:2])
    swaps = _randint(gen, 0, 256, (n, 256))
    perm = torch.arange(256, device=swaps.device).repeat(n, 1)
    rows = torch.arange(n, device=swaps.device)
    for i in range(255, -1, -1):
        j = swaps[:, 255 - i]
        a, b = perm[:, i].clone(), perm[rows, j].clone()
        perm[:, i] = b
        perm[rows, j] = a
    return {"mu": 1 / (32 * size / 224), "grads": grads, "perm": perm, "alpha": level(s, 0.5)}


def _perlin_batch(perm, grads, x, y):
    """:func:`snc.corruptions.cbar._perlin` per image (``perm`` ``(N, 256)``, ``grads``
    ``(N, 256, 2)``; the tables' upper halves are their lower ones)."""
    n = len(perm)
    tx, ty = x + 4096, y + 4096   # positive: % 256 is & 255, % 1 is the part below floor
    fx, fy = torch.floor(tx), torch.floor(ty)
    bx0, by0 = fx.long() & 255, fy.long() & 255
    bx1, by1 = (bx0 + 1) & 255, (by0 + 1) & 255
    rx0, ry0 = tx - fx, ty - fy
    rx1, ry1 = rx0 - 1, ry0 - 1
    g0, g1 = grads[..., 0].contiguous(), grads[..., 1].contiguous()

    def look(table, idx):  # table[image, idx] for every pixel, a gather per image row
        return torch.gather(table, 1, idx.reshape(n, -1)).view(idx.shape)

    i, j = look(perm, bx0), look(perm, bx1)
    b00, b10 = look(perm, (i + by0) & 255), look(perm, (j + by0) & 255)
    b01, b11 = look(perm, (i + by1) & 255), look(perm, (j + by1) & 255)
    sx = rx0 * rx0 * (3 - 2 * rx0)
    sy = ry0 * ry0 * (3 - 2 * ry0)

    def g(b, k):
        return look(g1 if k else g0, b)

    u = rx0 * g(b00, 0) + ry0 * g(b00, 1)
    v = rx1 * g(b10, 0) + ry0 * g(b10, 1)
    a1 = u + sx * (v - u)
    u = rx0 * g(b01, 0) + ry1 * g(b01, 1)
    v = rx1 * g(b11, 0) + ry1 * g(b11, 1)
    a2 = u + sx * (v - u)
    return 1.5 * (a1 + sy * (a2 - a1))


def _apply_perlin_noise(x, p):
    n, size = x.shape[:2]
    r, c = _grid(size, x.device)
    mu = p["mu"]
    xs = (mu * r + 0.0 * c).expand(n, -1, -1)
    ys = (0.0 * r + mu * c).expand(n, -1, -1)
    turbulence = torch.zeros_like(xs)
    f = 1.0
    while f <= 16.0:
        turbulence = turbulence + torch.abs(_perlin_batch(p["perm"], p["grads"], f * xs,
                                                          f * ys)) / f
        f *= 2
    value = (0.5 * turbulence + 0.5).clamp(0, 1)
    alpha = float(p["alpha"])
    blend = ((1 - alpha) * x.to(torch.float32)).to(torch.float64)
    return _to_uint8(blend + 255 * alpha * value.unsqueeze(-1))


def perlin_noise(x, s, gen):
    return _apply_perlin_noise(x, _sample_perlin_noise(gen, len(x), s, x.shape[1]))


def _sample_caustic_refraction(gen, n, s, size):
    from snc.corruptions.cbar import level

    return {"time": _uniform(gen, (n,), 0.5, 2.0), "size": _uniform(gen, (n,), 0.75, 1.25) * size,
            "eta": 4.0, "lens_scale": level(s, 0.5 * size), "lighting_amount": level(s, 2.0),
            "softening": 1}


def _caustic_fields(size: int, time: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
    n = len(time)
    time, tile = time.view(n, 1, 1), tile.view(n, 1, 1)
    r, c = _grid(size, time.device)
    q0 = torch.remainder(r / tile, 1) * 6.28318530718 - 250
    q1 = torch.remainder(c / tile, 1) * 6.28318530718 - 250
    j0, j1 = q0, q1
    acc = torch.ones_like(q0)
    for k in range(5):
        t = time * (1 - 3.5 / (k + 1))
        j0, j1 = (q0 + (torch.cos(t - j0) + torch.sin(t + j1)),
                  q1 + (torch.sin(t - j1) + torch.cos(t + j0)))
        a = q0 / (torch.sin(j0 + t) / 0.005)
        b = q1 / (torch.cos(j1 + t) / 0.005)
        acc = acc + 1 / torch.sqrt(a * a + b * b)
    acc = acc / 5
    v = 1.17 - acc ** 1.4
    return (torch.abs(v) ** 8).clamp(0, 1)


def _apply_caustic_refraction(x, p):
    n, size = x.shape[:2]
    field = _caustic_fields(size, p["time"].to(x.device), p["size"].to(x.device))
    # SciPy filters the three equal channels too (reflect borders), as the original
    smooth = gaussian_filter(field.unsqueeze(-1).expand(n, size, size, 3), p["softening"],
                             dims=(1, 2, 3), mode="reflect")
    luma = 0.2126 * smooth[..., 0] + 0.7152 * smooth[..., 1] + 0.0722 * smooth[..., 2]
    padded = torch.nn.functional.pad(luma, (1, 1, 1, 1))
    north, south = padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]
    west, east = padded[:, :-2, 1:-1], padded[:, 2:, 1:-1]
    gr, gc = east - west, south - north
    norm = torch.sqrt(gr * gr + gc * gc + 1)
    nr, nc, nz = gr / norm, gc / norm, 1 / norm
    flat = torch.abs(nz) >= 1 - 1e-3
    theta = torch.arccos(nz)
    theta_r = torch.arcsin(torch.sin(theta) / p["eta"])
    sin_t = torch.sin(theta)
    wr = torch.cos(theta_r) * nr + torch.sin(theta_r) * (0 - nz * nr) / sin_t
    wc = torch.cos(theta_r) * nc + torch.sin(theta_r) * (0 - nz * nc) / sin_t
    zero = torch.zeros_like(wr)
    dr = torch.where(flat, zero, torch.round(p["lens_scale"] * wr, decimals=3))
    dc = torch.where(flat, zero, torch.round(p["lens_scale"] * wc, decimals=3))
    r, c = _grid(size, x.device)
    sampled = _bilinear_zero(_div(x.to(torch.float32), 255.0), r + dr, c + dc)
    light = p["lighting_amount"]
    value = (sampled + (light * (north - south)).unsqueeze(-1)
             + (light * (east - west)).unsqueeze(-1))
    return (255 * value.clamp(0, 1)).to(torch.uint8)


def caustic_refraction(x, s, gen):
    return _apply_caustic_refraction(x, _sample_caustic_refraction(gen, len(x), s, x.shape[1]))


@lru_cache(maxsize=8)
def _spline_prefilter(size: int) -> np.ndarray:
    """The ``(size, size)`` matrix of SciPy's cubic spline prefilter along one axis (mode
    ``constant``, as ``ndimage.rotate`` uses): SciPy's own filter of the unit vectors."""
    from scipy import ndimage

    return ndimage.spline_filter1d(np.eye(size), 3, axis=0, mode="constant")


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


@lru_cache(maxsize=16)
def _circular_blur_operator(size: int, amount: float) -> tuple:
    """The weighted mean of the 21 rotations of ``cbar._apply_circular_motion_blur`` as one
    sparse ``(size^2, size^2)`` operator on cubic spline coefficients: each rotation is
    ``ndimage.rotate(reshape=False)`` (order 3, mode ``constant``): the source of output pixel
    ``o`` is ``R o + offset``, sampled with the 4 x 4 cubic B-spline taps, indices folded as a
    mirror, and 0 where the source lies outside the image. Returns (indices, values)."""
    from scipy import special

    o_r, o_c = (a.ravel() for a in np.meshgrid(np.arange(size), np.arange(size), indexing="ij"))
    centre = (size - 1) / 2
    rows, cols, vals = [], [], []
    total = 0.0
    for i in range(21):
        tau = 2 * i / 20 - 1
        w = float(np.exp(-2 * tau ** 2))
        total += w
        angle = tau * amount
        c, s = special.cosdg(angle), special.sindg(angle)
        off_r = centre - (c * centre + s * centre)
        off_c = centre - (-s * centre + c * centre)
        yr = c * o_r + s * o_c + off_r
        xc = -s * o_r + c * o_c + off_c
        inside = (yr >= 0) & (yr <= size - 1) & (xc >= 0) & (xc <= size - 1)
        y0, x0 = np.floor(yr).astype(np.int64), np.floor(xc).astype(np.int64)
        for a in range(-1, 3):
            wy = _bspline3(yr - (y0 + a))
            iy = _pad_fold_mirror(y0 + a, size)
            for b in range(-1, 3):
                wx = _bspline3(xc - (x0 + b))
                ix = _pad_fold_mirror(x0 + b, size)
                keep = inside
                rows.append(np.flatnonzero(keep))
                cols.append((iy * size + ix)[keep])
                vals.append(w * (wy * wx)[keep])
    from scipy import sparse

    mat = sparse.coo_matrix((np.concatenate(vals) / total,
                             (np.concatenate(rows), np.concatenate(cols))),
                            shape=(size * size, size * size)).tocsr()
    mat.sum_duplicates()
    return mat.indptr, mat.indices, mat.data


def _pad_fold_mirror(i: np.ndarray, n: int) -> np.ndarray:
    i = np.mod(i, 2 * n - 2)
    return np.where(i >= n, 2 * n - 2 - i, i)


def _apply_circular_motion_blur(x, amount: float):
    n, size = x.shape[:2]
    unit = _div(x.to(torch.float32), 255.0).to(torch.float64)
    pre = torch.as_tensor(_spline_prefilter(size), device=x.device)
    coef = _apply_axis(_apply_axis(unit, pre, 1), pre, 2)          # (N, S, S, 3)
    indptr, indices, data = _circular_blur_operator(size, float(amount))
    rows = np.repeat(np.arange(size * size), np.diff(indptr))
    op = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, indices]), device=x.device),
                                 torch.as_tensor(data, device=x.device), (size * size, size * size),
                                 device=x.device, is_coalesced=True, check_invariants=True)
    flat = coef.permute(1, 2, 0, 3).reshape(size * size, n * 3)
    out = torch.sparse.mm(op, flat).reshape(size, size, n, 3).permute(2, 0, 1, 3)
    return (255 * out).clamp(0, 255).to(torch.uint8)


def circular_motion_blur(x, s, gen):
    from snc.corruptions.cbar import level

    return _apply_circular_motion_blur(x, level(s, 15))


def _sample_lines(gen, n, s, size):
    from snc.corruptions.cbar import level

    count = int(level(s, 1.0) * size)
    return {"angle": _uniform(gen, (n,), 0, 2 * math.pi),
            "angle_variation": _uniform(gen, (n,), 0.1, 1.0),
            # per line: a, b and the angle's uniform draw, in the original's order
            "draws": _rand(gen, (n, count, 3)), "length": 1.0}


def _line_aa_batch(r0, c0, r1, c1):
    """:func:`snc.corruptions.lines.line_aa` for many segments at once (int64 tensors of one
    shape ``L``): the same error stepping, all segments in lock step. Returns ``rows``,
    ``cols``, ``val`` (coverage) and ``order`` of every emitted pixel, ``(K, L)`` each, with
    ``emitted`` marking the real ones (order: the position in the segment's drawing order)."""
    dc, dr = (c0 - c1).abs(), (r0 - r1).abs()
    sign_c = torch.where(c0 < c1, 1, -1)
    sign_r = torch.where(r0 < r1, 1, -1)
    ed = torch.where(dc + dr == 0, torch.ones_like(dc, dtype=torch.float64),
                     torch.sqrt((dc * dc + dr * dr).to(torch.float64)))
    err = dc - dr
    r, c = r0.clone(), c0.clone()
    live = torch.ones_like(r0, dtype=torch.bool)
    out = []
    step = 0
    while bool(live.any()):
        out.append((r, c, 1.0 - (err - dc + dr).abs() / ed, live, 3 * step))
        err_p, c_p = err, c
        first = live & (2 * err_p >= -dc)
        stop1 = first & (c == c1)
        go1 = first & ~stop1
        out.append((r + sign_r, c, 1.0 - (err_p + dr).abs() / ed, go1 & (err_p + dr < ed),
                    3 * step + 1))
        err = torch.where(go1, err - dr, err)
        c = torch.where(go1, c + sign_c, c)
        second = live & ~stop1 & (2 * err_p <= dr)
        stop2 = second & (r == r1)
        go2 = second & ~stop2
        out.append((r, c_p + sign_c, 1.0 - (dc - err_p).abs() / ed, go2 & (dc - err_p < ed),
                    3 * step + 2))
        err = torch.where(go2, err + dc, err)
        r = torch.where(go2, r + sign_r, r)
        live = live & ~stop1 & ~stop2
        step += 1
    rows, cols, val, emitted = (torch.stack([o[k] for o in out]) for k in range(4))
    order = torch.tensor([o[4] for o in out], device=r0.device)
    order = order.view(-1, *([1] * r0.ndim)).expand_as(rows)
    return rows, cols, val, emitted, order


def _apply_lines(x, p):
    n, size = x.shape[:2]
    count = p["draws"].shape[1]
    if count == 0:  # small images at a low severity: no line (as the original)
        return x.clone()
    half = p["length"] * size
    a, b = size * p["draws"][..., 0], size * p["draws"][..., 1]
    alpha = (p["angle"].view(n, 1)
             + 2 * math.pi * p["angle_variation"].view(n, 1) * (p["draws"][..., 2] - 0.5))
    cos, sin = torch.cos(alpha), torch.sin(alpha)
    # int(): truncation toward zero
    rows, cols, val, emitted, order = _line_aa_batch(
        (a - half * cos).trunc().long(), (b - half * sin).trunc().long(),
        (a + half * cos).trunc().long(), (b + half * sin).trunc().long())   # (K, N, count)
    keep = emitted & (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    image = torch.arange(n, device=x.device).view(1, n, 1).expand_as(rows)
    pixel = image * size * size + rows.clamp(0, size - 1) * size + cols.clamp(0, size - 1)
    out = x.clone()
    for j in range(count):  # one line after the other, through uint8 as the original
        k, idx, v = keep[:, :, j], pixel[:, :, j], val[:, :, j]
        # a pixel drawn twice keeps its last coverage (numpy's fancy assignment)
        last = torch.full((n * size * size,), -1, dtype=torch.long, device=x.device)
        last.scatter_reduce_(0, idx[k], order[:, :, j][k], "amax")
        win = k & (order[:, :, j] == last[idx])
        cover = torch.zeros(n * size * size, dtype=torch.float64, device=x.device)
        cover[idx[win]] = v[win]
        drawn = torch.zeros(n * size * size, dtype=torch.bool, device=x.device)
        drawn[idx[win]] = True
        cover, drawn = cover.view(n, size, size, 1), drawn.view(n, size, size, 1)
        blended = ((1 - cover) * out.to(torch.float64) + cover * 128).to(torch.uint8)
        out = torch.where(drawn, blended, out)
    return out


def lines(x, s, gen):
    return _apply_lines(x, _sample_lines(gen, len(x), s, x.shape[1]))


CBAR_BATCHED: Dict[str, Callable] = {
    "ripple": ripple, "plasma_noise": plasma_noise,
    "blue_noise_sample": blue_noise_sample, "brownish_noise": brownish_noise,
    "single_frequency_greyscale": single_frequency_greyscale,
    "cocentric_sine_waves": cocentric_sine_waves,
    "checkerboard_cutout": checkerboard_cutout, "inverse_sparkles": inverse_sparkles,
    "sparkles": sparkles, "pinch_and_twirl": pinch_and_twirl,
    "transverse_chromatic_abberation": transverse_chromatic_abberation,
    "perlin_noise": perlin_noise, "caustic_refraction": caustic_refraction,
    "circular_motion_blur": circular_motion_blur, "lines": lines,
}


# ----------------------------------------------------------------------------- dispatch

DETERMINISTIC: Dict[str, Callable] = {
    "brightness": brightness, "contrast": contrast, "saturate": saturate, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression, "defocus_blur": defocus_blur,
    "gaussian_blur": gaussian_blur, "zoom_blur": zoom_blur,
}
RANDOM: Dict[str, Callable] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise, "motion_blur": motion_blur, "glass_blur": glass_blur,
    "snow": snow, "elastic_transform": elastic_transform, "spatter": spatter,
}
BATCHED = tuple(DETERMINISTIC) + tuple(RANDOM) + ("frost", "fog") + tuple(CBAR_BATCHED)


def is_batched(name: str) -> bool:
    """Whether ``name`` has a batched tensor implementation (every -C and -C-bar corruption
    has one)."""
    return name in BATCHED


def _stack(images: Images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    images = list(images)
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) > 1:
        raise ValueError(
            f"corrupt_batch needs images of one size, got {len(shapes)} sizes "
            f"({', '.join(str(s) for s in sorted(shapes)[:3])}...); resize them to one size "
            "first, or use the folder (ImageNet-C) layout, which corrupts them image by image")
    if not images:
        raise ValueError("corrupt_batch got no images")
    return torch.stack(images)


def corrupt_batch(
    images: Images,
    name: str,
    severity: int,
    generator: Union[torch.Generator, RandomBlocks, None] = None,
    *,
    preset: str = "cifar",
) -> torch.Tensor:
    """Applies corruption ``name`` at ``severity`` to a batch of images on their device.

    Args:
        images: uint8 ``(N, H, W, 3)`` RGB tensor (or a sequence of ``(H, W, 3)`` tensors of
            one size), on any device.
        name: a -C corruption name (:data:`snc.corruptions.ALL_CORRUPTIONS`) or a -C-bar name.
        severity: 1 to 5.
        generator: the random stream, on the images' device (default: seeded with 0): a
            ``torch.Generator`` (the whole batch draws from it, so the draws depend on the
            batch), or a :class:`RandomBlocks` (per-block streams: each image's draws are the
            same in any batch; what :func:`corrupt_in_batches` uses).
        preset: the parameter table (``cifar``, ``tinyimagenet``, ``imagenet``), as
            :func:`snc.corruptions.corrupt`.

    Returns:
        uint8 ``(N, H, W, 3)`` on the images' device.

    Raises:
        ValueError: unknown name/severity/preset, a non-uint8 or non-RGB input, images of
            several sizes, or a generator on another device.
    """
    from snc.corruptions import check_corruption

    check_corruption(name, preset)
    severity = int(severity)
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    x = _stack(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"corrupt_batch takes uint8 (N, H, W, 3) RGB images, got {x.dtype} "
                         f"{tuple(x.shape)}")
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    if torch.device(generator.device).type != x.device.type:
        raise ValueError(f"the generator is on {generator.device}, the images on {x.device}; "
                         "create it with torch.Generator(device=images.device)")
    if isinstance(generator, RandomBlocks) and generator.n != len(x):
        raise ValueError(f"the RandomBlocks stream covers {generator.n} images, the batch has "
                         f"{len(x)}; create it with n=len(images)")
    if len(x) == 0:
        return x.clone()
    if name in CBAR_BATCHED:
        from snc.corruptions.cbar import severity_value

        if x.shape[1] != x.shape[2] or x.shape[1] % 2:
            raise ValueError(f"-C-bar corruptions take square images of an even side, got "
                             f"{tuple(x.shape)}")
        return CBAR_BATCHED[name](x, severity_value(name, severity, preset), generator)
    table = PARAMS[preset]
    p = table[name][severity - 1]
    if name in DETERMINISTIC:
        out = DETERMINISTIC[name](x, p)
    elif name == "frost":
        out = frost(x, p, generator, table["frost_scale"])
    elif name == "fog":
        out = fog(x, p, generator, table["fog_mapsize"])
    else:
        out = RANDOM[name](x, p, generator)
    # values are in [0, 255]: truncation, as the CPU path's uint8 cast
    return out if out.dtype == torch.uint8 else out.to(torch.uint8)


# ----------------------------------------------------------------------------- set generation


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU raises."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available; use --device cpu "
                         "(the exact per-image generator) or auto")
    return dev


def corrupt_in_batches(images: np.ndarray, name: str, severity: int, *, seed: int,
                       device: torch.device, preset: str = "cifar", batch_size: int = 500,
                       first: int = 0) -> np.ndarray:
    """Corrupts uint8 ``(N, H, W, 3)`` NumPy images on ``device``, ``batch_size`` at a time.

    The random draws come from :class:`RandomBlocks`: per block of :data:`BLOCK` images of the
    set, one generator seeded from ``(seed, block index)``, so the result is the same for any
    ``batch_size`` (and under the out-of-memory halving), and a part of a set corrupted alone,
    with ``first`` its index in the set, equals that part of the whole set. Batches hold whole
    blocks when ``batch_size`` is at least a block (it is rounded down to a multiple of
    :data:`BLOCK`); smaller batches draw for the whole block and keep their rows.

    A CUDA out-of-memory error retries the batch with half the size (logged); the new size is
    kept for the rest of the call.
    """
    device = torch.device(device)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out = np.empty_like(images)
    batch = _whole_blocks(int(batch_size))
    start = 0
    while start < len(images):
        # the batch ends on a block boundary of the set where it can
        end = min(len(images), start + batch)
        if batch >= BLOCK and (first + end) % BLOCK and end < len(images):
            end = max(start + 1, (first + end) // BLOCK * BLOCK - first)
        part = torch.from_numpy(np.ascontiguousarray(images[start:end])).to(device)
        stream = RandomBlocks(seed, first + start, len(part), device)
        try:
            result = corrupt_batch(part, name, severity, stream, preset=preset)
        except torch.cuda.OutOfMemoryError:
            size = len(part)
            del part, stream
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if size == 1:
                raise
            batch = _whole_blocks(size // 2)
            log.warning("%s severity %d: out of memory on %s; retrying with batches of %d",
                        name, severity, device, batch)
            continue
        out[start:start + len(result)] = result.cpu().numpy()
        start += len(result)
    return out


def _whole_blocks(size: int) -> int:
    return size // BLOCK * BLOCK if size >= BLOCK else size
