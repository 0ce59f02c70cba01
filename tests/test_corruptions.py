"""The corruption generator against the original generator's outputs (tests/data/corruptions)."""

import json
from pathlib import Path

import numpy as np
import pytest

from snc.corruptions import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    PRESETS,
    RANDOM_CORRUPTIONS,
    corrupt,
)
from snc.corruptions.motion import motion_blur_kernel_apply
from snc.corruptions.params import PARAMS

DATA = Path(__file__).parent / "data" / "corruptions"
VECTORS = np.load(DATA / "cifar.npz")
MOTION = np.load(DATA / "motion_blur_fixed_angle.npz")
STATS = json.loads((DATA / "stats.json").read_text())
DETERMINISTIC = sorted(set(ALL_CORRUPTIONS) - RANDOM_CORRUPTIONS)


def test_names_and_order():
    assert CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression")
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert set(DETERMINISTIC) == set(STATS["deterministic_corruptions"])
    assert RANDOM_CORRUPTIONS == set(STATS["random_corruptions"])


def test_zoom_factor_lists_include_the_rounded_stop():
    assert [len(f) for f in PARAMS["cifar"]["zoom_blur"]] == [7, 12, 16, 21, 26]
    assert [len(f) for f in PARAMS["imagenet"]["zoom_blur"]] == [12, 16, 11, 13, 11]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_are_bit_identical_to_the_original(name):
    x = VECTORS["inputs"]
    for severity in range(1, 6):
        out = corrupt(x, name, severity, preset="cifar")
        np.testing.assert_array_equal(out, VECTORS[f"{name}_{severity}"],
                                      err_msg=f"{name} severity {severity}")


@pytest.mark.parametrize("key, preset", [("cifar", "cifar"), ("imagenet", "imagenet")])
def test_motion_blur_at_fixed_angles_matches_imagemagick(key, preset):
    inputs = MOTION[f"{key}_inputs"]
    for severity in range(1, 6):
        radius, sigma = PARAMS[preset]["motion_blur"][severity - 1]
        for angle in MOTION["angles"]:
            expected = MOTION[f"{key}_motion_blur_{severity}_angle{int(angle)}"]
            out = np.stack([motion_blur_kernel_apply(img, radius, sigma, angle)
                            for img in inputs[:len(expected)]]).clip(0, 255).astype(np.uint8)
            diff = np.abs(out.astype(int) - expected.astype(int))
            assert diff.max() <= 1, (severity, angle)
            assert (diff > 0).mean() <= 0.05, (severity, angle)


def test_motion_blur_impulse_response():
    # corruptions.md section 5: radius 6, sigma 2, angle 0 spreads an impulse to the left
    img = np.zeros((1, 20), dtype=np.uint8)
    img[0, 10] = 255
    out = motion_blur_kernel_apply(img, 6, 2, 0).astype(np.uint8)[0]
    assert out[4:11][::-1].tolist()[:6] == [84, 74, 51, 27, 11, 3]
    assert out[11:].sum() == 0


def image_stats(clean, out):
    clean, out = clean.astype(np.float64), out.astype(np.float64)
    return (np.abs(out - clean).mean(), out.std(axis=(1, 2)).mean(0),
            out.mean(axis=(1, 2)).mean(0))


@pytest.mark.parametrize("key, preset, runs", [("cifar", "cifar", 3),
                                               ("imagenet", "imagenet", 1)])
@pytest.mark.parametrize("name", sorted(RANDOM_CORRUPTIONS))
def test_random_corruptions_match_the_recorded_statistics(name, key, preset, runs):
    inputs = VECTORS["inputs"] if key == "cifar" else MOTION["imagenet_inputs"]
    for severity in range(1, 6):
        ref = STATS[key]["corruptions"][name]["severities"][str(severity)]
        stats = [image_stats(inputs, corrupt(inputs, name, severity, preset=preset, seed=s))
                 for s in range(runs)]
        mad = np.mean([s[0] for s in stats])
        std = np.mean([s[1] for s in stats], 0)
        mean = np.mean([s[2] for s in stats], 0)
        # 5 standard deviations of the reference's run-to-run spread plus half a grey level
        assert abs(mad - ref["mad"]) <= 5 * ref["mad_sd_over_runs"] + 0.5, (severity, mad)
        assert np.all(np.abs(std - ref["std_rgb"])
                      <= 5 * np.array(ref["std_rgb_sd_over_runs"]) + 0.5), (severity, std)
        assert np.all(np.abs(mean - ref["mean_rgb"])
                      <= 5 * np.array(ref["mean_rgb_sd_over_runs"]) + 0.5), (severity, mean)


@pytest.mark.parametrize("preset", PRESETS)
def test_shapes_dtype_range_and_determinism_at_every_preset(preset):
    size = {"cifar": 32, "tinyimagenet": 64, "imagenet": 224}[preset]
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    for name in ALL_CORRUPTIONS:
        if preset == "imagenet" and name == "glass_blur":
            continue  # covered by the statistics test; slow at 224 px
        for severity in (1, 5):
            a = corrupt(x, name, severity, preset=preset, seed=3)
            assert a.shape == x.shape and a.dtype == np.uint8, name
            b = corrupt(x, name, severity, preset=preset, seed=3)
            np.testing.assert_array_equal(a, b, err_msg=name)
            if name in RANDOM_CORRUPTIONS and name != "frost":
                c = corrupt(x, name, severity, preset=preset, seed=4)
                assert not np.array_equal(a, c), name


def test_single_image_and_bad_input():
    img = VECTORS["inputs"][0]
    assert corrupt(img, "fog", 2).shape == img.shape
    with pytest.raises(ValueError, match="unknown corruption 'fogg'"):
        corrupt(img, "fogg", 1)
    with pytest.raises(ValueError, match="severity must be 1..5"):
        corrupt(img, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(img.astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match="unknown corruption preset"):
        corrupt(img, "fog", 1, preset="mnist")
