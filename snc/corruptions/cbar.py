"""The -C-bar corruptions: CIFAR-10-C-bar and ImageNet-C-bar (Mintun, Kirillov & Xie, "On
Interaction Between Augmentations and Corruptions in Natural Corruption Robustness", NeurIPS 2021).

Fifteen distinct corruptions, ten per benchmark (five shared), re-implemented in vectorised NumPy
from the behaviour of the original code (facebookresearch/augmentation-corruption @ ba4d5a5,
``imagenet_c_bar/``) as described in the project's reference (``shared/reference/cbar_vectors``):

    from snc.corruptions.cbar import corrupt_bar
    out = corrupt_bar(images, "ripple", 3, "cifar", rng=np.random.RandomState(0))

With ``rng=np.random.RandomState(0)`` (the legacy stream the original draws from after
``np.random.seed(0)``) the outputs equal the reference outputs byte for byte.

Conventions of the original kept here:

* a corruption is built for a severity *value* ``s`` (the csv number, not the level 1-5) and a
  side ``S``; every strength is :func:`level` ``(s, M) = s * M / 10``;
* per image, in image order, a fixed number of draws from the legacy global generator
  (:func:`sample_params`); corruptions that need many numbers draw one seed with
  ``randint(0, 2**32)`` and use a private ``RandomState(seed)`` (inside :func:`apply_params`);
* arithmetic in float64 (float32 where the original casts), then clip to [0, 255] and cast to
  uint8 by truncation.

Each corruption is a ``_sample_<name>(rng, s, S) -> params`` / ``_apply_<name>(img, p) -> uint8``
pair; the parameter dicts use the original's field names, so recorded parameters can be replayed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Dict, NamedTuple, Tuple

import numpy as np
from scipy import fftpack, ndimage

from snc.corruptions.lines import line_aa

# Benchmark -> corruption names, in the order of the original csv files.
CBAR: Dict[str, Tuple[str, ...]] = {
    "cifar": (
        "blue_noise_sample", "checkerboard_cutout", "inverse_sparkles", "pinch_and_twirl",
        "ripple", "brownish_noise", "circular_motion_blur", "lines", "sparkles",
        "transverse_chromatic_abberation",
    ),
    "imagenet": (
        "caustic_refraction", "inverse_sparkles", "sparkles", "perlin_noise",
        "blue_noise_sample", "plasma_noise", "checkerboard_cutout", "cocentric_sine_waves",
        "single_frequency_greyscale", "brownish_noise",
    ),
}
# The published severity values (cifar10_c_bar.csv, imagenet_c_bar.csv); level k uses the k-th.
SEVERITY_VALUES: Dict[str, Dict[str, Tuple[float, ...]]] = {
    "cifar": {
        "blue_noise_sample": (0.7, 1.4, 2.1, 3.5, 4.2),
        "checkerboard_cutout": (1.0, 2.0, 3.0, 4.0, 5.0),
        "inverse_sparkles": (1.0, 1.5, 2.5, 4.5, 5.0),
        "pinch_and_twirl": (5.5, 6.0, 6.5, 8.5, 10.0),
        "ripple": (5.5, 6.0, 6.5, 7.5, 8.0),
        "brownish_noise": (2.5, 4.0, 5.5, 6.5, 7.0),
        "circular_motion_blur": (2.8, 3.6, 4.4, 5.2, 6.0),
        "lines": (0.5, 1.0, 1.5, 2.0, 2.5),
        "sparkles": (0.7, 3.5, 5.6, 6.3, 7.0),
        "transverse_chromatic_abberation": (1.0, 2.0, 5.0, 9.0, 10.0),
    },
    "imagenet": {
        "caustic_refraction": (2.35, 3.2, 4.9, 6.6, 9.15),
        "inverse_sparkles": (1.0, 2.0, 4.0, 9.0, 10.0),
        "sparkles": (1.0, 2.0, 3.0, 5.0, 6.0),
        "perlin_noise": (4.6, 5.2, 5.8, 7.6, 8.8),
        "blue_noise_sample": (0.8, 1.6, 2.4, 4.0, 5.6),
        "plasma_noise": (4.75, 7.0, 8.5, 9.25, 10.0),
        "checkerboard_cutout": (2.0, 3.0, 4.0, 5.0, 6.0),
        "cocentric_sine_waves": (3.0, 5.0, 8.0, 9.0, 10.0),
        "single_frequency_greyscale": (1.0, 1.5, 2.0, 4.5, 5.0),
        "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0),
    },
}
BENCHMARK_SIZES = {"cifar": 32, "imagenet": 224}
# The 15 distinct corruptions: CIFAR-10-C-bar's, then ImageNet-C-bar's that are new.
CBAR_ALL: Tuple[str, ...] = tuple(dict.fromkeys(CBAR["cifar"] + CBAR["imagenet"]))
# Corruptions whose output does not depend on the random stream.
CBAR_DETERMINISTIC = frozenset({"circular_motion_blur"})
SEED_HIGH = 2**32  # the original's private seeds: randint(0, 2**32)


def level(s: float, maximum: float) -> float:
    """Strength of severity value ``s`` for a parameter whose maximum is ``maximum``.

    ``(s * maximum) / 10`` in that order, as the original: ``level(4.9, 112)`` is
    ``54.88000000000001``, not ``4.9 * 11.2``."""
    return s * maximum / 10


# ----------------------------------------------------------------------------- shared helpers


@lru_cache(maxsize=8)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Row and column index of every pixel, float64 ``(size, size)`` each (read-only)."""
    r, c = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64),
                       indexing="ij")
    r.flags.writeable = c.flags.writeable = False
    return r, c


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """T(v): clip to [0, 255], then truncate to uint8."""
    return np.clip(x, 0, 255).astype(np.uint8)


def _bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` ``(H, W, C)`` at rows ``y`` and columns ``x`` (same shape).

    Neighbours outside the image count as 0 (no clamping, no wrap). Weights are evaluated as
    ``1 - x + x0`` / ``1 - x1 + x`` (and likewise for rows), combined along the columns first,
    as the original sampler."""
    h, w = image.shape[:2]
    y0, x0 = np.floor(y), np.floor(x)
    y1, x1 = y0 + 1, x0 + 1
    wx0, wx1 = (1 - x + x0)[..., None], (1 - x1 + x)[..., None]
    wy0, wy1 = (1 - y + y0)[..., None], (1 - y1 + y)[..., None]

    def at(yy, xx):
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        values = image[np.clip(yy, 0, h - 1).astype(np.intp), np.clip(xx, 0, w - 1).astype(np.intp)]
        return np.where(inside[..., None], values, 0)

    top = wx0 * at(y0, x0) + wx1 * at(y0, x1)
    bottom = wx0 * at(y1, x0) + wx1 * at(y1, x1)
    return wy0 * top + wy1 * bottom


def _spectral_field(prs: np.random.RandomState, amplitude: np.ndarray) -> np.ndarray:
    """A noise field ``(S, S)`` with spectral amplitude ``amplitude`` (centred spectrum).

    Phases for the left half of the spectrum from ``prs``; the right half is the left half
    turned by 180 degrees (not the conjugate symmetry of a real signal: the imaginary part that
    is dropped is as large as the real one). Real part of the inverse DFT, unit population std."""
    size = amplitude.shape[0]
    half = size // 2
    left = prs.uniform(0, 2 * np.pi, size=(size, half))
    phase = np.concatenate([left, left[::-1, ::-1]], axis=1)
    spectrum = amplitude * (np.cos(phase) + 1j * np.sin(phase))
    spectrum = np.roll(spectrum, (half, half), axis=(0, 1))
    field = np.real(fftpack.ifft2(spectrum))
    return field / np.std(field)


@lru_cache(maxsize=8)
def _centre_distance(size: int) -> np.ndarray:
    r, c = _grid(size)
    d = np.sqrt((r - size / 2) ** 2 + (c - size / 2) ** 2)
    d.flags.writeable = False
    return d


def _star_weight(size, center, lengths):
    """Per pixel ``(f, L, rho^2)`` of a star with rays ``lengths`` around ``center`` (row, col):
    ``f`` the position between two rays, ``L`` the interpolated ray length."""
    r, c = _grid(size)
    dr, dc = r - center[0], c - center[1]
    rho = np.sqrt(dr * dr + dc * dc)
    n = len(lengths)
    q = (np.arctan2(dc, dr) + np.pi) / (2 * np.pi) * n
    k = q.astype(np.intp)
    f = q - k
    lo, hi = lengths[k % n], lengths[(k + 1) % n]
    return f, lo + f * (hi - lo), rho**2


# ----------------------------------------------------------------------------- noise


def _sample_blue_noise_sample(rng, s, size):
    return {"seed": rng.randint(0, SEED_HIGH), "threshold": level(s, 3.0) - 2.5}


def _apply_blue_noise_sample(img, p):
    """Black pixels where a blue-noise field (amplitude grows with frequency) is <= threshold."""
    field = _spectral_field(np.random.RandomState(p["seed"]), _centre_distance(img.shape[0]))
    out = img.copy()
    out[field <= p["threshold"]] = 0
    return out


def _sample_brownish_noise(rng, s, size):
    return {"seed": rng.randint(0, SEED_HIGH), "intensity": level(s, 64)}


def _apply_brownish_noise(img, p):
    """Adds three low-frequency noise fields (amplitude 1 / (1 + d^2)), one per channel."""
    prs = np.random.RandomState(p["seed"])
    amplitude = 1 / (1 + _centre_distance(img.shape[0]) ** 2)
    noise = np.stack([_spectral_field(prs, amplitude) for _ in range(3)], axis=-1)
    return _to_uint8(img + p["intensity"] * noise)


def _sample_perlin_noise(rng, s, size):
    mu = 1 / (32 * size / 224)
    return {"m": [[mu, 0.0], [0.0, mu]], "turbulence": 16.0, "seed": rng.randint(0, SEED_HIGH),
            "gain": 0.5, "bias": 0.5, "alpha": level(s, 0.5)}


def _perlin_tables(prs):
    """Gradient and permutation tables of the classic lattice noise (B = 256), in the original's
    draw order: 514 gradients, then 256 swaps, then the copy into the upper half."""
    grads = np.empty((514, 2))
    for i in range(514):
        a, b = prs.randint(0, 2**31, size=2)
        v = np.array([(a % 512) - 256, (b % 512) - 256]) / 256
        grads[i] = v / np.sqrt(v[0] * v[0] + v[1] * v[1])
    perm = np.arange(514)
    for i in range(255, -1, -1):
        j = prs.randint(0, 2**31) % 256
        perm[i], perm[j] = perm[j], perm[i]
    for i in range(258):  # increasing i: entries 256, 257 copy already-copied values
        perm[256 + i] = perm[i]
        grads[256 + i] = grads[i]
    return perm, grads


def _perlin(perm, grads, x, y):
    """Lattice gradient noise at ``(x, y)`` (arrays), offset 4096, times 1.5."""
    tx, ty = x + 4096, y + 4096
    bx0, by0 = tx.astype(np.intp) % 256, ty.astype(np.intp) % 256
    bx1, by1 = (bx0 + 1) % 256, (by0 + 1) % 256
    rx0, ry0 = tx % 1, ty % 1
    rx1, ry1 = rx0 - 1, ry0 - 1
    i, j = perm[bx0], perm[bx1]
    b00, b10, b01, b11 = perm[i + by0], perm[j + by0], perm[i + by1], perm[j + by1]
    sx = rx0 * rx0 * (3 - 2 * rx0)
    sy = ry0 * ry0 * (3 - 2 * ry0)
    u = rx0 * grads[b00, 0] + ry0 * grads[b00, 1]
    v = rx1 * grads[b10, 0] + ry0 * grads[b10, 1]
    a1 = u + sx * (v - u)
    u = rx0 * grads[b01, 0] + ry1 * grads[b01, 1]
    v = rx1 * grads[b11, 0] + ry1 * grads[b11, 1]
    a2 = u + sx * (v - u)
    return 1.5 * (a1 + sy * (a2 - a1))


def _apply_perlin_noise(img, p):
    """Blends with grey turbulence (five octaves of lattice gradient noise)."""
    perm, grads = _perlin_tables(np.random.RandomState(p["seed"]))
    r, c = _grid(img.shape[0])
    m = p["m"]
    x = m[0][0] * r + m[0][1] * c
    y = m[1][0] * r + m[1][1] * c
    turbulence = np.zeros_like(x)
    f = 1.0
    while f <= p["turbulence"]:
        turbulence = turbulence + np.abs(_perlin(perm, grads, f * x, f * y)) / f
        f *= 2
    value = np.clip(p["gain"] * turbulence + p["bias"], 0, 1)
    alpha = float(p["alpha"])
    return _to_uint8((1 - alpha) * img.astype(np.float32) + 255 * alpha * value[..., None])


def _sample_plasma_noise(rng, s, size):
    return {"time": rng.uniform(0, 6 * np.pi), "iterations": rng.randint(4, 7),
            "sharpness": rng.uniform(0.5, 1.0), "scale": rng.uniform(0.075, 0.2) * size,
            "intensity": level(s, 64)}


def _apply_plasma_noise(img, p):
    """Blends with a colourful plasma pattern (iterated trigonometric displacement)."""
    r, c = _grid(img.shape[0])
    tau, sharp = p["time"], p["sharpness"]
    x, y = c / p["scale"], r / p["scale"]
    k = [1.0, 1.0, 1.0, 0.0]
    for _ in range(p["iterations"]):
        r0 = np.cos(y * k[0] - k[3] + tau / k[1]) / k[2]
        r1 = np.sin(x * k[0] - k[3] + tau / k[1]) / k[2]
        r0, r1 = r0 + 0.3 * -r1, r1 + 0.3 * r0
        x = x + r0
        y = y + r1
        k = [k[0] * 1.93, k[1] * 1.15, k[2] * (2.25 - sharp), k[3] * (tau * k[1])]
    colour = np.stack([np.sin(x - tau), np.sin(0.5 * (x + y + np.sin(tau))), np.sin(y + tau)], -1)
    a = p["intensity"]
    return _to_uint8((1 - a / 255) * img + a * colour)


def _sample_cocentric_sine_waves(rng, s, size):
    a = level(s, 128)
    return {"offset": rng.uniform(0, size, size=2), "freq": rng.uniform(0, 10),
            "amplitude": rng.uniform(0, size / 10), "ring_width": rng.uniform(0, size / 10),
            "intensity": [a, a, a]}


def _apply_cocentric_sine_waves(img, p):
    """Adds concentric sawtooth rings whose radius wobbles with the polar angle."""
    r, c = _grid(img.shape[0])
    x0, y0 = p["offset"]
    dx, dy = c - x0, r - y0
    psi = p["freq"] * np.arctan2(dx, dy)
    d = np.sqrt(dx**2 + dy**2)
    w = p["ring_width"]
    n = np.mod(d + p["amplitude"] * np.sin(psi), w) / w - 0.5
    return _to_uint8(img + np.asarray(p["intensity"]) * n[..., None])


def _sample_single_frequency_greyscale(rng, s, size):
    m = rng.uniform(-np.pi, np.pi)
    f2 = rng.uniform(-abs(m), abs(m))
    order = rng.permutation(2)
    both = (m, f2)
    return {"freq": [both[order[0]], both[order[1]]], "phase": rng.uniform(0, 2 * np.pi),
            "intensity": level(s, 196)}


def _apply_single_frequency_greyscale(img, p):
    """Adds one grey plane wave."""
    r, c = _grid(img.shape[0])
    fx, fy = p["freq"]
    wave = np.sin(c * fx + r * fy + p["phase"])
    return _to_uint8(img + p["intensity"] * wave[..., None])


# ----------------------------------------------------------------------------- occlusion


def _sample_checkerboard_cutout(rng, s, size):
    angle = rng.uniform(0, 2 * np.pi)
    scale = rng.uniform(0.1, 0.25) * size
    return {"angle": angle, "scales": [scale, scale], "fraction": level(s, 1.0),
            "seed": rng.randint(0, SEED_HIGH)}


def _apply_checkerboard_cutout(img, p):
    """Greys out a random fraction of one parity of a rotated checkerboard's squares."""
    size = img.shape[0]
    h = max(p["scales"][0], 1)
    grid = int(4 * size // h)
    active = np.random.RandomState(p["seed"]).uniform(size=(grid, grid)) < p["fraction"]
    r, c = _grid(size)
    cos, sin = np.cos(p["angle"]), np.sin(p["angle"])
    u = (r * cos + c * sin) / h
    v = (-r * sin + c * cos) / h
    same = np.mod(u, 2).astype(np.intp) == np.mod(v, 2).astype(np.intp)
    cut = same & active[u.astype(np.intp), v.astype(np.intp)]  # truncation; negatives wrap
    out = img.copy()
    out[cut] = 128
    return out


def _sample_inverse_sparkles(rng, s, size):
    return {"center": rng.uniform(0.25, 0.75, size=2) * size, "radius": 0.25 * size,
            "color": [255, 255, 255], "randomness": 25, "seed": rng.randint(0, SEED_HIGH),
            "rays": rng.randint(50, 200), "amount": 100 - level(s, 65)}


def _apply_inverse_sparkles(img, p):
    """A star-shaped window onto the image in a white field."""
    prs = np.random.RandomState(p["seed"])
    radius = p["radius"]
    z = np.array([prs.randn() for _ in range(p["rays"])])
    lengths = radius + p["randomness"] / 100 * radius * z
    f, length, rho2 = _star_weight(img.shape[0], p["center"], lengths)
    gain = (length**2 / (rho2 + 1e-4)) ** ((100 - p["amount"]) / 50)
    w = np.clip((1 - (f - 0.5) ** 2) * gain, 0, 1)[..., None]
    color = np.asarray(p["color"])
    return _to_uint8(color + w * (img.astype(np.float32) - color))


def _sample_sparkles(rng, s, size):
    r = level(s, 0.1) * size
    return {"centers": rng.uniform(0, size, size=(5, 2)), "radii": [r] * 5,
            "color": [255, 255, 255], "randomness": 25, "seed": rng.randint(0, SEED_HIGH),
            "nrays": rng.randint(50, 200, size=5), "amounts": [50] * 5}


def _apply_sparkles(img, p):
    """Five white starbursts, applied one after the other."""
    prs = np.random.RandomState(p["seed"])
    color = np.asarray(p["color"])
    out = img
    for center, radius, n, amount in zip(p["centers"], p["radii"], p["nrays"], p["amounts"],
                                         strict=True):
        z = np.array([prs.randn() for _ in range(n)])
        lengths = np.maximum(1, radius + p["randomness"] / 100 * radius * z)
        f, length, rho2 = _star_weight(img.shape[0], center, lengths)
        gain = (length**2 / (rho2 + 1e-4)) ** ((100 - amount) / 50)
        w = np.clip((1 - (f - 0.5) ** 2) * gain, 0, 1)[..., None]
        old = out.astype(np.float32)
        out = old + w * (color - old)
    return _to_uint8(out)


def _sample_lines(rng, s, size):
    return {"length": 1.0, "density": level(s, 1.0), "angle": rng.uniform(0, 2 * np.pi),
            "angle_variation": rng.uniform(0.1, 1.0), "seed": rng.randint(0, SEED_HIGH)}


def _apply_lines(img, p):
    """Long grey anti-aliased lines (scikit-image's ``line_aa``), blended one after another."""
    size = img.shape[0]
    prs = np.random.RandomState(p["seed"])
    half = p["length"] * size
    out = img.copy()
    for _ in range(int(p["density"] * size)):
        a = size * prs.uniform()
        b = size * prs.uniform()
        alpha = p["angle"] + 2 * np.pi * p["angle_variation"] * (prs.uniform() - 0.5)
        rr, cc, val = line_aa(int(a - half * np.cos(alpha)), int(b - half * np.sin(alpha)),
                              int(a + half * np.cos(alpha)), int(b + half * np.sin(alpha)))
        keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        rr, cc, val = rr[keep], cc[keep], val[keep][:, None]
        out[rr, cc] = (1 - val) * out[rr, cc] + val * 128
    return out


# ----------------------------------------------------------------------------- geometry / blur


def _sample_pinch_and_twirl(rng, s, size):
    n = 5 if size == 224 else 3
    twirl = level(s, np.pi / 2)
    signs = [rng.choice([1, -1]) for _ in range(n * n)]
    angles = [[signs[i * n + j] * twirl for j in range(n)] for i in range(n)]
    return {"num_per_axis": n, "angles": angles, "amount": level(s, 0.4) + 0.1}


def _apply_pinch_and_twirl(img, p):
    """A grid of local pinch-and-twirl swirls (``angles[i][j]``: column block i, row block j)."""
    size = img.shape[0]
    n = p["num_per_axis"]
    g = size // n
    rho0 = g / 2
    span = n * g  # the last size - n * g rows and columns are never changed
    r, c = (a[:span, :span] for a in _grid(size))
    rows, cols = (r // g).astype(np.intp), (c // g).astype(np.intp)
    twirl = np.asarray(p["angles"], dtype=np.float64)[cols, rows]
    mr, mc = rows * g + rho0, cols * g + rho0
    dr, dc = r - mr, c - mc
    rho = np.sqrt(dr * dr + dc * dc)
    moved = (rho <= rho0) & (np.round(rho, 3) != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = rho / rho0
        t = np.sin(np.pi * d / 2) ** (-p["amount"])
        dr2, dc2 = t * dr, t * dc
        beta = twirl * (1 - d) ** 2
        sr = mr + (dr2 * np.cos(beta) - dc2 * np.sin(beta))
        sc = mc + (dr2 * np.sin(beta) + dc2 * np.cos(beta))
    sr, sc = np.where(moved, sr, r), np.where(moved, sc, c)
    work = img.astype(np.float32)
    work[:span, :span] = _bilinear(work, sr, sc)  # sources stay in their cell's disc
    return _to_uint8(work)


def _sample_ripple(rng, s, size):
    a = level(s, 0.025) * size
    return {"amplitudes": [a, a], "wavelengths": rng.uniform(0.1, 0.3, size=2) * size,
            "phases": rng.uniform(0, 2 * np.pi, size=2)}


def _apply_ripple(img, p):
    """Separable sinusoidal displacement of rows and columns (black pulled in at the edges)."""
    r, c = _grid(img.shape[0])
    (ar, ac), (lr, lc), (pr, pc) = p["amplitudes"], p["wavelengths"], p["phases"]
    y = r + ar * np.sin(2 * np.pi * r / lr + pr)
    x = c + ac * np.sin(2 * np.pi * c / lc + pc)
    return _to_uint8(_bilinear(img, y, x))


def _sample_circular_motion_blur(rng, s, size):
    return {"amount": level(s, 15)}


def _apply_circular_motion_blur(img, p):
    """Weighted mean of 21 rotations by -amount .. +amount degrees (cubic spline, zero fill)."""
    unit = img.astype(np.float32) / 255
    acc = np.zeros_like(unit)
    total = 0.0
    for i in range(21):
        tau = 2 * i / 20 - 1
        w = np.exp(-2 * tau**2)
        acc += w * ndimage.rotate(unit, tau * p["amount"], reshape=False)
        total += w
    return _to_uint8(255 * (acc / total))  # normalised first: (255 * acc) / total differs


def _sample_transverse_chromatic_abberation(rng, s, size):
    z = level(s, 0.5)
    factors = np.array([1.0, 1 + z / 2, 1 + z])
    return {"scales": factors[rng.permutation(3)]}


def _apply_transverse_chromatic_abberation(img, p):
    """Magnifies each channel by its factor (unprefiltered cubic zoom), centre crop."""
    size = img.shape[0]
    out = np.empty_like(img)
    for ch, factor in enumerate(p["scales"]):
        zoomed = ndimage.zoom(img[:, :, ch], factor, prefilter=False)
        e = (zoomed.shape[0] - size) // 2
        out[:, :, ch] = zoomed[e:e + size, e:e + size]
    return out


def _sample_caustic_refraction(rng, s, size):
    return {"time": rng.uniform(0.5, 2.0), "size": rng.uniform(0.75, 1.25) * size, "eta": 4.0,
            "lens_scale": level(s, 0.5 * size), "lighting_amount": level(s, 2.0),
            "softening": 1}


def _caustic_field(size, time, tile):
    r, c = _grid(size)
    q0 = np.mod(r / tile, 1) * 6.28318530718 - 250
    q1 = np.mod(c / tile, 1) * 6.28318530718 - 250
    j0, j1 = q0, q1
    acc = np.ones_like(q0)
    for n in range(5):
        t = time * (1 - 3.5 / (n + 1))
        j0, j1 = (q0 + (np.cos(t - j0) + np.sin(t + j1)),
                  q1 + (np.sin(t - j1) + np.cos(t + j0)))
        a = q0 / (np.sin(j0 + t) / 0.005)
        b = q1 / (np.cos(j1 + t) / 0.005)
        acc = acc + 1 / np.sqrt(a * a + b * b)
    acc = acc / 5
    v = 1.17 - acc**1.4
    return np.clip(np.abs(v) ** 8, 0, 1)


def _apply_caustic_refraction(img, p):
    """The image seen through a wavy water surface: refraction by the caustic field's normals
    (Snell, index eta) plus a lighting term; zero height outside the image."""
    size = img.shape[0]
    field = _caustic_field(size, p["time"], p["size"])
    smooth = ndimage.gaussian_filter(np.stack([field] * 3, axis=-1), sigma=p["softening"])
    luma = 0.2126 * smooth[..., 0] + 0.7152 * smooth[..., 1] + 0.0722 * smooth[..., 2]
    padded = np.pad(luma, 1)
    north, south = padded[1:-1, :-2], padded[1:-1, 2:]
    west, east = padded[:-2, 1:-1], padded[2:, 1:-1]
    gr, gc = east - west, south - north
    norm = np.sqrt(gr * gr + gc * gc + 1)
    nr, nc, nz = gr / norm, gc / norm, 1 / norm
    flat = np.abs(nz) >= 1 - 1e-3
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.arccos(nz)
        theta_r = np.arcsin(np.sin(theta) / p["eta"])
        sin_t = np.sin(theta)
        wr = np.cos(theta_r) * nr + np.sin(theta_r) * (0 - nz * nr) / sin_t
        wc = np.cos(theta_r) * nc + np.sin(theta_r) * (0 - nz * nc) / sin_t
    dr = np.where(flat, 0.0, np.round(p["lens_scale"] * wr, 3))
    dc = np.where(flat, 0.0, np.round(p["lens_scale"] * wc, 3))
    r, c = _grid(size)
    sampled = _bilinear(img.astype(np.float32) / 255, r + dr, c + dc)
    light = p["lighting_amount"]
    value = sampled + (light * (north - south))[..., None] + (light * (east - west))[..., None]
    return (255 * np.clip(value, 0, 1)).astype(np.uint8)


# ----------------------------------------------------------------------------- registry


class CbarCorruption(NamedTuple):
    sample: Callable  # (rng, s, S) -> params: the global draws of one image
    apply: Callable  # (uint8 (S, S, 3), params) -> uint8 (S, S, 3)


TRANSFORMS: Dict[str, CbarCorruption] = {
    name: CbarCorruption(globals()[f"_sample_{name}"], globals()[f"_apply_{name}"])
    for name in CBAR_ALL
}


def sample_params(name: str, severity_value: float, size: int,
                  rng: np.random.RandomState) -> Dict:
    """The parameters of one image: the original's global draws for ``name``, from ``rng``."""
    return TRANSFORMS[name].sample(rng, severity_value, size)


def apply_params(image: np.ndarray, name: str, params: Dict) -> np.ndarray:
    """Applies ``name`` with fixed ``params`` (private draws from ``params["seed"]``)."""
    return TRANSFORMS[name].apply(image, params)


def severity_value(name: str, severity: int, benchmark: str) -> float:
    """The csv value of level ``severity`` (1-5) of ``name`` in ``benchmark``."""
    if benchmark not in CBAR:
        raise ValueError(f"unknown -C-bar benchmark {benchmark!r}; the -C-bar corruptions have "
                         f"the presets {' and '.join(repr(b) for b in CBAR)}")
    if name not in SEVERITY_VALUES[benchmark]:
        where = [b for b in CBAR if name in CBAR[b]]
        raise ValueError(f"{name!r} is not a corruption of the {benchmark} -C-bar benchmark"
                         + (f" (it belongs to {', '.join(where)})" if where else "")
                         + f"; choose one of {', '.join(CBAR[benchmark])}")
    if int(severity) not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    return SEVERITY_VALUES[benchmark][name][int(severity) - 1]


def corrupt_bar(images: np.ndarray, name: str, severity: int, benchmark: str,
                rng: np.random.RandomState) -> np.ndarray:
    """Applies -C-bar corruption ``name`` at level ``severity`` (1-5) of ``benchmark``.

    Args:
        images: uint8 ``(N, S, S, 3)`` RGB; ``S`` is the side the corruption is built for (the
            original uses 32 for CIFAR-10-C-bar and 224 for ImageNet-C-bar).
        name: one of ``CBAR[benchmark]``.
        severity: level 1 to 5 (mapped to the benchmark's csv value).
        benchmark: ``cifar`` or ``imagenet``.
        rng: legacy ``RandomState`` standing for the original's global NumPy generator; the
            images draw from it one after another, in order.

    Returns:
        uint8 ``(N, S, S, 3)``.
    """
    s = severity_value(name, severity, benchmark)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 \
            or images.shape[1] != images.shape[2]:
        raise ValueError(f"-C-bar corruptions take uint8 (N, S, S, 3) square RGB images, got "
                         f"{images.dtype} {images.shape}")
    size = images.shape[1]
    if size % 2 and name in ("blue_noise_sample", "brownish_noise"):
        raise ValueError(f"{name} needs an even image side, got {size}")
    transform = TRANSFORMS[name]
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = transform.apply(image, transform.sample(rng, s, size))
    return out
