"""The 19 corruption functions, batched: ``(N, H, W, 3)`` uint8 RGB in, float in [0, 255] out.

Each function re-implements the algorithm of the original generator (Hendrycks & Dietterich,
ICLR 2019; hendrycks/robustness @ 8190fe3, ``ImageNet-C/create_c/make_*_c.py``) on NumPy, SciPy,
OpenCV and Pillow only: scikit-image's ``gaussian``, ``random_noise`` and HSV conversions are
reproduced with their defaults, and ImageMagick's motion blur by :mod:`.motion`. The caller casts
the result to uint8 by truncation, as the original drivers do.

Randomness: every function with random draws takes a ``numpy.random.Generator`` and draws
independently per image, in the original's order for that image (the original uses NumPy's
legacy global generator, so streams are not bit-identical; distributions are).
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from snc.corruptions.motion import motion_blur_kernel_apply

FROST_DIR = Path(__file__).parent / "frost"
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


# ----------------------------------------------------------------------------- helpers


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def _gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0,
              channel_axis: bool = True) -> np.ndarray:
    """scikit-image ``filters.gaussian`` defaults on float input, batched over axis 0.

    ``x``: ``(N, H, W, C)`` (``channel_axis=True``) or ``(N, H, W)``.
    """
    sig = (0, sigma, sigma, 0) if channel_axis else (0, sigma, sigma)
    return ndimage.gaussian_filter(x, sig, mode=mode, truncate=truncate)


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """scikit-image ``color.rgb2hsv`` on ``(..., 3)`` float arrays."""
    arr = rgb.astype(np.float64)
    out = np.empty_like(arr)
    out_v = arr.max(-1)
    delta = np.ptp(arr, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_s = delta / out_v
        out_s[delta == 0.0] = 0.0
        idx = arr[..., 0] == out_v
        out[idx, 0] = (arr[idx, 1] - arr[idx, 2]) / delta[idx]
        idx = arr[..., 1] == out_v
        out[idx, 0] = 2.0 + (arr[idx, 2] - arr[idx, 0]) / delta[idx]
        idx = arr[..., 2] == out_v
        out[idx, 0] = 4.0 + (arr[idx, 0] - arr[idx, 1]) / delta[idx]
        out_h = (out[..., 0] / 6.0) % 1.0
    out_h[delta == 0.0] = 0.0
    out[..., 0] = out_h
    out[..., 1] = out_s
    out[..., 2] = out_v
    out[np.isnan(out)] = 0
    return out


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """scikit-image ``color.hsv2rgb`` on ``(..., 3)`` float arrays."""
    arr = hsv.astype(np.float64)
    hi = np.floor(arr[..., 0] * 6)
    f = arr[..., 0] * 6 - hi
    p = arr[..., 2] * (1 - arr[..., 1])
    q = arr[..., 2] * (1 - f * arr[..., 1])
    t = arr[..., 2] * (1 - (1 - f) * arr[..., 1])
    v = arr[..., 2]
    hi = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    return np.choose(hi, np.stack([
        np.stack((v, t, p), axis=-1),
        np.stack((q, v, p), axis=-1),
        np.stack((p, v, t), axis=-1),
        np.stack((p, q, v), axis=-1),
        np.stack((t, p, v), axis=-1),
        np.stack((v, p, q), axis=-1),
    ]))


def clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Zoom into the centre of ``img`` (``(H, W, ...)``) and trim back to ``H x W``, as the
    original ``clipped_zoom``. (Zooming a whole batch at once with a unit factor on the batch
    axis gives the same values but is slower: SciPy still interpolates along that axis.)"""
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    zoom = (zoom_factor, zoom_factor) + (1,) * (img.ndim - 2)
    img = ndimage.zoom(img[top:top + ch, top:top + ch], zoom, order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim:trim + h, trim:trim + h]


# ----------------------------------------------------------------------------- noise


def gaussian_noise(x, sigma, rng):
    x = _unit(x)
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = np.clip(x[i] + rng.normal(size=x.shape[1:], scale=sigma), 0, 1)
    return out * 255


def shot_noise(x, c, rng):
    x = _unit(x)
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = np.clip(rng.poisson(x[i] * c) / c, 0, 1)
    return out * 255


def impulse_noise(x, amount, rng):
    """scikit-image ``random_noise(mode="s&p", amount)``: salt or pepper with probability 1/2."""
    x = _unit(x)
    out = x.copy()
    for i in range(len(x)):
        flipped = rng.random(x.shape[1:]) < amount
        salted = rng.random(x.shape[1:]) < 0.5
        out[i][flipped & salted] = 1.0
        out[i][flipped & ~salted] = 0.0
    return np.clip(out, 0, 1) * 255


def speckle_noise(x, sigma, rng):
    x = _unit(x)
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = np.clip(x[i] + x[i] * rng.normal(size=x.shape[1:], scale=sigma), 0, 1)
    return out * 255


# ----------------------------------------------------------------------------- blur


def gaussian_blur(x, sigma):
    return np.clip(_gaussian(_unit(x), sigma), 0, 1) * 255


def glass_blur(x, params, rng):
    sigma, delta, iterations = params
    x = np.uint8(_gaussian(_unit(x), sigma) * 255)  # truncating cast, as the original
    n, h, w = x.shape[:3]
    rows = np.arange(n)
    for _ in range(iterations):
        for hh in range(h - delta, delta, -1):
            for ww in range(w - delta, delta, -1):
                # two integers (dx, dy) per visited pixel and image, in [-delta, delta - 1]
                d = rng.integers(-delta, delta, size=(n, 2))
                # The original writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on NumPy views:
                # the right-hand side aliases, so (h, w) takes its neighbour's pixel and the
                # neighbour keeps its own. That copy, not a swap, is what the published sets hold.
                x[rows, hh, ww] = x[rows, hh + d[:, 1], ww + d[:, 0]]
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


@lru_cache(maxsize=None)
def _disk(radius: float, alias_blur: float) -> np.ndarray:
    if radius <= 8:
        grid = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        grid = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(x, params):
    kernel = _disk(*params)
    x = _unit(x)
    out = np.empty_like(x)
    for i in range(len(x)):
        for ch in range(3):
            out[i, ..., ch] = cv2.filter2D(x[i, ..., ch], -1, kernel)
    return np.clip(out, 0, 1) * 255


def motion_blur(x, params, rng):
    radius, sigma = params
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(len(x)):
        angle = rng.uniform(-45, 45)
        out[i] = motion_blur_kernel_apply(x[i], radius, sigma, angle)
    return np.clip(out, 0, 255)


def zoom_blur(x, factors: Sequence[float]):
    x = (x / 255.0).astype(np.float32)
    out = np.empty_like(x)
    for i in range(len(x)):
        acc = np.zeros_like(x[i])
        for z in factors:
            acc += clipped_zoom(x[i], z)
        out[i] = (x[i] + acc) / (len(factors) + 1)
    return np.clip(out, 0, 1) * 255


# ----------------------------------------------------------------------------- weather


def snow(x, params, rng):
    mean, std, zoom, threshold, blur_radius, blur_sigma, blend = params
    x = np.asarray(x, dtype=np.float32) / 255.0
    n, h, w = x.shape[:3]
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(n):
        layer = rng.normal(size=(h, w), loc=mean, scale=std)
        layer = clipped_zoom(layer[..., np.newaxis], zoom)
        layer[layer < threshold] = 0
        grey8 = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
        angle = rng.uniform(-135, -45)
        blurred = motion_blur_kernel_apply(grey8, blur_radius, blur_sigma, angle)
        layer = (np.clip(blurred, 0, 255).astype(np.uint8) / 255.0)[..., np.newaxis]
        img = x[i]
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
        img = blend * img + (1 - blend) * np.maximum(img, grey * 1.5 + 0.5)
        out[i] = np.clip(img + layer + np.rot90(layer, k=2), 0, 1)
    return out * 255


@lru_cache(maxsize=None)
def _frost_images(scale: float):
    images = []
    for name in FROST_FILES:
        img = cv2.imread(str(FROST_DIR / name))  # BGR, alpha dropped
        if img is None:
            raise FileNotFoundError(f"frost texture {FROST_DIR / name} is missing from the package")
        if scale != 1.0:
            img = cv2.resize(img, (0, 0), fx=scale, fy=scale)
        images.append(img)
    return images


def frost(x, params, rng, scale: float):
    a, b = params
    textures = _frost_images(scale)
    n, h, w = x.shape[:3]
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(n):
        tex = textures[int(rng.integers(5))]
        if tex.shape[0] <= h or tex.shape[1] <= w:
            raise ValueError(
                f"{h}x{w} images are larger than the frost textures at this preset's scale "
                f"({tex.shape[0]}x{tex.shape[1]}); use a preset made for this size"
            )
        top = int(rng.integers(0, tex.shape[0] - h))
        left = int(rng.integers(0, tex.shape[1] - w))
        crop = tex[top:top + h, left:left + w][..., [2, 1, 0]]
        out[i] = np.clip(a * x[i].astype(np.float64) + b * crop, 0, 255)
    return out


def plasma_fractal(rng, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square plasma fractal in [0, 1], as the original ``plasma_fractal``."""
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of two"
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        # squares
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        # diamonds
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x, params, rng, mapsize: int):
    strength, decay = params
    x = _unit(x)
    n, h, w = x.shape[:3]
    size = max(mapsize, 1 << int(np.ceil(np.log2(max(h, w)))))
    out = np.empty_like(x)
    for i in range(n):
        img = x[i]
        max_val = img.max()
        img = img + strength * plasma_fractal(rng, size, decay)[:h, :w][..., np.newaxis]
        out[i] = np.clip(img * max_val / (max_val + strength), 0, 1)
    return out * 255


def brightness(x, c):
    hsv = rgb2hsv(_unit(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


# ----------------------------------------------------------------------------- digital


def contrast(x, c):
    x = _unit(x)
    means = np.mean(x, axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(x, params, rng):
    alpha, sigma, affine = params
    x = np.asarray(x, dtype=np.float32) / 255.0
    n, h, w, c = x.shape
    out = np.empty(x.shape, dtype=np.float32)
    center = np.float32((h, w)) // 2
    square = min(h, w) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square],
                       center - square])
    yy, xx, zz = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    for i in range(n):
        pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
        m = cv2.getAffineTransform(pts1, pts2)
        img = cv2.warpAffine(x[i], m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        fields = []
        for _ in range(2):
            noise = rng.uniform(-1, 1, size=(h, w))
            fields.append((ndimage.gaussian_filter(noise, sigma, mode="reflect", truncate=3)
                           * alpha).astype(np.float32)[..., np.newaxis])
        dx, dy = fields
        coords = (np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)),
                  np.reshape(zz, (-1, 1)))
        warped = ndimage.map_coordinates(img, coords, order=1, mode="reflect")
        out[i] = np.clip(warped.reshape(h, w, c), 0, 1)
    return out * 255


def pixelate(x, scale):
    n, h, w = x.shape[:3]
    out = np.empty_like(x)
    for i in range(n):
        img = Image.fromarray(x[i])
        img = img.resize((int(w * scale), int(h * scale)), Image.BOX)
        out[i] = np.asarray(img.resize((w, h), Image.BOX))
    return out


def jpeg_compression(x, quality):
    out = np.empty_like(x)
    for i in range(len(x)):
        buf = io.BytesIO()
        Image.fromarray(x[i]).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def spatter(x, params, rng):
    mean, std, sigma, threshold, intensity, mud = params
    x = np.asarray(x, dtype=np.float32) / 255.0
    n, h, w = x.shape[:3]
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(n):
        img = x[i]
        liquid = rng.normal(size=(h, w), loc=mean, scale=std)
        liquid = ndimage.gaussian_filter(liquid, sigma, mode="nearest", truncate=4.0)
        liquid[liquid < threshold] = 0
        if not mud:
            liquid8 = (liquid * 255).astype(np.uint8)
            dist = 255 - cv2.Canny(liquid8, 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
            dist = cv2.filter2D(dist, cv2.CV_8U, ker)
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)
            m = liquid8 * dist
            peak = np.max(m)
            m = m / peak if peak > 0 else m
            m = (m * intensity)[..., np.newaxis]
            color = np.array([175, 238, 238], dtype=np.float32) / 255.0
            out[i] = np.clip(img + m * color, 0, 1)
        else:
            m = np.where(liquid > threshold, 1, 0).astype(np.float32)
            m = ndimage.gaussian_filter(m.astype(np.float64), intensity, mode="nearest",
                                        truncate=4.0)
            m[m < 0.8] = 0
            color = np.array([63, 42, 20], dtype=np.float64) / 255.0 * m[..., np.newaxis]
            out[i] = np.clip(img * (1 - m[..., np.newaxis]) + color, 0, 1)
    return out * 255


def saturate(x, params):
    scale, shift = params
    hsv = rgb2hsv(_unit(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255
