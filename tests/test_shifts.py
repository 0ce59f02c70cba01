"""The shift registry: class lists, fit checks, finding, downloading and opening tiny fakes of
the published test sets in their published layouts."""

import dataclasses
import hashlib
import io
import json
import re
import tarfile
import zipfile

import numpy as np
import pytest

from snc.errors import ConfigError
from snc.shifts import (
    check_fits,
    download,
    get_shift,
    imagenet_wnids,
    list_shifts,
    locate,
    open_single,
    severity_dir,
)
from snc.shifts import entries as shifts

# ------------------------------------------------------------------------------- class lists


def test_class_lists_are_consistent():
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    for name in ("imagenet_r", "imagenet_a"):
        s = get_shift(name)
        sub = s.class_wnids
        assert len(sub) == len(set(sub)) == 200 == s.num_classes and list(sub) == sorted(sub)
        assert set(sub) <= set(wnids)
        assert len(s.class_subset) == 200 and list(s.class_subset) == sorted(s.class_subset)
        assert [wnids[i] for i in s.class_subset] == list(sub)
    r, a = get_shift("imagenet_r").class_wnids, get_shift("imagenet_a").class_wnids
    assert r != a and len(set(r) & set(a)) < 200


def test_class_lists_match_timm_when_installed():
    """An independent copy of the same three lists."""
    timm = pytest.importorskip("timm")
    from pathlib import Path

    info = Path(timm.__file__).parent / "data" / "_info"
    assert tuple((info / "imagenet_synsets.txt").read_text().split()) == imagenet_wnids()
    for name in ("imagenet_r", "imagenet_a"):
        theirs = sorted((info / f"{name}_synsets.txt").read_text().split())
        assert tuple(theirs) == get_shift(name).class_wnids


def test_c_bar_entries_follow_the_published_csv_order():
    c10, inet = get_shift("cifar10c_bar"), get_shift("imagenetc_bar")
    assert c10.corruptions[0] == "blue_noise_sample" and len(c10.corruptions) == 10
    assert c10.corruptions[-1] == "transverse_chromatic_abberation"
    assert inet.corruptions[0] == "caustic_refraction" and len(inet.corruptions) == 10
    assert inet.severities["caustic_refraction"] == (2.35, 3.2, 4.9, 6.6, 9.15)
    assert get_shift("cifar100c_bar").corruptions == c10.corruptions
    assert not c10.published and c10.generated_ok and inet.published and not inet.checksums


def test_registry_lookups_and_published_checksums_are_well_formed():
    names = list_shifts()
    assert {"cifar10c", "cifar100c", "imagenetc", "cifar10c_bar", "cifar100c_bar",
            "imagenetc_bar", "cifar10_1", "imagenet_r", "imagenet_a", "imagenet_sketch",
            "imagenet_v2"} <= set(names)
    with pytest.raises(ValueError, match=r"unknown shift 'imagenet_x'.*cifar10_1.*imagenet_r"):
        get_shift("imagenet_x")
    for name in names:
        s = get_shift(name)
        assert set(s.checksums) <= set(s.files)
        for c in s.checksums.values():
            algo, _, hexd = c.partition(":")
            assert {"md5": 32, "sha256": 64}[algo] == len(hexd) and int(hexd, 16) >= 0
        assert s.checksum_source and s.layout and s.source.count("http") >= 1
    from snc.data.download import CIFAR_C

    assert get_shift("cifar10c").checksums == {"CIFAR-10-C.tar": f"md5:{CIFAR_C['cifar10'][1]}"}


# ------------------------------------------------------------------------------- fit checks


def test_check_fits_names_the_mismatch_and_the_sets_that_fit():
    check_fits(get_shift("cifar10_1"), "cifar10", 10)
    check_fits(get_shift("imagenet_r"), "imagenet", 1000)
    check_fits(get_shift("cifar100c"), "npz", 100)  # an unknown dataset: judged by its classes
    with pytest.raises(ConfigError, match=r"cifar10_1 is a CIFAR-10 test set.*100 classes "
                                          r"\(cifar100\).*use shifts=\[cifar100c, cifar100c_bar"):
        check_fits(get_shift("cifar10_1"), "cifar100", 100)
    with pytest.raises(ConfigError, match=r"imagenet_a is an ImageNet test set \(1000 classes\); "
                                          r"this model has 10 classes.*cifar10c"):
        check_fits(get_shift("imagenet_a"), "cifar10", 10)
    with pytest.raises(ConfigError, match="1000 classes"):
        check_fits(get_shift("imagenet_v2"), "imagenet", 200)
    with pytest.raises(ConfigError, match="CIFAR-100 test set"):
        check_fits(get_shift("cifar100c"), "cifar10", 10)


# ------------------------------------------------------------------------------- fakes


def jpeg_bytes(value=0):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def fake_folder_set(root, layout):
    """``layout``: {class folder: [file names]}."""
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / folder / f).write_bytes(jpeg_bytes())
    return root


def fake_cifar10_1(folder, n=20, label_dtype=np.int32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(label_dtype)
    np.save(folder / "cifar10.1_v6_data.npy", images)
    np.save(folder / "cifar10.1_v6_labels.npy", labels)
    return images, labels


def sha(path):
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def with_checksums_of(monkeypatch, name, **changes):
    """Replaces registry entry ``name`` by a copy with ``changes`` for this test."""
    entry = dataclasses.replace(get_shift(name), **changes)
    monkeypatch.setitem(shifts._SHIFTS, name, entry)
    return entry


# ------------------------------------------------------------------------------- opening


def test_imagenet_r_labels_are_the_sets_own_and_map_into_the_1000_head(tmp_path):
    s = get_shift("imagenet_r")
    w = s.class_wnids
    root = fake_folder_set(tmp_path / "imagenet-r", {w[5]: ["b.jpg", "a.jpg"], w[0]: ["c.jpg"],
                                                     w[199]: ["d.png"]})
    (root / "README.txt").write_text("top-level files are not classes")
    (root / w[0] / "notes.txt").write_text("not an image")
    ds = open_single(s, root)
    assert [(p.split("/")[-2:], y) for p, y in ds.samples] == [
        ([w[0], "c.jpg"], 0), ([w[5], "a.jpg"], 5), ([w[5], "b.jpg"], 5), ([w[199], "d.png"], 199)]
    assert ds.images is None and ds.class_subset == s.class_subset and ds.num_classes == 200
    head = imagenet_wnids()
    assert [head[ds.class_subset[y]] for _, y in ds.samples] == [w[0], w[5], w[5], w[199]]
    assert ds.partial and ds.found == 4 and ds.expected == 30_000
    assert any("4 images where 30000 are published" in n for n in ds.notes)
    assert any("197 of 200 class folders are absent" in n for n in ds.notes)
    assert not ds.verified


def test_unknown_wnid_folders_are_named(tmp_path):
    a = get_shift("imagenet_a")
    not_in_a = next(w for w in imagenet_wnids() if w not in set(a.class_wnids))
    root = fake_folder_set(tmp_path / "imagenet-a", {a.class_wnids[0]: ["x.jpg"],
                                                     not_in_a: ["y.jpg"], "n99999999": ["z.jpg"]})
    with pytest.raises(ConfigError, match=rf"2 folders are not classes of ImageNet-A "
                                          rf"\(\['{not_in_a}', 'n99999999'\]\)"):
        open_single(a, root)


def test_imagenet_v2_folders_are_class_indices_sorted_as_numbers(tmp_path):
    s = get_shift("imagenet_v2")
    root = fake_folder_set(tmp_path / s.dirname, {"10": ["q.jpeg"], "2": ["p.jpeg", "o.jpeg"],
                                                  "0": ["n.jpeg"], "999": ["m.jpeg"]})
    ds = open_single(s, root)
    assert [y for _, y in ds.samples] == [0, 2, 2, 10, 999]  # "10" after "2", unlike text order
    assert [p.split("/")[-1] for p, _ in ds.samples] == ["n.jpeg", "o.jpeg", "p.jpeg", "q.jpeg",
                                                         "m.jpeg"]
    assert ds.class_subset is None
    fake_folder_set(root, {"1000": ["x.jpeg"], "n01440764": ["y.jpeg"]})
    with pytest.raises(ConfigError, match=r"\['1000', 'n01440764'\].*class-index folders 0..999"):
        open_single(s, root)


def test_imagenet_sketch_uses_the_1000_wnids(tmp_path):
    s = get_shift("imagenet_sketch")
    w = imagenet_wnids()
    root = fake_folder_set(tmp_path / "sketch", {w[999]: ["sketch_1.JPEG"], w[1]: ["s.JPEG"]})
    ds = open_single(s, root)
    assert [y for _, y in ds.samples] == [1, 999] and ds.num_classes == 1000


def test_cifar10_1_arrays_shapes_and_checksums(tmp_path, monkeypatch):
    folder = tmp_path / "CIFAR-10.1"
    images, labels = fake_cifar10_1(folder)
    s = get_shift("cifar10_1")
    # the real published checksums: the fake files do not match and are named with the fix
    with pytest.raises(ConfigError, match=r"cifar10.1_v6_data.npy does not match its published "
                                          r"checksum.*delete .*cifar10.1_v6_data.npy and run "
                                          r"`python -m snc.shifts download cifar10_1"):
        open_single(s, folder)
    s = with_checksums_of(monkeypatch, "cifar10_1", checksums={
        f: sha(folder / f) for f in s.files})
    ds = open_single(s, folder)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (20, 32, 32, 3)
    assert np.array_equal(ds.images, images) and ds.labels.dtype == np.int64
    assert np.array_equal(ds.labels, labels) and ds.samples is None and ds.verified
    assert ds.partial and "20 images where 2000 are published" in ds.notes[0]
    np.save(folder / "cifar10.1_v6_data.npy", np.zeros((20, 3, 32, 32), np.uint8))
    s = with_checksums_of(monkeypatch, "cifar10_1", checksums={})
    with pytest.raises(ConfigError, match=r"expected uint8 \(N, 32, 32, 3\), got uint8 "
                                          r"\(20, 3, 32, 32\)"):
        open_single(s, folder)
    fake_cifar10_1(folder, n=20)
    np.save(folder / "cifar10.1_v6_labels.npy", np.arange(20))
    with pytest.raises(ConfigError, match=r"labels must lie in 0..9, found 0..19"):
        open_single(s, folder)


# ------------------------------------------------------------------------------- locating


def test_missing_sets_name_url_layout_and_command(tmp_path):
    for name, expect in (
            ("imagenet_r", [r"imagenet-r\.tar", r"imagenet-r/<wnid>/\*\.jpg"]),
            ("imagenet_v2", [r"imagenetv2-matched-frequency\.tar\.gz",
                             r"<class index 0-999>/\*\.jpeg"]),
            ("cifar10_1", [r"CIFAR-10\.1/raw/master/datasets/cifar10\.1_v6_data\.npy",
                           r"uint8 \(2000, 32, 32, 3\)"]),
            ("imagenetc", [r"zenodo\.org/record/2235448/files/noise\.tar",
                           r"<corruption>/<severity 1-5>/<wnid>"])):
        with pytest.raises(FileNotFoundError) as err:
            locate(get_shift(name), tmp_path)
        text = str(err.value)
        for pattern in expect + [rf"python -m snc\.shifts download {name} --data-dir "
                                 rf"{tmp_path}"]:
            assert re.search(pattern, text), (pattern, text)
    with pytest.raises(FileNotFoundError, match=r"not published for download.*generate"):
        locate(get_shift("cifar10c_bar"), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"by hand from https://drive\.google\.com"):
        locate(get_shift("imagenet_sketch"), tmp_path)


def test_locate_finds_aliases_and_names_what_a_partial_grid_lacks(tmp_path):
    s = get_shift("imagenetc_bar")
    root = tmp_path / "cbar_download"  # where the preprocessed archive unpacks
    for c in s.corruptions:
        for k in range(1, 6):
            (root / c / str(k) / "n01440764").mkdir(parents=True)
    assert locate(s, tmp_path) == root
    assert severity_dir(s, root, "caustic_refraction", 3) == root / "caustic_refraction" / "3"
    made = tmp_path / "ImageNet-C-Bar"  # the make script's names: the severity value, 2 decimals
    for c, values in s.severities.items():
        for v in values:
            (made / c / f"{v:.2f}" / "n01440764").mkdir(parents=True)
    assert locate(s, tmp_path) == made
    assert severity_dir(s, made, "plasma_noise", 1) == made / "plasma_noise" / "4.75"
    (made / "plasma_noise" / "4.75").rename(made / "plasma_noise" / "x")
    assert locate(s, tmp_path) == root  # the complete alias
    with pytest.raises(FileNotFoundError, match=r"ImageNet-C-Bar lacks plasma_noise/1"):
        locate(s, tmp_path, root=made)
    c10 = get_shift("cifar10c")
    (tmp_path / "CIFAR-10-C").mkdir()
    (tmp_path / "CIFAR-10-C" / "labels.npy").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10-C lacks gaussian_noise.npy, "
                                                r"shot_noise.npy"):
        locate(c10, tmp_path)


# ------------------------------------------------------------------------------- downloading


def make_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_download_verifies_resumes_and_unpacks_a_tar(tmp_path, monkeypatch, caplog):
    served = tmp_path / "served"
    served.mkdir()
    r = get_shift("imagenet_r")
    w = r.class_wnids
    archive = make_tar(served / "imagenet-r.tar", {
        f"imagenet-r/{w[3]}/art_0.jpg": jpeg_bytes(1),
        f"imagenet-r/{w[3]}/art_1.jpg": jpeg_bytes(2),
        f"imagenet-r/{w[150]}/toy_0.jpg": jpeg_bytes(3),
        "imagenet-r/README.txt": b"read me"})
    data = tmp_path / "data"
    data.mkdir()
    # a truncated copy on the server: detected, named, removed, with the fix
    truncated = served / "short.tar"
    truncated.write_bytes(archive.read_bytes()[:2048])
    with_checksums_of(monkeypatch, "imagenet_r", urls=(truncated.as_uri(),),
                      checksums={"imagenet-r.tar": sha(archive)})
    with pytest.raises(ConfigError, match=r"imagenet-r\.tar from file://.*short\.tar has SHA256 "
                                          r".*expected .*run `python -m snc\.shifts "
                                          r"download imagenet_r"):
        download(get_shift("imagenet_r"), data, progress=False)
    assert not list(data.glob("imagenet-r.tar*"))
    # an interrupted earlier download: file:// does not resume, so it starts again and verifies
    (data / "imagenet-r.tar.part").write_bytes(b"junk from an earlier attempt")
    s = with_checksums_of(monkeypatch, "imagenet_r", urls=(archive.as_uri(),),
                          checksums={"imagenet-r.tar": sha(archive)})
    out = download(s, data, progress=False)
    assert out == data / "imagenet-r" and not list(data.glob("imagenet-r.tar*"))
    ds = open_single(s, out)
    assert ds.verified and [y for _, y in ds.samples] == [3, 3, 150]
    assert not any("not verified" in n for n in ds.notes)
    assert download(s, data, progress=False) == out  # complete: nothing fetched again
    # no published checksum: kept, but said to be unverified
    (out / shifts.VERIFIED_MARK).unlink()
    for p in sorted(out.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    out.rmdir()
    (data / ".snc-download-imagenet_r.json").unlink()
    s = with_checksums_of(monkeypatch, "imagenet_r", urls=(archive.as_uri(),), checksums={})
    with caplog.at_level("WARNING", logger="snc"):
        out = download(s, data, progress=False)
    assert "no checksum is published for imagenet-r.tar" in caplog.text
    ds = open_single(s, out)
    assert not ds.verified and any("no checksum is published" in n for n in ds.notes)


def test_download_of_arrays_and_an_unpack_that_misses_the_layout(tmp_path, monkeypatch):
    served = tmp_path / "served"
    fake_cifar10_1(served, n=30)
    s = get_shift("cifar10_1")
    s = with_checksums_of(monkeypatch, "cifar10_1",
                          urls=tuple((served / f).as_uri() for f in s.files),
                          checksums={f: sha(served / f) for f in s.files})
    out = download(s, tmp_path / "data", progress=False)
    assert out == tmp_path / "data" / "CIFAR-10.1"
    ds = open_single(s, out)
    assert len(ds) == 30 and ds.verified
    bad = make_tar(tmp_path / "other.tar", {"something-else/x.jpg": jpeg_bytes()})
    a = with_checksums_of(monkeypatch, "imagenet_a", urls=(bad.as_uri(),),
                          checksums={"imagenet-a.tar": sha(bad)})
    with pytest.raises(ConfigError, match=r"now holding \[.*'something-else'\].*imagenet-a/<wnid>"):
        download(a, tmp_path / "data", progress=False)


def test_manual_download_verifies_a_placed_zip(tmp_path, monkeypatch):
    s = get_shift("imagenet_sketch")
    data = tmp_path / "data"
    with pytest.raises(ConfigError, match=r"ImageNet-Sketch\.zip not found: download "
                                          r"ImageNet-Sketch\.zip by hand"):
        download(s, data, progress=False)
    data.mkdir()
    w = imagenet_wnids()
    with zipfile.ZipFile(data / "ImageNet-Sketch.zip", "w") as zf:
        zf.writestr(f"sketch/{w[7]}/sketch_0.JPEG", jpeg_bytes())
        zf.writestr(f"sketch/{w[2]}/sketch_1.JPEG", jpeg_bytes())
    with pytest.raises(ConfigError, match=r"ImageNet-Sketch\.zip has checksum .* expected "
                                          r"sha256:4d3ce6b8"):
        download(s, data, progress=False)  # not the published archive
    s = with_checksums_of(monkeypatch, "imagenet_sketch",
                          checksums={"ImageNet-Sketch.zip": sha(data / "ImageNet-Sketch.zip")})
    out = download(s, data, progress=False)
    ds = open_single(s, out)
    assert out == data / "sketch" and [y for _, y in ds.samples] == [2, 7] and ds.verified
    assert json.loads((out / shifts.VERIFIED_MARK).read_text())["verified"] is True


def test_generate_only_sets_refuse_to_download(tmp_path):
    with pytest.raises(ConfigError, match=r"CIFAR-100-C-bar is not published for download "
                                          r"\(generate-only"):
        download(get_shift("cifar100c_bar"), tmp_path, progress=False)
