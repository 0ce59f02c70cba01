"""Generated corrupted sets in the published layouts load through the project's loaders."""

import json

import numpy as np
import pytest
from PIL import Image

from snc.corruptions import corrupt
from snc.corruptions.sets import (
    generate_cifar_style,
    generate_imagenet_style,
    load_cifar_c,
    load_imagenet_c,
    read_manifest,
    severity_rows,
)


def small_set(n=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 10, n)


def test_generated_cifar_style_set_loads_and_resumes(tmp_path):
    images, labels = small_set()
    out = tmp_path / "SYN-C"
    names = ["contrast", "gaussian_noise"]
    manifest = generate_cifar_style(images, labels, out, corruptions=names, seed=5,
                                    progress=False, source="test arrays")
    assert manifest["generated"] is True and set(manifest["files"]) == {
        "contrast.npy", "gaussian_noise.npy", "labels.npy"}
    x, y = load_cifar_c(out, "contrast", verify=True)
    assert x.shape == (60, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, np.tile(labels, 5))
    for s in range(1, 6):  # severity blocks in order, test-set order inside each block
        np.testing.assert_array_equal(x[severity_rows(60, s)], corrupt(images, "contrast", s))
    noisy, _ = load_cifar_c(out, "gaussian_noise")
    assert not np.array_equal(noisy[:12], images)
    # resumable: finished files are not rewritten
    stamp = (out / "contrast.npy").stat().st_mtime_ns
    generate_cifar_style(images, labels, out, corruptions=names + ["fog"], seed=5,
                         progress=False)
    assert (out / "contrast.npy").stat().st_mtime_ns == stamp
    assert "fog.npy" in read_manifest(out)["files"]
    # the draws do not depend on the number of processes
    other = tmp_path / "SYN-C-2"
    generate_cifar_style(images, labels, other, corruptions=["gaussian_noise"], seed=5,
                         workers=2, progress=False)
    np.testing.assert_array_equal(load_cifar_c(other, "gaussian_noise")[0], noisy)
    with pytest.raises(ValueError, match="other settings"):
        generate_cifar_style(images, labels, out, corruptions=names, seed=6, progress=False)


def test_cifar_c_loader_reads_the_published_layout_and_names_problems(tmp_path):
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    images, labels = small_set(n=4)
    np.save(root / "fog.npy", np.concatenate([images] * 5))
    np.save(root / "labels.npy", np.tile(labels, 5).astype(np.uint8))  # published: uint8
    x, y = load_cifar_c(root, "fog")
    assert x.shape == (20, 32, 32, 3) and y.dtype == np.int64
    assert read_manifest(root) == {"generated": False}
    with pytest.raises(FileNotFoundError, match="download_cifar_c.py"):
        load_cifar_c(root, "snow")
    # a truncated file is detected and named
    raw = (root / "fog.npy").read_bytes()
    (root / "fog.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="fog.npy is truncated or corrupt"):
        load_cifar_c(root, "fog")
    np.save(root / "fog.npy", np.concatenate([images] * 4)[:14])
    with pytest.raises(ValueError, match="5 equal severity blocks"):
        load_cifar_c(root, "fog")


def test_generated_imagenet_style_set_loads_through_the_imagenet_c_loader(tmp_path):
    src = tmp_path / "val"
    rng = np.random.default_rng(0)
    for cls in ("n01440764", "n01443537"):
        (src / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                src / cls / f"ILSVRC2012_val_{cls}_{i}.JPEG")
    out = tmp_path / "ImageNet-C"
    manifest = generate_imagenet_style(src, out, corruptions=["contrast", "shot_noise"],
                                       preset="tinyimagenet", resize_crop=False, progress=False,
                                       chunk=3)
    assert manifest["generated"] and json.loads((out / "manifest.json").read_text())["layout"]
    ds = load_imagenet_c(out, "shot_noise", 4)
    assert len(ds) == 4 and ds.classes == ["n01440764", "n01443537"]
    img, label = ds[3]
    assert img.size == (64, 64) and label == 1
    with pytest.raises(FileNotFoundError, match="zenodo"):
        load_imagenet_c(out, "fog", 1)


def test_make_corrupted_script_from_an_npz(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "make_corrupted", Path(__file__).parents[1] / "scripts" / "make_corrupted.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    images, labels = small_set(n=5)
    src = tmp_path / "mine.npz"
    np.savez(src, train_images=images, train_labels=labels, test_images=images,
             test_labels=labels)
    out = tmp_path / "mine-C"
    assert script.main(["--source", str(src), "--out", str(out), "--corruptions", "pixelate",
                        "--workers", "1"]) == 0
    x, y = load_cifar_c(out, "pixelate", verify=True)
    assert x.shape == (25, 32, 32, 3) and len(y) == 25


def test_imagenet_style_generation_resizes_and_crops_as_published(tmp_path):
    src = tmp_path / "val" / "n01440764"
    src.mkdir(parents=True)
    Image.fromarray(np.full((300, 500, 3), 90, dtype=np.uint8)).save(src / "a.JPEG")
    out = tmp_path / "IN-C"
    generate_imagenet_style(tmp_path / "val", out, corruptions=["contrast"], progress=False)
    img = Image.open(out / "contrast" / "3" / "n01440764" / "a.JPEG")
    assert img.size == (224, 224)  # Resize(256) + CenterCrop(224), then corrupted, JPEG 85
