"""Data: CIFAR files in the official layout, the CIFAR-C downloader, the array loader's
augmentation distribution, AugMix ops, the synthetic set."""

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from snc.augment.augmix import OPS, AugMix, apply_op
from snc.data.cifar import load_cifar, read_batch
from snc.data.download import download_cifar_c, download_resumable
from snc.data.loader import ArrayLoader
from snc.data.synthetic import make_synthetic
from snc.reference.cifar import pil_reference_op

# ------------------------------------------------------------------------------- CIFAR files


def write_fake_cifar10(root, n_per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
                 "batch_label": name}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_cifar_reader_parses_the_official_layout(tmp_path):
    folder = write_fake_cifar10(tmp_path)
    (xtr, ytr), (xte, yte) = load_cifar("cifar10", tmp_path, download=False, verify=False)
    assert xtr.shape == (20, 32, 32, 3) and xte.shape == (4, 32, 32, 3)
    raw = read_batch(folder / "test_batch")
    # rows are stored channel-major (1024 R, then G, then B)
    np.testing.assert_array_equal(xte[0, :, :, 1], raw["data"][0, 1024:2048].reshape(32, 32))
    assert ytr.dtype == np.int64 and yte.tolist() == [int(v) for v in raw["labels"]]


def test_cifar_reader_verifies_checksums_and_refuses_code(tmp_path):
    write_fake_cifar10(tmp_path)
    with pytest.raises(ValueError, match="does not match its published MD5"):
        load_cifar("cifar10", tmp_path, download=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        read_batch(tmp_path / "cifar-10-batches-py" / "test_batch")


def test_missing_cifar_names_the_archive_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_cifar("cifar10", tmp_path, download=False)


# ------------------------------------------------------------------------------- downloader


def fake_cifar_c_tar(path):
    rng = np.random.default_rng(0)
    files = {}
    with tarfile.open(path, "w") as tar:
        for name, array in (("fog.npy", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)),
                            ("labels.npy", np.arange(10, dtype=np.uint8))):
            buf = io.BytesIO()
            np.save(buf, array)
            payload = buf.getvalue()
            files[name] = hashlib.md5(payload).hexdigest()
            info = tarfile.TarInfo(f"CIFAR-10-C/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest(), files


def test_cifar_c_download_verifies_unpacks_and_resumes(server, tmp_path):
    served, base = server
    md5, files = fake_cifar_c_tar(served / "CIFAR-10-C.tar")
    root = tmp_path / "data"
    root.mkdir()
    payload = (served / "CIFAR-10-C.tar").read_bytes()
    (root / "CIFAR-10-C.tar.part").write_bytes(payload[:3000])  # an interrupted download
    out = download_cifar_c("cifar10", root, url=f"{base}/CIFAR-10-C.tar", md5=md5,
                           file_md5=files, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["fog.npy", "labels.npy"]
    assert not (root / "CIFAR-10-C.tar").exists() and not (root / "CIFAR-10-C.tar.part").exists()
    # a corrupt unpacked file is detected and named
    (out / "fog.npy").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"fog.npy \(MD5 mismatch"):
        from snc.data.download import verify_files
        verify_files(out, files)


def test_download_checksum_mismatch_is_named_and_removed(server, tmp_path):
    served, base = server
    (served / "CIFAR-100-C.tar").write_bytes(b"not the archive")
    with pytest.raises(ValueError, match="CIFAR-100-C.tar from .* has MD5 .* expected "
                                         "11f0ed0f1191edbf9fa23466ae6021d3"):
        download_cifar_c("cifar100", tmp_path, url=f"{base}/CIFAR-100-C.tar", progress=False)
    assert not list(tmp_path.glob("CIFAR-100-C.tar*"))
    dest = download_resumable(f"{base}/CIFAR-100-C.tar", tmp_path / "x.tar",
                              hashlib.md5(b"not the archive").hexdigest(), progress=False)
    assert dest.read_bytes() == b"not the archive"


# ------------------------------------------------------------------------------- loader


def test_loader_crop_flip_matches_torchvision_distribution():
    """Offsets of RandomCrop(32, padding=4) are uniform on [0, 8]^2 and flips have p = 1/2;
    compare where a single bright pixel lands under both pipelines."""
    import torchvision.transforms as T

    n = 4000
    img = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    img[0, 10, 5] = 255
    loader = ArrayLoader(np.repeat(img, n, 0), np.zeros(n), batch_size=n, mean=[0, 0, 0],
                         std=[1, 1, 1], train=True, seed=0)
    (x, _), = list(loader)
    ours = x[:, 0].flatten(1).argmax(1)
    torch.manual_seed(0)
    tv = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.PILToTensor()])
    pil = Image.fromarray(img[0])
    theirs = torch.stack([tv(pil)[0].flatten().argmax() for _ in range(n)])
    rows_o, rows_t = ours // 32, theirs // 32
    assert rows_o.min() == rows_t.min() == 6 and rows_o.max() == rows_t.max() == 14
    hist_o = torch.bincount(rows_o - 6, minlength=9).float() / n
    hist_t = torch.bincount(rows_t - 6, minlength=9).float() / n
    assert (hist_o - hist_t).abs().max() < 0.03 and (hist_o - 1 / 9).abs().max() < 0.03
    flipped_o = ((ours % 32) > 15).float().mean()
    flipped_t = ((theirs % 32) > 15).float().mean()
    assert abs(flipped_o - 0.5) < 0.03 and abs(flipped_t - 0.5) < 0.03
    lost = (x[:, 0].flatten(1).max(1).values == 0).float().mean()
    assert lost == 0  # a pixel at (10, 5) is never cropped away with padding 4


def test_loader_order_is_seeded_and_eval_is_ordered():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(3, 3).repeat(4, 1).repeat(4, 2)
    y = np.arange(10)
    a = ArrayLoader(x, y, batch_size=4, mean=[0] * 3, std=[1] * 3, train=True, padding=0,
                    flip=False, seed=3)
    b = ArrayLoader(x, y, batch_size=4, mean=[0] * 3, std=[1] * 3, train=True, padding=0,
                    flip=False, seed=3)
    la = torch.cat([t for _, t in a])
    assert torch.equal(la, torch.cat([t for _, t in b])) and sorted(la.tolist()) == list(range(10))
    assert len(a) == 3
    ev = ArrayLoader(x, y, batch_size=4, mean=[0] * 3, std=[1] * 3)
    assert torch.cat([t for _, t in ev]).tolist() == list(range(10))


# ------------------------------------------------------------------------------- AugMix


@pytest.mark.parametrize("op", OPS)
def test_augmix_ops_match_the_pil_reference(op):
    images, _ = make_synthetic(8, 1)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    for level in (0.4, 2.9):
        for sign in (1.0, -1.0):
            ref = np.stack([np.asarray(pil_reference_op(op, Image.fromarray(im), level, sign))
                            for im in images])
            out = apply_op(op, batch, torch.full((8,), level), torch.full((8,), sign))
            diff = np.abs(out.permute(0, 2, 3, 1).numpy().astype(int) - ref.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (op, level, sign)


def test_augmix_views_mix_around_the_clean_image():
    images, _ = make_synthetic(16, 2)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    aug = AugMix([0.5] * 3, [0.5] * 3)
    g = torch.Generator().manual_seed(0)
    v1, v2 = aug(x, g), aug(x, g)
    clean = aug.normalize(x)
    assert v1.shape == clean.shape and not torch.allclose(v1, v2)
    assert (v1 - clean).abs().mean() > 0.01 and v1.abs().max() <= 1.0 + 1e-5
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(aug(x, g2), v1)  # reproducible from the generator


# ------------------------------------------------------------------------------- synthetic


def test_synthetic_set_is_balanced_deterministic_and_style_varies():
    a, ya = make_synthetic(200, 7)
    b, yb = make_synthetic(200, 7)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert a.shape == (200, 32, 32, 3) and a.dtype == np.uint8
    assert np.bincount(ya).tolist() == [20] * 10
    # style is random: the mean colour of one class spreads widely
    means = a[ya == 0].reshape(20, -1, 3).mean(1)
    assert means.std(0).min() > 20
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic(10, 0, num_classes=11)


def test_batched_augmix_matches_the_reference_augmix_statistically():
    """Same op set, levels, chain depths and mixing distributions as the per-image PIL AugMix:
    the distance of a view from its clean image has the same distribution (mean within four
    standard errors, quantiles close)."""
    import torchvision.transforms as T

    from snc.reference.cifar import augmix_pil

    images, _ = make_synthetic(96, 4)
    mean, std = [0.5] * 3, [0.5] * 3
    preprocess = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    np.random.seed(10)
    clean = torch.stack([preprocess(Image.fromarray(im)) for im in images])
    ref = torch.stack([torch.stack([augmix_pil(Image.fromarray(im), preprocess)
                                    for im in images]) for _ in range(8)])
    aug = AugMix(mean, std)
    g = torch.Generator().manual_seed(10)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    ours = torch.stack([aug(x, g) for _ in range(8)])
    d_ref = (ref - clean).abs().mean(dim=(2, 3, 4)).flatten()
    d_ours = (ours - clean).abs().mean(dim=(2, 3, 4)).flatten()
    se = (d_ref.var() / len(d_ref) + d_ours.var() / len(d_ours)).sqrt()
    assert abs(d_ours.mean() - d_ref.mean()) < 4 * se
    q = torch.tensor([0.1, 0.5, 0.9])
    assert (torch.quantile(d_ours, q) - torch.quantile(d_ref, q)).abs().max() < 0.03
    assert abs(ours.mean() - ref.mean()) < 0.02 and abs(ours.std() - ref.std()) < 0.02
