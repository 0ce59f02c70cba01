"""Generator of the 15 benchmark corruptions (+4 extra) at CIFAR, Tiny-ImageNet and ImageNet
parameters, and of the -C-bar corruptions at CIFAR-10-C-bar and ImageNet-C-bar parameters, for
any uint8 image set.

    from snc.corruptions import CORRUPTIONS, CBAR_CORRUPTIONS, corrupt
    bad = corrupt(images, "fog", 3, preset="cifar", seed=0)   # (N, H, W, 3) uint8 in and out
    bar = corrupt(images, "blue_noise_sample", 3, preset="cifar", seed=0)   # -C-bar

-C algorithms and parameters follow Hendrycks & Dietterich (ICLR 2019) and their generator
(hendrycks/robustness @ 8190fe3); see ``functions.py`` and ``params.py``. The -C-bar ones follow
Mintun et al. (NeurIPS 2021; facebookresearch/augmentation-corruption); see ``cbar.py``, whose
``corrupt_bar`` reproduces the original's outputs exactly for a given legacy ``RandomState``. A
generated set is *not* the published CIFAR-10-C / ImageNet-C / -C-bar (random draws differ);
the dataset tools label it as generated.
"""

from __future__ import annotations

import zlib
from typing import Callable, Dict

import numpy as np

from snc.corruptions import functions as F
from snc.corruptions.cbar import CBAR, CBAR_ALL, corrupt_bar, severity_value
from snc.corruptions.params import PARAMS, PRESET_SIZES

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
# Bumped whenever a corruption's output changes: generated sets record it, so a set made by an
# older generator is regenerated instead of reused.
GENERATOR_VERSION = "1"
RANDOM_CORRUPTIONS = frozenset({
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
    "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform",
})
PRESETS = tuple(PRESET_SIZES)
# -C-bar: preset (benchmark) -> its 10 corruptions in the published csv order; 15 distinct names,
# none shared with the -C names, so ``corrupt`` tells the two families apart by name.
CBAR_CORRUPTIONS = CBAR
CBAR_PRESETS = tuple(CBAR)


def cbar_corruptions(preset: str) -> tuple:
    """The 10 -C-bar corruption names of ``preset`` (``cifar`` or ``imagenet``), csv order."""
    if preset not in CBAR:
        raise ValueError(f"unknown -C-bar preset {preset!r}; the -C-bar corruptions have the "
                         f"presets {' and '.join(repr(p) for p in CBAR_PRESETS)}")
    return CBAR[preset]


def check_corruption(name: str, preset: str) -> None:
    """Raises ``ValueError`` unless ``corrupt`` accepts ``name`` with ``preset``."""
    if name in CBAR_ALL:
        severity_value(name, 1, preset)  # names the valid presets / the benchmark of ``name``
        return
    if name not in ALL_CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of "
                         f"{', '.join(ALL_CORRUPTIONS)} or a -C-bar name ({', '.join(CBAR_ALL)})")
    if preset not in PARAMS:
        raise ValueError(
            f"unknown corruption preset {preset!r}; choose one of {', '.join(PRESETS)}")


def _dispatch(name: str, preset: str) -> Callable:
    table = PARAMS[preset]
    deterministic: Dict[str, Callable] = {
        "defocus_blur": F.defocus_blur, "zoom_blur": F.zoom_blur, "brightness": F.brightness,
        "contrast": F.contrast, "pixelate": F.pixelate, "jpeg_compression": F.jpeg_compression,
        "gaussian_blur": F.gaussian_blur, "saturate": F.saturate,
    }
    if name in deterministic:
        fn = deterministic[name]
        return lambda x, s, rng: fn(x, table[name][s - 1])
    if name == "frost":
        return lambda x, s, rng: F.frost(x, table[name][s - 1], rng, table["frost_scale"])
    if name == "fog":
        return lambda x, s, rng: F.fog(x, table[name][s - 1], rng, table["fog_mapsize"])
    fn = getattr(F, name)
    return lambda x, s, rng: fn(x, table[name][s - 1], rng)


def corruption_seed(seed: int, name: str, severity: int) -> np.random.SeedSequence:
    """Independent, reproducible stream per (seed, corruption, severity)."""
    return np.random.SeedSequence([int(seed), zlib.crc32(name.encode()), int(severity)])


def corrupt(
    images: np.ndarray,
    name: str,
    severity: int,
    *,
    preset: str = "cifar",
    seed: int = 0,
) -> np.ndarray:
    """Applies corruption ``name`` at ``severity`` to a batch of images.

    Args:
        images: uint8 ``(N, H, W, 3)`` RGB (a single ``(H, W, 3)`` image is accepted too).
        name: one of :data:`ALL_CORRUPTIONS`, or a -C-bar name (:data:`CBAR_CORRUPTIONS`).
        severity: 1 to 5.
        preset: parameter table, ``cifar`` (32 px), ``tinyimagenet`` (64 px) or ``imagenet``
            (224 px). Other image sizes work; the parameters stay those of the preset. For a
            -C-bar name: ``cifar`` (CIFAR-10-C-bar values) or ``imagenet`` (ImageNet-C-bar
            values); the images must be square and the side is the one the corruption is
            built for (the benchmarks use 32 and 224 px).
        seed: seed of the random draws (each image gets its own independent draws). -C-bar
            corruptions draw image after image from a legacy ``RandomState`` seeded from
            ``(seed, name, severity)``, as the original draws from NumPy's global generator.

    Returns:
        uint8 array of the input's shape: the float result cast by truncation, as the original.

    Raises:
        ValueError: for an unknown name, severity or preset, or a non-uint8 / non-RGB input.
    """
    check_corruption(name, preset)
    if int(severity) not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    images = np.asarray(images)
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(
            f"corrupt() takes uint8 (N, H, W, 3) RGB images, got {batch.dtype} {batch.shape}"
        )
    if name in CBAR_ALL:
        rng = np.random.RandomState(np.random.MT19937(corruption_seed(seed, name, severity)))
        out = corrupt_bar(batch, name, int(severity), preset, rng)
        return out[0] if single else out
    rng = np.random.default_rng(corruption_seed(seed, name, severity))
    out = _dispatch(name, preset)(np.ascontiguousarray(batch), int(severity), rng)
    out = np.asarray(out).astype(np.uint8)  # truncation (values are non-negative)
    return out[0] if single else out


__all__ = [
    "ALL_CORRUPTIONS", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "PRESETS", "PRESET_SIZES",
    "GENERATOR_VERSION", "RANDOM_CORRUPTIONS", "CBAR_CORRUPTIONS", "CBAR_PRESETS",
    "cbar_corruptions", "check_corruption", "corrupt", "corrupt_bar",
]
