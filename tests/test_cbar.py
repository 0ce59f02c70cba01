"""The -C-bar corruptions against the original code's outputs (tests/data/cbar)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from snc.corruptions import (
    ALL_CORRUPTIONS,
    CBAR_CORRUPTIONS,
    cbar_corruptions,
    corrupt,
    corruption_seed,
)
from snc.corruptions.cbar import (
    CBAR_ALL,
    CBAR_DETERMINISTIC,
    SEVERITY_VALUES,
    apply_params,
    corrupt_bar,
    level,
    sample_params,
)
from snc.corruptions.sets import generate_cifar_style, load_cifar_c, read_manifest, severity_rows

DATA = Path(__file__).parent / "data" / "cbar"
CIFAR = np.load(DATA / "cifar_cbar.npz")
IMAGENET = np.load(DATA / "imagenet_cbar.npz")
PARAMS = json.loads((DATA / "ref_params.json").read_text())
STATS = json.loads((DATA / "stats.json").read_text())
FILES = {"cifar": CIFAR, "imagenet": IMAGENET}


def sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def plain(value):
    """NumPy arrays and scalars as the nested lists / Python numbers of ref_params.json."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def test_names_severity_values_and_level():
    for benchmark, data in FILES.items():
        keys = [str(k) for k in data["keys"]]
        names = list(dict.fromkeys(k.rsplit("_", 1)[0] for k in keys))
        assert CBAR_CORRUPTIONS[benchmark] == tuple(names) == cbar_corruptions(benchmark)
        values = [SEVERITY_VALUES[benchmark][k.rsplit("_", 1)[0]][int(k[-1]) - 1] for k in keys]
        assert values == data["severity_values"].tolist()
        assert not set(CBAR_CORRUPTIONS[benchmark]) & set(ALL_CORRUPTIONS)
    assert len(CBAR_ALL) == 15
    assert level(4.9, 112) == 54.88000000000001  # (s * M) / 10, not s * (M / 10)
    assert {n for b in FILES for n, c in STATS[b]["corruptions"].items()
            if not c["random"]} == set(CBAR_DETERMINISTIC)


@pytest.mark.parametrize("name", CBAR_CORRUPTIONS["cifar"])
def test_cifar_outputs_are_byte_identical_to_the_original(name):
    for k in range(1, 6):
        out = corrupt_bar(CIFAR["inputs"], name, k, "cifar", rng=np.random.RandomState(0))
        np.testing.assert_array_equal(out, CIFAR[f"{name}_{k}"], err_msg=f"{name}_{k}")


@pytest.mark.parametrize("name", CBAR_CORRUPTIONS["imagenet"])
def test_imagenet_outputs_are_byte_identical_to_the_original(name):
    keys = [str(k) for k in IMAGENET["keys"]]
    for k in range(1, 6):
        key = f"{name}_{k}"
        out = corrupt_bar(IMAGENET["inputs"], name, k, "imagenet", rng=np.random.RandomState(0))
        if k in (1, 3, 5):  # windows first: a failure then shows where
            np.testing.assert_array_equal(out[:, :64, :64], IMAGENET[f"{key}_tl"], err_msg=key)
            np.testing.assert_array_equal(out[:, 160:, 160:], IMAGENET[f"{key}_br"], err_msg=key)
        blocks = out.reshape(4, 8, 28, 8, 28, 3).mean(axis=(2, 4))
        np.testing.assert_allclose(blocks, IMAGENET[f"{key}_blockmean"], rtol=0, atol=1e-4)
        assert sha256(out) == str(IMAGENET["sha256"][keys.index(key)]), key


@pytest.mark.parametrize("benchmark", ["cifar", "imagenet"])
def test_sampled_parameters_equal_the_recorded_ones(benchmark):
    size = FILES[benchmark]["inputs"].shape[1]
    for key, record in PARAMS[benchmark].items():
        name = key.rsplit("_", 1)[0]
        assert record["severity"] == SEVERITY_VALUES[benchmark][name][int(key[-1]) - 1]
        rng = np.random.RandomState(record["seed"])
        for i, expected in enumerate(record["params"]):
            got = plain(sample_params(name, record["severity"], size, rng))
            assert got == expected, (key, i)


@pytest.mark.parametrize("benchmark, key", [
    ("cifar", "lines_5"), ("cifar", "sparkles_3"), ("cifar", "pinch_and_twirl_4"),
    ("cifar", "checkerboard_cutout_2"), ("imagenet", "caustic_refraction_5"),
    ("imagenet", "perlin_noise_3"), ("imagenet", "cocentric_sine_waves_1"),
])
def test_recorded_parameters_replay_to_the_reference_output(benchmark, key):
    name, data = key.rsplit("_", 1)[0], FILES[benchmark]
    for i, params in enumerate(PARAMS[benchmark][key]["params"]):
        out = apply_params(data["inputs"][i], name, params)
        if benchmark == "cifar":
            np.testing.assert_array_equal(out, data[key][i], err_msg=f"{key} image {i}")
        else:
            np.testing.assert_array_equal(out[:64, :64], data[f"{key}_tl"][i])
            np.testing.assert_array_equal(out[160:, 160:], data[f"{key}_br"][i])


def image_stats(clean, out):
    clean, out = clean.astype(np.float64), out.astype(np.float64)
    return (np.abs(out - clean).mean(), out.std(axis=(1, 2)).mean(0), out.mean(axis=(1, 2)).mean(0))


RUNS = {"cifar": 10, "imagenet": 3}


@pytest.mark.parametrize("benchmark, name", [(b, n) for b in RUNS for n in CBAR_CORRUPTIONS[b]])
def test_corrupt_matches_the_recorded_statistics_with_other_draws(benchmark, name):
    # corrupt() draws from its own (seed, name, severity) stream, not the reference's seeds
    # 1000.., so this checks the distributions: |d| <= 4 sqrt(sd_ref^2/R + sd^2/M) + 0.1
    # (the reference README's rule; 0.1 grey level covers rounding)
    runs = RUNS[benchmark]
    inputs = FILES[benchmark]["inputs"]
    ref = STATS[benchmark]["corruptions"][name]["severities"]
    for k in range(1, 6):
        r = ref[str(k)]
        m = 1 if name in CBAR_DETERMINISTIC else runs
        stats = [image_stats(inputs, corrupt(inputs, name, k, preset=benchmark, seed=s))
                 for s in range(m)]
        for j, field in enumerate(("mad", "std_rgb", "mean_rgb")):
            values = np.array([s[j] for s in stats])
            sd = values.std(axis=0, ddof=1) if m > 1 else 0.0
            bound = 4 * np.sqrt(np.square(r[f"{field}_sd_over_runs"]) / r["runs"]
                                + np.square(sd) / m) + 0.1
            delta = np.abs(values.mean(axis=0) - np.array(r[field]))
            assert np.all(delta <= bound), (name, k, field, delta, bound)


def test_corrupt_dispatches_to_cbar_with_the_preset_values_and_its_own_stream():
    x = CIFAR["inputs"][:4]
    for name in ("blue_noise_sample", "lines"):
        out = corrupt(x, name, 3, preset="cifar", seed=7)
        stream = np.random.RandomState(np.random.MT19937(corruption_seed(7, name, 3)))
        np.testing.assert_array_equal(out, corrupt_bar(x, name, 3, "cifar", rng=stream))
        np.testing.assert_array_equal(out, corrupt(x, name, 3, preset="cifar", seed=7))
        assert not np.array_equal(out, corrupt(x, name, 3, preset="cifar", seed=8))
    # a shared corruption takes the ImageNet-C-bar value with preset imagenet (1.6 vs 1.4 here):
    # same draws, so more pixels are dropped
    a = corrupt(x, "blue_noise_sample", 2, preset="cifar", seed=1)
    b = corrupt(x, "blue_noise_sample", 2, preset="imagenet", seed=1)
    assert (b == 0).all(-1).sum() > (a == 0).all(-1).sum()
    assert corrupt(x[0], "ripple", 1).shape == x[0].shape  # a single image


def test_corrupt_names_the_valid_presets_and_benchmarks():
    x = CIFAR["inputs"][:2]
    with pytest.raises(ValueError, match="'cifar' and 'imagenet'"):
        corrupt(x, "blue_noise_sample", 3, preset="tinyimagenet")
    with pytest.raises(ValueError, match="belongs to imagenet"):
        corrupt(x, "caustic_refraction", 3, preset="cifar")
    with pytest.raises(ValueError, match="belongs to cifar"):
        corrupt(x, "ripple", 3, preset="imagenet")
    with pytest.raises(ValueError, match="square"):
        corrupt(x[:, :, :16], "ripple", 3)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "ripple", 6)
    with pytest.raises(ValueError, match="-C-bar name"):
        corrupt(x, "ripples", 1)


def test_generate_cifar_style_writes_a_cifar10_c_bar_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 8)
    names = list(CBAR_CORRUPTIONS["cifar"])
    out = tmp_path / "CIFAR-10-C-bar"
    manifest = generate_cifar_style(images, labels, out, corruptions=names, preset="cifar",
                                    seed=3, progress=False)
    assert set(manifest["files"]) == {f"{n}.npy" for n in names} | {"labels.npy"}
    chunk_seed = int(np.random.SeedSequence([3, 0]).generate_state(1)[0])  # the first chunk's
    for name in names:
        x, y = load_cifar_c(out, name, verify=True)
        assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(y, np.tile(labels, 5))
        for k in range(1, 6):  # severities stacked in csv order
            np.testing.assert_array_equal(
                x[severity_rows(40, k)], corrupt(images, name, k, preset="cifar", seed=chunk_seed))
    assert read_manifest(out)["generated"] is True
    with pytest.raises(ValueError, match="'cifar' and 'imagenet'"):
        generate_cifar_style(images, labels, tmp_path / "bad", corruptions=["lines"],
                             preset="tinyimagenet", progress=False)
    assert not (tmp_path / "bad").exists()
