"""The batched tensor corruptions (snc.corruptions.batched) against the CPU generator, on CPU
tensors: deterministic ones value by value, random ones by their per-severity statistics."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from snc.corruptions import ALL_CORRUPTIONS, RANDOM_CORRUPTIONS, corrupt
from snc.corruptions.batched import BATCHED, DETERMINISTIC, corrupt_batch, is_batched

DATA = Path(__file__).parent / "data" / "corruptions"
VECTORS = np.load(DATA / "cifar.npz")
MOTION = np.load(DATA / "motion_blur_fixed_angle.npz")
STATS = json.loads((DATA / "stats.json").read_text())
RANDOM_BATCHED = sorted(set(BATCHED) & RANDOM_CORRUPTIONS)  # the -C ones
# Tested bound per deterministic corruption: (largest difference in grey levels, largest
# fraction of differing values), vs the original's outputs and vs the CPU generator.
BOUNDS = {name: (0, 0.0) for name in DETERMINISTIC}
BOUNDS["gaussian_blur"] = (1, 0.001)  # float summation order: one value of 49,152 at 32 px


def _real64() -> np.ndarray:
    """64 real images: the 16 reference CIFAR images, as is, mirrored, flipped and rotated."""
    x = VECTORS["inputs"]
    return np.concatenate([x, x[:, :, ::-1], x[:, ::-1], np.rot90(x, 1, (1, 2))])


def _check_bound(out, ref, name, what):
    diff = np.abs(out.astype(int) - ref.astype(int))
    top, frac = BOUNDS[name]
    assert diff.max() <= top, (name, what, diff.max())
    assert (diff > 0).mean() <= frac, (name, what, (diff > 0).mean())


def test_every_corruption_is_batched():
    from snc.corruptions.cbar import CBAR_ALL

    assert set(ALL_CORRUPTIONS) <= set(BATCHED) and all(is_batched(n) for n in CBAR_ALL)
    assert set(BATCHED) - set(ALL_CORRUPTIONS) == {
        "blue_noise_sample", "brownish_noise", "single_frequency_greyscale",
        "cocentric_sine_waves", "ripple", "plasma_noise", "checkerboard_cutout",
        "inverse_sparkles", "sparkles", "pinch_and_twirl", "transverse_chromatic_abberation",
        "perlin_noise", "caustic_refraction", "circular_motion_blur", "lines"}
    assert set(DETERMINISTIC) == set(ALL_CORRUPTIONS) - RANDOM_CORRUPTIONS


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_match_the_original_outputs(name):
    x = torch.from_numpy(VECTORS["inputs"])
    for severity in range(1, 6):
        out = corrupt_batch(x, name, severity, preset="cifar")
        assert out.dtype == torch.uint8 and out.shape == x.shape
        _check_bound(out.numpy(), VECTORS[f"{name}_{severity}"], name, severity)


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_match_the_cpu_generator_at_64px(name):
    from snc.data.synthetic import make_synthetic

    x, _ = make_synthetic(6, seed=2, size=64)
    for severity in range(1, 6):
        out = corrupt_batch(torch.from_numpy(x), name, severity, preset="tinyimagenet")
        _check_bound(out.numpy(), corrupt(x, name, severity, preset="tinyimagenet"), name,
                     severity)


def test_defocus_blur_through_a_dft_matches_the_cpu_generator():
    # the CPU path from 128 px on; checked here at 64 px, on every severity of both tables
    from snc.corruptions.batched import _defocus_fft, _defocus_separable
    from snc.corruptions.params import PARAMS
    from snc.data.synthetic import make_synthetic

    x, _ = make_synthetic(4, seed=3, size=64)
    for preset in ("tinyimagenet", "imagenet"):
        for severity in range(1, 6):
            params = PARAMS[preset]["defocus_blur"][severity - 1]
            ref = corrupt(x, "defocus_blur", severity, preset=preset)
            for fn in (_defocus_fft, _defocus_separable):
                out = fn(torch.from_numpy(x), params).to(torch.uint8).numpy()
                _check_bound(out, ref, "defocus_blur", (preset, severity, fn.__name__))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_match_the_cpu_generator_at_224px(name):
    x = MOTION["imagenet_inputs"]
    for severity in range(1, 6):
        out = corrupt_batch(torch.from_numpy(x), name, severity, preset="imagenet")
        _check_bound(out.numpy(), corrupt(x, name, severity, preset="imagenet"), name,
                     severity)


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_do_not_depend_on_the_batch_size(name):
    x = torch.from_numpy(_real64()[:24])
    whole = corrupt_batch(x, name, 3)
    parts = torch.cat([corrupt_batch(x[i:i + 5], name, 3) for i in range(0, len(x), 5)])
    assert torch.equal(whole, parts)


def image_stats(clean, out):
    clean, out = clean.astype(np.float64), out.astype(np.float64)
    return (np.abs(out - clean).mean(), out.std(axis=(1, 2)).mean(0),
            out.mean(axis=(1, 2)).mean(0))


def _assert_within(stats, ref, what):
    # the CPU generator's test bound: 5 standard deviations of the reference's run-to-run
    # spread plus half a grey level
    mad, std, mean = stats
    assert abs(mad - ref["mad"]) <= 5 * ref["mad_sd_over_runs"] + 0.5, (what, mad, ref["mad"])
    assert np.all(np.abs(std - ref["std_rgb"])
                  <= 5 * np.array(ref["std_rgb_sd_over_runs"]) + 0.5), (what, std)
    assert np.all(np.abs(mean - ref["mean_rgb"])
                  <= 5 * np.array(ref["mean_rgb_sd_over_runs"]) + 0.5), (what, mean)


def _mean_stats(runs):
    return (np.mean([s[0] for s in runs]), np.mean([s[1] for s in runs], 0),
            np.mean([s[2] for s in runs], 0))


def _check_recorded_statistics(name, key, runs, device="cpu"):
    """Batched outputs' statistics against the original's recorded ones (``key``: cifar at
    32 px or imagenet at 224 px), averaged over ``runs`` draws."""
    inputs = VECTORS["inputs"] if key == "cifar" else MOTION["imagenet_inputs"]
    gen = torch.Generator(device=device).manual_seed(0)
    for severity in range(1, 6):
        ref = STATS[key]["corruptions"][name]["severities"][str(severity)]
        stats = [image_stats(inputs, corrupt_batch(torch.from_numpy(inputs).to(device), name,
                                                   severity, gen, preset=key).cpu().numpy())
                 for _ in range(runs)]
        _assert_within(_mean_stats(stats), ref, (key, name, severity))


@pytest.mark.parametrize("name", RANDOM_BATCHED)
def test_random_match_the_recorded_statistics_at_32px(name):
    _check_recorded_statistics(name, "cifar", 3)


@pytest.mark.parametrize("name", RANDOM_BATCHED)
def test_random_statistics_match_the_cpu_generator_over_64_images(name):
    x = _real64()
    gen = torch.Generator().manual_seed(1)
    for severity in range(1, 6):
        ref = STATS["cifar"]["corruptions"][name]["severities"][str(severity)]
        batched = image_stats(x, corrupt_batch(torch.from_numpy(x), name, severity, gen).numpy())
        cpu = image_stats(x, corrupt(x, name, severity, seed=1))
        _assert_within(batched, dict(ref, mad=cpu[0], std_rgb=cpu[1], mean_rgb=cpu[2]),
                       (name, severity))


@pytest.mark.slow
@pytest.mark.parametrize("name", RANDOM_BATCHED)
def test_random_match_the_recorded_statistics_at_224px(name):
    _check_recorded_statistics(name, "imagenet", 1)


@pytest.mark.parametrize("name", RANDOM_BATCHED)
def test_random_follow_the_generator(name):
    x = torch.from_numpy(VECTORS["inputs"][:4])
    a = corrupt_batch(x, name, 5, torch.Generator().manual_seed(3))
    b = corrupt_batch(x, name, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    c = corrupt_batch(x, name, 5, torch.Generator().manual_seed(4))
    if name != "elastic_transform":  # its severity 5 at 32 px can round back to the same pixels
        assert not torch.equal(a, c)


CBAR_DATA = Path(__file__).parent / "data" / "cbar"
CBAR_STATS = json.loads((CBAR_DATA / "stats.json").read_text())
CBAR_RUNS = {"cifar": 10, "imagenet": 3}


def _cbar_cases():
    from snc.corruptions.batched import CBAR_BATCHED
    from snc.corruptions.cbar import CBAR

    # 224 px cases are slow
    return [pytest.param(b, n, marks=[pytest.mark.slow] if b == "imagenet" else [])
            for b in CBAR_RUNS for n in CBAR[b] if n in CBAR_BATCHED]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
@pytest.mark.parametrize("preset, name", _cbar_cases())
def test_cbar_match_the_recorded_statistics(preset, name, device):
    # tests/test_cbar.py's rule: |d| <= 4 sqrt(sd_ref^2/R + sd^2/M) + 0.1
    inputs = np.load(CBAR_DATA / f"{preset}_cbar.npz")["inputs"]
    # brownish_noise's image means are heavy-tailed (the NumPy generator reaches 0.94 of this
    # bound over 20 seeds at 32 px); CUDA is fast, so it draws twice as many runs there
    runs = CBAR_RUNS[preset] * (2 if device == "cuda" else 1)
    gen = torch.Generator(device=device).manual_seed(0)
    ref = CBAR_STATS[preset]["corruptions"][name]["severities"]
    for k in range(1, 6):
        r = ref[str(k)]
        stats = [image_stats(inputs, corrupt_batch(torch.from_numpy(inputs).to(device), name,
                                                   k, gen, preset=preset).cpu().numpy())
                 for _ in range(runs)]
        for j, field in enumerate(("mad", "std_rgb", "mean_rgb")):
            values = np.array([s[j] for s in stats])
            bound = 4 * np.sqrt(np.square(r[f"{field}_sd_over_runs"]) / r["runs"]
                                + np.square(values.std(axis=0, ddof=1)) / runs) + 0.1
            delta = np.abs(values.mean(axis=0) - np.array(r[field]))
            assert np.all(delta <= bound), (name, k, field, delta, bound)


def _cbar_params(name, plist, size, s):
    """The CPU generator's parameters of ``plist`` (private draws replayed from their seeds) as
    the batched applier's tensors."""
    from snc.corruptions import cbar
    from snc.corruptions.batched import RAYS

    n = len(plist)

    def t(a):
        return torch.tensor(np.asarray(a), dtype=torch.float64)

    if name == "checkerboard_cutout":
        most = int(4 * size // max(0.1 * size, 1))
        table = np.ones((n, most, most))
        for i, p in enumerate(plist):
            grid = int(4 * size // max(p["scales"][0], 1))
            table[i, :grid, :grid] = np.random.RandomState(p["seed"]).uniform(size=(grid, grid))
        return {"angle": t([p["angle"] for p in plist]), "fraction": plist[0]["fraction"],
                "scale": t([p["scales"][0] for p in plist]), "table": t(table)}
    if name in ("inverse_sparkles", "sparkles"):
        one = name == "inverse_sparkles"
        z = np.zeros((n, 1 if one else 5, RAYS))
        for i, p in enumerate(plist):
            prs = np.random.RandomState(p["seed"])
            for j, k in enumerate([p["rays"]] if one else p["nrays"]):
                z[i, j, :k] = [prs.randn() for _ in range(k)]
        if one:
            return {"center": t([p["center"] for p in plist]), "radius": plist[0]["radius"],
                    "rays": torch.tensor([p["rays"] for p in plist]), "z": t(z[:, 0]),
                    "amount": plist[0]["amount"]}
        return {"centers": t([p["centers"] for p in plist]), "radius": plist[0]["radii"][0],
                "rays": torch.tensor(np.array([p["nrays"] for p in plist])), "z": t(z)}
    if name == "pinch_and_twirl":
        return {"angles": t([p["angles"] for p in plist]), "amount": plist[0]["amount"]}
    if name == "transverse_chromatic_abberation":
        z = cbar.level(s, 0.5)
        factors = np.array([1.0, 1 + z / 2, 1 + z])
        perm = [[int(np.argmin(np.abs(factors - v))) for v in p["scales"]] for p in plist]
        return {"factors": t(factors), "perm": torch.tensor(perm)}
    if name == "lines":
        count = int(plist[0]["density"] * size)
        draws = np.zeros((n, count, 3))
        for i, p in enumerate(plist):
            prs = np.random.RandomState(p["seed"])
            draws[i] = [[prs.uniform(), prs.uniform(), prs.uniform()] for _ in range(count)]
        return {"angle": t([p["angle"] for p in plist]), "length": plist[0]["length"],
                "angle_variation": t([p["angle_variation"] for p in plist]), "draws": t(draws)}
    if name == "caustic_refraction":
        return {"time": t([p["time"] for p in plist]), "size": t([p["size"] for p in plist]),
                "eta": plist[0]["eta"], "lens_scale": plist[0]["lens_scale"],
                "lighting_amount": plist[0]["lighting_amount"], "softening": plist[0]["softening"]}
    assert name == "perlin_noise", name
    grads, perm = np.zeros((n, 256, 2)), np.zeros((n, 256), np.int64)
    for i, p in enumerate(plist):
        table, g = cbar._perlin_tables(np.random.RandomState(p["seed"]))
        perm[i], grads[i] = table[:256], g[:256]
    return {"mu": plist[0]["m"][0][0], "grads": t(grads), "perm": torch.tensor(perm),
            "alpha": plist[0]["alpha"]}


# (largest difference, largest fraction of differing values) of the appliers replaying the CPU
# generator's parameters; transverse_chromatic_abberation: its matrices are SciPy's 1-D zooms,
# summed in another order than SciPy's 2-D zoom, whose uint8 output rounds half up
CBAR_REPLAY = {("checkerboard_cutout", "cifar"): (0, 0.0), ("inverse_sparkles", "cifar"): (0, 0.0),
               ("sparkles", "cifar"): (0, 0.0), ("pinch_and_twirl", "cifar"): (0, 0.0),
               ("lines", "cifar"): (0, 0.0),
               ("transverse_chromatic_abberation", "cifar"): (1, 0.01),
               ("checkerboard_cutout", "imagenet"): (0, 0.0),
               ("inverse_sparkles", "imagenet"): (0, 0.0), ("sparkles", "imagenet"): (0, 0.0),
               ("perlin_noise", "imagenet"): (0, 0.0), ("caustic_refraction", "imagenet"): (0, 0.0)}


@pytest.mark.parametrize("name, preset", [
    pytest.param(n, p, marks=[pytest.mark.slow] if p == "imagenet" else [])
    for n, p in sorted(CBAR_REPLAY)])
def test_cbar_appliers_replay_the_cpu_generator(name, preset):
    from snc.corruptions import batched, cbar

    images = np.load(CBAR_DATA / f"{preset}_cbar.npz")["inputs"]
    size = images.shape[1]
    top, frac = CBAR_REPLAY[(name, preset)]
    for k in range(1, 6):
        s = cbar.severity_value(name, k, preset)
        rng = np.random.RandomState(k)
        plist = [cbar.sample_params(name, s, size, rng) for _ in images]
        ref = np.stack([cbar.apply_params(img, name, p) for img, p in zip(images, plist,
                                                                         strict=True)])
        out = getattr(batched, f"_apply_{name}")(torch.from_numpy(images),
                                                 _cbar_params(name, plist, size, s)).numpy()
        diff = np.abs(out.astype(int) - ref.astype(int))
        assert (ref != images).mean() > 0.001, (name, k)  # the replay compares a change
        assert diff.max() <= top and (diff > 0).mean() <= frac, (name, k, diff.max(),
                                                               (diff > 0).mean())


def test_circular_motion_blur_matches_the_original_and_the_cpu_generator():
    # the 21 rotations as one sparse operator in float64, where the original sums float32
    # rotations: at most 1 grey level on at most 0.1 % of the values
    from snc.data.synthetic import make_synthetic

    data = np.load(CBAR_DATA / "cifar_cbar.npz")
    x = data["inputs"]
    y, _ = make_synthetic(4, seed=2, size=64)
    for k in range(1, 6):
        for images, ref in ((x, data[f"circular_motion_blur_{k}"]),
                            (y, corrupt(y, "circular_motion_blur", k))):
            out = corrupt_batch(torch.from_numpy(images), "circular_motion_blur", k).numpy()
            diff = np.abs(out.astype(int) - ref.astype(int))
            assert (ref != images).mean() > 0.1
            assert diff.max() <= 1 and (diff > 0).mean() <= 0.001, (k, diff.max())


@pytest.mark.parametrize("preset", ["cifar", "tinyimagenet",
                                    pytest.param("imagenet", marks=pytest.mark.slow)])
def test_spatter_replays_the_cpu_generator(preset):
    # the batched applier given the NumPy generator's noise fields: every step of OpenCV's
    # (Canny, distance transform, box filters, equalizeHist, filter2D) and the mud branch
    from snc.corruptions import corruption_seed
    from snc.corruptions.batched import _apply_spatter
    from snc.corruptions.params import PARAMS
    from snc.data.synthetic import make_synthetic

    x = {"cifar": VECTORS["inputs"], "imagenet": MOTION["imagenet_inputs"],
         "tinyimagenet": make_synthetic(6, seed=2, size=64)[0]}[preset]
    for severity in range(1, 6):
        params = PARAMS[preset]["spatter"][severity - 1]
        rng = np.random.default_rng(corruption_seed(3, "spatter", severity))
        liquid = np.stack([rng.normal(size=x.shape[1:3], loc=params[0], scale=params[1])
                           for _ in x])
        ref = corrupt(x, "spatter", severity, preset=preset, seed=3)
        out = _apply_spatter(torch.from_numpy(x), params, {"liquid": torch.from_numpy(liquid)})
        assert (ref != x).mean() > 0.01
        np.testing.assert_array_equal(out.to(torch.uint8).numpy(), ref, err_msg=str(severity))


def test_bad_inputs():
    x = torch.from_numpy(VECTORS["inputs"][:2])
    with pytest.raises(ValueError, match="resize them to one size.*folder"):
        corrupt_batch([x[0], torch.zeros(16, 16, 3, dtype=torch.uint8)], "fog", 1)
    assert corrupt_batch([x[0], x[1]], "contrast", 1).shape == x.shape
    with pytest.raises(ValueError, match="uint8"):
        corrupt_batch(x.float(), "fog", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt_batch(x.permute(0, 3, 1, 2), "fog", 1)
    with pytest.raises(ValueError, match="severity must be 1..5"):
        corrupt_batch(x, "fog", 0)
    with pytest.raises(ValueError, match="square images of an even side"):
        corrupt_batch(x[:, :, :31], "blue_noise_sample", 1)
    with pytest.raises(ValueError, match="unknown corruption 'fogg'"):
        corrupt_batch(x, "fogg", 1)


# ----------------------------------------------------------------------------- set generation


def test_out_of_memory_halves_the_batch_and_logs_it(monkeypatch, caplog):
    from snc.corruptions import batched

    calls = []
    real = batched.corrupt_batch

    def small_memory(x, *args, **kwargs):
        calls.append(len(x))
        if len(x) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x, *args, **kwargs)

    monkeypatch.setattr(batched, "corrupt_batch", small_memory)
    x = VECTORS["inputs"][:10]
    with caplog.at_level(logging.WARNING, logger="snc"):
        out = batched.corrupt_in_batches(x, "contrast", 2, seed=0, device="cpu", batch_size=16)
    np.testing.assert_array_equal(out, corrupt(x, "contrast", 2))
    assert calls == [10, 5, 2, 2, 2, 2, 2]  # halved twice, then the size is kept
    assert any("out of memory" in r.getMessage() and "batches of 5" in r.getMessage()
               for r in caplog.records)


def test_cpu_and_auto_without_gpu_keep_the_exact_generator(tmp_path, monkeypatch):
    from snc.corruptions.sets import generate_cifar_style, load_cifar_c, read_manifest

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x = VECTORS["inputs"][:6]
    labels = np.arange(6)
    names = ["gaussian_noise", "contrast"]
    a = generate_cifar_style(x, labels, tmp_path / "a", corruptions=names, progress=False)
    b = generate_cifar_style(x, labels, tmp_path / "b", corruptions=names, progress=False,
                             device="auto")
    assert a["files"] == b["files"] and "backend" not in read_manifest(tmp_path / "b")
    np.testing.assert_array_equal(load_cifar_c(tmp_path / "a", "gaussian_noise")[0][:6],
                                  corrupt(x, "gaussian_noise", 1, seed=int(
                                      np.random.SeedSequence([0, 0]).generate_state(1)[0])))
    with pytest.raises(ValueError, match="no CUDA device"):
        generate_cifar_style(x, labels, tmp_path / "c", corruptions=names, progress=False,
                             device="cuda")


def test_batched_sets_are_written_recorded_and_not_mixed(tmp_path, caplog):
    from snc.corruptions.sets import (
        generate_cifar_style,
        generate_imagenet_style,
        load_cifar_c,
        load_imagenet_c,
    )

    x = VECTORS["inputs"][:6]
    labels = np.arange(6)
    out = tmp_path / "gpu-like"
    with caplog.at_level(logging.INFO, logger="snc"):
        manifest = generate_cifar_style(x, labels, out, corruptions=["contrast", "snow"],
                                        progress=False, batched=True, batch_size=4)
    assert manifest["backend"] == "batched-cpu" and manifest["batch_size"] == 4
    assert any("corrupted snow (2/2)" in r.getMessage() and "images/s" in r.getMessage()
               for r in caplog.records)
    images, y = load_cifar_c(out, "contrast", verify=True)
    for s in range(1, 6):  # deterministic: the exact generator's values
        np.testing.assert_array_equal(images[(s - 1) * 6:s * 6], corrupt(x, "contrast", s))
    again = generate_cifar_style(x, labels, tmp_path / "again", corruptions=["snow"],
                                 progress=False, batched=True, batch_size=4)
    assert again["files"]["snow.npy"] == manifest["files"]["snow.npy"]  # reproducible
    with pytest.raises(ValueError, match="other settings"):
        generate_cifar_style(x, labels, out, corruptions=["contrast"], progress=False)
    # the folder layout
    from PIL import Image

    src = tmp_path / "val" / "n01440764"
    src.mkdir(parents=True)
    for i, img in enumerate(MOTION["imagenet_inputs"][:2]):
        Image.fromarray(img).save(src / f"{i}.png")
    manifest = generate_imagenet_style(tmp_path / "val", tmp_path / "IN-C",
                                       corruptions=["fog", "contrast"], progress=False,
                                       batched=True, resize_crop=False, workers=2)
    assert manifest["backend"] == "batched-cpu"
    assert len(load_imagenet_c(tmp_path / "IN-C", "fog", 5)) == 2


def test_make_corrupted_takes_a_device(tmp_path, monkeypatch, capsys):
    from snc.cli.make_corrupted import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    src = tmp_path / "mine.npz"
    x = VECTORS["inputs"][:3]
    np.savez(src, test_images=x, test_labels=np.arange(3))
    assert main(["--source", str(src), "--out", str(tmp_path / "o"), "--corruptions",
                 "pixelate", "--workers", "1", "--device", "auto"]) == 0
    assert "exact per-image generator" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--source", str(src), "--out", str(tmp_path / "p"), "--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("delta", [1, 2, 3, 4])
def test_glass_blur_row_shuffle_equals_the_pixel_by_pixel_loop(delta):
    from snc.corruptions.batched import glass_shuffle_row

    gen = torch.Generator().manual_seed(delta)
    n, h, w = 3, 20, 24
    x = torch.randint(0, 256, (n, h, w, 3), generator=gen).to(torch.uint8)
    loop, rows_at_once = x.clone(), x.clone()
    images = torch.arange(n)
    cols = list(range(w - delta, delta, -1))
    for hh in range(h - delta, delta, -1):
        d = torch.randint(-delta, delta, (len(cols), n, 2), generator=gen)
        for j, ww in enumerate(cols):  # the original's visiting order, one pixel at a time
            loop[images, hh, ww] = loop[images, hh + d[j, :, 1], ww + d[j, :, 0]]
        glass_shuffle_row(rows_at_once, hh, delta, d)
    assert torch.equal(loop, rows_at_once)


# ----------------------------------------------------------------------------- on a GPU

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# on CUDA, cuBLAS sums the filters' matrix products in another order than the CPU
CUDA_BOUND = (1, 0.001)


@CUDA
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_cuda_deterministic_match_the_cpu_generator(name):
    for preset, x in (("cifar", VECTORS["inputs"]), ("imagenet", MOTION["imagenet_inputs"])):
        for severity in range(1, 6):
            out = corrupt_batch(torch.from_numpy(x).cuda(), name, severity,
                                torch.Generator(device="cuda"), preset=preset)
            assert out.is_cuda and out.dtype == torch.uint8
            diff = np.abs(out.cpu().numpy().astype(int)
                          - corrupt(x, name, severity, preset=preset).astype(int))
            assert diff.max() <= CUDA_BOUND[0], (preset, severity, diff.max())
            assert (diff > 0).mean() <= CUDA_BOUND[1], (preset, severity, (diff > 0).mean())


@CUDA
@pytest.mark.parametrize("name", RANDOM_BATCHED)
def test_cuda_random_match_the_recorded_statistics(name):
    _check_recorded_statistics(name, "cifar", 3, "cuda")
    _check_recorded_statistics(name, "imagenet", 1, "cuda")


# ----------------------------------------------------------- independence of the batch size

BLOCK_CASES = [("gaussian_noise", "cifar"), ("shot_noise", "cifar"), ("glass_blur", "cifar"),
               ("ripple", "cifar"), ("brownish_noise", "cifar"), ("spatter", "cifar")]


def _seventy() -> np.ndarray:
    return np.concatenate([_real64(), VECTORS["inputs"][:6]])  # 70 images: 2 blocks and a part


@pytest.mark.parametrize("name, preset", BLOCK_CASES)
def test_random_sets_do_not_depend_on_the_batch_size(name, preset):
    from snc.corruptions.batched import corrupt_in_batches

    x = _seventy()
    whole = corrupt_in_batches(x, name, 3, seed=5, device="cpu", preset=preset, batch_size=500)
    assert (whole != x).mean() > 0.01  # the corruption did something
    for batch_size in (1, 7, 33, 64):
        out = corrupt_in_batches(x, name, 3, seed=5, device="cpu", preset=preset,
                                 batch_size=batch_size)
        np.testing.assert_array_equal(out, whole, err_msg=f"{name} batch_size={batch_size}")
    # a part of the set corrupted alone, given its place in the set, is that part of the set
    part = corrupt_in_batches(x[20:50], name, 3, seed=5, device="cpu", preset=preset,
                              batch_size=9, first=20)
    np.testing.assert_array_equal(part, whole[20:50])
    other = corrupt_in_batches(x, name, 3, seed=6, device="cpu", preset=preset, batch_size=500)
    assert not np.array_equal(other, whole)


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "ripple"])
def test_out_of_memory_halving_keeps_the_result(monkeypatch, caplog, name):
    from snc.corruptions import batched

    x = _seventy()
    expected = batched.corrupt_in_batches(x, name, 2, seed=1, device="cpu", batch_size=500)
    calls = []
    real = batched.corrupt_batch

    def small_memory(images, *args, **kwargs):
        calls.append(len(images))
        if len(images) > 20:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(images, *args, **kwargs)

    monkeypatch.setattr(batched, "corrupt_batch", small_memory)
    with caplog.at_level(logging.WARNING, logger="snc"):
        out = batched.corrupt_in_batches(x, name, 2, seed=1, device="cpu", batch_size=64)
    np.testing.assert_array_equal(out, expected)
    assert calls[:3] == [64, 32, 16] and max(calls[3:]) <= 16  # halved down to 16, kept
    assert any("batches of 16" in r.getMessage() for r in caplog.records)


def test_random_blocks_cover_the_batch_and_check_their_input():
    from snc.corruptions.batched import BLOCK, RandomBlocks, corrupt_in_batches

    stream = RandomBlocks(0, first=BLOCK - 3, n=BLOCK + 5, device="cpu")
    assert [(rows, lo, hi) for _, rows, lo, hi in stream.parts] == [
        (BLOCK, BLOCK - 3, BLOCK), (BLOCK, 0, BLOCK), (BLOCK, 0, 2)]
    x = torch.from_numpy(VECTORS["inputs"][:4])
    with pytest.raises(ValueError, match="covers 5 images.*n=len"):
        corrupt_batch(x, "gaussian_noise", 1, RandomBlocks(0, 0, 5, "cpu"))
    with pytest.raises(ValueError, match="first >= 0"):
        RandomBlocks(0, -1, 5, "cpu")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        corrupt_in_batches(VECTORS["inputs"][:4], "gaussian_noise", 1, seed=0, device="cpu",
                           batch_size=0)


def test_batched_sets_resume_with_another_batch_size(tmp_path):
    from snc.corruptions.sets import MANIFEST, generate_cifar_style, load_cifar_c

    x, labels = _seventy(), np.arange(70)
    a = generate_cifar_style(x, labels, tmp_path / "a", corruptions=["snow", "glass_blur"],
                             progress=False, batched=True, batch_size=500)
    assert a["random_blocks"] == 32
    # half made with batches of 7, finished with batches of 64: the same files
    generate_cifar_style(x, labels, tmp_path / "b", corruptions=["snow"], progress=False,
                         batched=True, batch_size=7)
    b = generate_cifar_style(x, labels, tmp_path / "b", corruptions=["snow", "glass_blur"],
                             progress=False, batched=True, batch_size=64)
    assert a["files"] == b["files"] and b["batch_size"] == 64
    np.testing.assert_array_equal(load_cifar_c(tmp_path / "b", "snow", verify=True)[0],
                                  load_cifar_c(tmp_path / "a", "snow")[0])
    # a set made before the per-block draws (no "random_blocks") is not completed
    old = json.loads((tmp_path / "a" / MANIFEST).read_text())
    del old["random_blocks"]
    (tmp_path / "a" / MANIFEST).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="other settings"):
        generate_cifar_style(x, labels, tmp_path / "a", corruptions=["snow"], progress=False,
                             batched=True)


def test_batched_folder_sets_do_not_depend_on_the_chunk(tmp_path):
    from PIL import Image

    from snc.corruptions.sets import generate_imagenet_style

    src = tmp_path / "val" / "n01440764"
    src.mkdir(parents=True)
    for i, img in enumerate(VECTORS["inputs"][:5]):
        Image.fromarray(img).save(src / f"{i}.png")
    for chunk in (2, 5):
        generate_imagenet_style(tmp_path / "val", tmp_path / f"c{chunk}", corruptions=[
            "gaussian_noise"], preset="cifar", progress=False, batched=True,
            resize_crop=False, chunk=chunk)
    for s in range(1, 6):
        for i in range(5):
            rel = Path("gaussian_noise") / str(s) / "n01440764" / f"{i}.JPEG"
            assert (tmp_path / "c2" / rel).read_bytes() == (tmp_path / "c5" / rel).read_bytes()


def test_bench_times_the_named_rows_best_of_repeats(capsys):
    from snc.cli.bench_corruptions import main

    assert main(["--n32", "4", "--n224", "1", "--repeats", "2", "--corruptions", "contrast",
                 "ripple"]) == 0
    out = capsys.readouterr().out
    assert "contrast" in out and "ripple" in out and "fog" not in out
    assert "CIFAR-10-C, 10,000" not in out  # a set's estimate needs all its rows
    with pytest.raises(SystemExit):
        main(["--repeats", "0"])


def test_cbar_corruptions_run_on_other_square_sizes():
    from snc.corruptions.cbar import CBAR

    x = np.ascontiguousarray(VECTORS["inputs"][:3, :16, :16])
    for name in CBAR["cifar"]:
        out = corrupt_batch(torch.from_numpy(x), name, 1, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == torch.uint8, name
    # int(0.05 * 16) = 0 lines at severity 1, as the NumPy generator draws none
    np.testing.assert_array_equal(corrupt_batch(torch.from_numpy(x), "lines", 1).numpy(), x)
    np.testing.assert_array_equal(corrupt(x, "lines", 1), x)
