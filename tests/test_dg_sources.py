"""The DG registry and downloads, on tiny archives built in the published layouts and served
through file:// URLs (or put in downloads/ as hand-fetched archives)."""

import io
import json
import re
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

import snc.data.dg_sources as dg
from snc.cli.download_dg import main as cli_main
from snc.data.checksums import file_digest
from snc.errors import ConfigError

_buf = io.BytesIO()
Image.new("RGB", (2, 2), (200, 30, 30)).save(_buf, "JPEG")
JPEG = _buf.getvalue()

TWO = {  # two real class folders per set (the rearrangement sees the real names)
    "pacs": ("dog", "house"),
    "vlcs": ("bird", "person"),
    "office_home": ("Alarm_Clock", "TV"),
    "domain_net": ("animal_migration", "The_Eiffel_Tower"),
}
TOP = {"pacs": "kfold", "vlcs": "VLCS", "office_home": "OfficeHomeDataset_10072016"}
DUPLICATE = "clipart/animal_migration/clipart_006_000227.jpg"  # first line of DomainBed's list


def _zip(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, files: dict) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def build_archives(name: str, folder: Path) -> dict:
    """The set's archives, in their published layout, under ``folder``: {filename: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = dg.DOMAIN_SETS[name]
    if name == "terra_incognita":
        return _terra_archives(folder)
    out = {}
    if name == "domain_net":
        for domain in spec.domains:
            files = {f"{domain}/{c}/{domain}_{i:03d}_00000{j}.jpg": JPEG
                     for i, c in enumerate(TWO[name]) for j in range(2)}
            if domain == "clipart":
                files[DUPLICATE] = JPEG
            archive = next(a for a in spec.archives if a.filename == f"{domain}.zip")
            out[archive.filename] = _zip(folder / archive.filename, files)
        return out
    files = {f"{TOP[name]}/{d}/{c}/img{j}.jpg": JPEG
             for d in spec.domains for c in TWO[name] for j in range(2)}
    filename = spec.archives[0].filename
    maker = _tar if filename.endswith(".tar.gz") else _zip
    return {filename: maker(folder / filename, files)}


TERRA_IMAGES = [  # (id, location, [categories]) in the Caltech Camera Traps schema
    ("a1", 38, ["opossum"]),
    ("a2", 38, ["opossum", "raccoon"]),  # two annotations: copied into both class folders
    ("a3", 43, ["deer"]),  # a category DomainBed leaves out
    ("a4", 33, ["bobcat"]),  # a location DomainBed leaves out
    ("a5", 46, ["empty"]),
    ("a6", 100, ["bird"]),
]


def _terra_archives(folder: Path) -> dict:
    cats = ["opossum", "raccoon", "deer", "bobcat", "empty", "bird"]
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(cats)]
    images = [{"id": i, "file_name": f"{i}.jpg", "location": loc, "width": 2, "height": 2,
               "seq_id": f"s{i}", "frame_num": 1} for i, loc, _ in TERRA_IMAGES]
    notes = [{"id": f"n{i}{k}", "image_id": i, "category_id": cats.index(c) + 1}
             for i, _, cs in TERRA_IMAGES for k, c in enumerate(cs)]
    half = len(images) // 2
    docs = {  # the images and their annotations spread over the five published files
        "train_annotations.json": (images[:half], notes[:3]),
        "cis_val_annotations.json": (images[half:], notes[3:]),
        "cis_test_annotations.json": ([], []),
        "trans_val_annotations.json": ([], []),
        "trans_test_annotations.json": ([], []),
    }
    annotation_files = {
        f"eccv_18_annotation_files/{name}": json.dumps({
            "info": {"version": "test"}, "categories": categories, "images": imgs,
            "annotations": ann}).encode()
        for name, (imgs, ann) in docs.items()}
    return {
        "eccv_18_all_images_sm.tar.gz": _tar(
            folder / "eccv_18_all_images_sm.tar.gz",
            {f"eccv_18_all_images_sm/{i}.jpg": JPEG for i, _, _ in TERRA_IMAGES}),
        "eccv_18_annotations.tar.gz": _tar(folder / "eccv_18_annotations.tar.gz",
                                           annotation_files),
    }


def use_checksums(monkeypatch, name: str, files: dict) -> None:
    """The registry entry with the tiny archives' SHA-256 where the real one has a checksum."""
    spec = dg.DOMAIN_SETS[name]
    archives = tuple(
        replace(a, checksum=None if a.checksum is None
                else "sha256:" + file_digest(files[a.filename], "sha256"))
        for a in spec.archives)
    monkeypatch.setitem(dg.DOMAIN_SETS, name, replace(spec, archives=archives))


def served(files: dict) -> dict:
    return {filename: path.as_uri() for filename, path in files.items()}


def nowhere(tmp_path: Path, name: str) -> dict:
    return {a.filename: (tmp_path / "absent" / a.filename).as_uri()
            for a in dg.DOMAIN_SETS[name].archives}


# ----------------------------------------------------------------------------- registry

def test_registry_is_consistent():
    assert list(dg.DOMAIN_SETS) == ["pacs", "vlcs", "office_home", "terra_incognita",
                                    "domain_net"]
    sizes = {"pacs": (4, 7), "vlcs": (4, 5), "office_home": (4, 65),
             "terra_incognita": (4, 10), "domain_net": (6, 345)}
    for name, spec in dg.DOMAIN_SETS.items():
        assert spec.name == name
        assert (len(spec.domains), len(spec.classes)) == sizes[name]
        assert list(spec.domains) == sorted(spec.domains)  # DomainBed sorts its folders
        assert list(spec.classes) == sorted(spec.classes) == sorted(set(spec.classes))
        assert not spec.images or set(spec.images) == set(spec.domains)
        for archive in spec.archives:
            assert archive.url.startswith(("https://", "http://")) and archive.source
            assert archive.checksum is None or re.fullmatch(
                r"(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})", archive.checksum)
        assert len({a.filename for a in spec.archives}) == len(spec.archives)
    totals = {n: sum(s.images.values()) for n, s in dg.DOMAIN_SETS.items()}
    assert totals["pacs"] == 9991
    assert dict(dg.DOMAIN_SETS["pacs"].images) == {
        "art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
    assert totals["vlcs"] == 10729 and totals["office_home"] == 15588
    assert totals["terra_incognita"] == 24788


def test_domain_net_duplicates_name_real_images():
    spec = dg.DOMAIN_SETS["domain_net"]
    lines = dg.domain_net_duplicates()
    assert len(lines) == len(set(lines)) == 9431
    assert lines[0] == DUPLICATE
    for line in lines:
        domain, cls, file = line.split("/")
        assert domain in spec.domains and cls in spec.classes and file.endswith(".jpg")


def test_names_and_messages(tmp_path):
    with pytest.raises(ValueError, match="pacs, vlcs, office_home, terra_incognita, domain_net"):
        dg.get_domain_set("office31")
    assert dg.dataset_root("office_home", tmp_path) == tmp_path / "office_home"
    for name, spec in dg.DOMAIN_SETS.items():
        message = dg.missing_message(name, tmp_path)
        assert "\n" not in message
        assert message.startswith(f"{tmp_path / spec.folder} not found")
        assert f"`python scripts/download_dg.py {name} --root {tmp_path}`" in message
        assert all(a.filename in message for a in spec.archives)
        assert str(tmp_path / "downloads") in message


# ----------------------------------------------------------------------------- downloads

@pytest.mark.parametrize("name", ["pacs", "vlcs", "office_home", "domain_net"])
def test_download_builds_domainbed_layout(tmp_path, monkeypatch, name):
    files = build_archives(name, tmp_path / "served")
    use_checksums(monkeypatch, name, files)
    data = tmp_path / "data"
    root = dg.download_domain_set(name, data, progress=False, urls=served(files))
    spec = dg.DOMAIN_SETS[name]
    assert root == data / spec.folder
    want = {f"{d}/{c}/{f.name}" for d in spec.domains for c in TWO[name]
            for f in (root / d / c).iterdir()}
    got = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {dg.MARKER}
    assert got == want and len(got) == len(spec.domains) * 2 * 2
    assert sorted(p.name for p in root.iterdir()) == sorted([*spec.domains, dg.MARKER])
    if name in TOP:
        assert (root / spec.domains[0] / TWO[name][0] / "img0.jpg").read_bytes() == JPEG
    else:  # DomainBed's duplicate is gone, its neighbours stay
        assert not (root / DUPLICATE).exists()
        assert (root / "clipart/animal_migration/clipart_000_000000.jpg").exists()
    marker = json.loads((root / dg.MARKER).read_text())
    assert marker["images"] == {d: 4 for d in spec.domains}
    assert {p.name for p in data.iterdir()} == {"downloads", spec.folder}  # no temp left
    assert list((data / "downloads").iterdir()) == []  # downloaded archives removed


def test_terra_incognita_from_images_and_annotations(tmp_path, caplog):
    files = build_archives("terra_incognita", tmp_path / "served")
    data = tmp_path / "data"
    with caplog.at_level("INFO", logger="snc"):
        root = dg.download_domain_set("terra_incognita", data, progress=False,
                                      urls=served(files), keep_archives=True)
    got = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    assert got == ["location_100/bird/a6.jpg", "location_38/opossum/a1.jpg",
                   "location_38/opossum/a2.jpg", "location_38/raccoon/a2.jpg",
                   "location_46/empty/a5.jpg"]
    assert (root / "location_43").is_dir() and not any((root / "location_43").iterdir())
    assert not (root / "location_33").exists()
    for filename, path in files.items():  # no published checksum: the SHA-256 is logged
        assert file_digest(path, "sha256") in caplog.text
        assert (data / "downloads" / filename).exists()  # keep_archives
    assert json.loads((root / dg.MARKER).read_text())["images"] == {
        "location_100": 1, "location_38": 3, "location_43": 0, "location_46": 1}
    assert dg.is_complete("terra_incognita", data)


def test_complete_folder_is_skipped(tmp_path, monkeypatch):
    files = build_archives("pacs", tmp_path / "served")
    use_checksums(monkeypatch, "pacs", files)
    data = tmp_path / "data"
    root = dg.download_domain_set("pacs", data, progress=False, urls=served(files))
    before = sorted(p.stat().st_mtime_ns for p in root.rglob("*"))
    assert dg.download_domain_set("pacs", data, progress=False,
                                  urls=nowhere(tmp_path, "pacs")) == root
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*")) == before
    # a folder laid out by other means (every domain and class folder, no marker) also counts
    other = tmp_path / "other"
    spec = dg.DOMAIN_SETS["vlcs"]
    for d in spec.domains:
        for c in spec.classes:
            (other / "VLCS" / d / c).mkdir(parents=True)
            (other / "VLCS" / d / c / "x.jpg").write_bytes(JPEG)
    assert dg.download_domain_set("vlcs", other, progress=False, urls=nowhere(tmp_path, "vlcs"))
    assert json.loads((other / "VLCS" / dg.MARKER).read_text())["images"]["SUN09"] == 5


def test_hand_fetched_archive_is_used_without_network(tmp_path, monkeypatch):
    files = build_archives("office_home", tmp_path / "fetched")
    use_checksums(monkeypatch, "office_home", files)
    data = tmp_path / "data"
    (data / "downloads").mkdir(parents=True)
    files["office_home.zip"].rename(data / "downloads" / "office_home.zip")
    root = dg.download_domain_set("office_home", data, progress=False,
                                  urls=nowhere(tmp_path, "office_home"))
    assert (root / "Real World" / "TV" / "img1.jpg").exists()
    assert (data / "downloads" / "office_home.zip").exists()  # hand-fetched: kept


def test_checksum_mismatch_names_the_file(tmp_path, monkeypatch):
    files = build_archives("pacs", tmp_path / "served")
    use_checksums(monkeypatch, "pacs", files)
    files["PACS.zip"].write_bytes(files["PACS.zip"].read_bytes()[:-10])  # truncated
    data = tmp_path / "data"
    with pytest.raises(ConfigError, match=r"PACS\.zip .*SHA256 .*expected"):
        dg.download_domain_set("pacs", data, progress=False, urls=served(files))
    assert not (data / "PACS").exists()
    assert not data.exists()  # the bad download and the folders made for it were removed
    # a bad hand-fetched archive is named with its path and left for the user to delete
    bad = data / "downloads" / "PACS.zip"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the archive")
    with pytest.raises(ConfigError, match=re.escape(str(bad)) + ".*delete it"):
        dg.download_domain_set("pacs", data, progress=False, urls=nowhere(tmp_path, "pacs"))
    assert not (data / "PACS").exists()


def test_the_published_checksum_is_checked(tmp_path):
    files = build_archives("vlcs", tmp_path / "served")  # not the published archive
    published = "8870171eba660927d9668f4e515928e4"
    with pytest.raises(ConfigError, match=rf"VLCS\.tar\.gz .*MD5 .*{published}"):
        dg.download_domain_set("vlcs", tmp_path / "data", progress=False, urls=served(files))
    assert not (tmp_path / "data" / "VLCS").exists()


def test_a_web_page_in_place_of_the_archive(tmp_path, monkeypatch):
    # Google Drive answers a busy or large file with a page: the message says what to do
    page = tmp_path / "drive.google.com" / "PACS.zip"
    page.parent.mkdir()
    page.write_text("<!DOCTYPE html><html>Google Drive can't scan this file</html>")
    with pytest.raises(ConfigError, match=r"PACS\.zip .*fetch it in a browser and put it in "
                       + re.escape(str(tmp_path / "data" / "downloads"))):
        dg.download_domain_set("pacs", tmp_path / "data", progress=False,
                               urls={"PACS.zip": page.as_uri()})
    # without a published checksum the page gets as far as unpacking, which names it
    monkeypatch.setitem(dg.DOMAIN_SETS, "pacs", replace(
        dg.DOMAIN_SETS["pacs"], archives=(replace(dg.DOMAIN_SETS["pacs"].archives[0],
                                                  checksum=None),)))
    with pytest.raises(ConfigError, match=r"PACS\.zip is neither a zip nor a tar archive"):
        dg.download_domain_set("pacs", tmp_path / "data", progress=False,
                               urls={"PACS.zip": page.as_uri()})
    assert not (tmp_path / "data" / "PACS").exists()


def test_failed_download_names_the_fix(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(ConfigError, match=r"could not download PACS\.zip .*put it in "
                       + re.escape(str(data / "downloads"))):
        dg.download_domain_set("pacs", data, progress=False, urls=nowhere(tmp_path, "pacs"))
    assert not data.exists()  # no empty folders left behind
    with pytest.raises(ValueError, match="PACS.zip"):
        dg.download_domain_set("pacs", data, urls={"pacs.zip": "file:///x"})


def test_interrupted_rearrangement_leaves_no_folder(tmp_path, monkeypatch):
    files = build_archives("terra_incognita", tmp_path / "served")
    data = tmp_path / "data"
    real, calls = dg.shutil.copyfile, []

    def dying(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(dg.shutil, "copyfile", dying)
    with pytest.raises(KeyboardInterrupt):
        dg.download_domain_set("terra_incognita", data, progress=False, urls=served(files))
    assert sorted(p.name for p in data.iterdir()) == ["downloads"]  # no final, no temp folder
    assert not dg.is_complete("terra_incognita", data)
    monkeypatch.setattr(dg.shutil, "copyfile", real)
    # the archives stayed in downloads/: the rerun needs no network
    root = dg.download_domain_set("terra_incognita", data, progress=False,
                                  urls=nowhere(tmp_path, "terra_incognita"))
    assert len(list(root.rglob("*.jpg"))) == 5


def test_stale_temporary_folder_is_replaced(tmp_path, monkeypatch):
    files = build_archives("pacs", tmp_path / "served")
    use_checksums(monkeypatch, "pacs", files)
    data = tmp_path / "data"
    stale = data / ".PACS.partial-1" / "PACS" / "photo"
    stale.mkdir(parents=True)
    dg.download_domain_set("pacs", data, progress=False, urls=served(files))
    assert not (data / ".PACS.partial-1").exists()


def test_incomplete_folder_in_the_way(tmp_path):
    (tmp_path / "PACS" / "photo").mkdir(parents=True)
    with pytest.raises(ConfigError, match="exists but is incomplete.*art_painting.*delete it"):
        dg.download_domain_set("pacs", tmp_path, progress=False, urls=nowhere(tmp_path, "pacs"))


@pytest.mark.parametrize("member", ["../evil.jpg", "/tmp/evil.jpg", "kfold/../../evil.jpg",
                                    "link", "hardlink"])
def test_unsafe_archive_members_are_refused(tmp_path, member):
    data = tmp_path / "data"
    (data / "downloads").mkdir(parents=True)
    ok = {"kfold/photo/dog/a.jpg": JPEG}
    if member in ("link", "hardlink"):
        path = data / "downloads" / "PACS.zip"
        with tarfile.open(path, "w:gz") as tar:  # a tar under the zip's name: sniffed, not named
            for name, blob in ok.items():
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
            info = tarfile.TarInfo("kfold/photo/dog/b.jpg")
            info.type = tarfile.SYMTYPE if member == "link" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    else:
        path = _zip(data / "downloads" / "PACS.zip", {**ok, member: JPEG})
    spec = dg.DOMAIN_SETS["pacs"]
    archive = replace(spec.archives[0], checksum="sha256:" + file_digest(path, "sha256"))
    with pytest.raises(ConfigError, match="unsafe member"):
        dg.safe_extract(path, tmp_path / "out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(dg.DOMAIN_SETS, "pacs", replace(spec, archives=(archive,)))
        with pytest.raises(ConfigError, match=r"PACS\.zip holds an unsafe member"):
            dg.download_domain_set("pacs", data, progress=False, urls=nowhere(tmp_path, "pacs"))
    assert not (data / "PACS").exists() and not (tmp_path / "evil.jpg").exists()
    assert sorted(p.name for p in data.iterdir()) == ["downloads"]


def test_unexpected_archive_layout_is_named(tmp_path, monkeypatch):
    files = {"PACS.zip": _zip(tmp_path / "PACS.zip", {"pacs/images/photo/dog/a.jpg": JPEG})}
    use_checksums(monkeypatch, "pacs", files)
    with pytest.raises(ConfigError, match="no kfold/ folder .*found: pacs"):
        dg.download_domain_set("pacs", tmp_path / "data", progress=False, urls=served(files))
    assert not (tmp_path / "data" / "PACS").exists()


def test_download_over_http_resumes(tmp_path, monkeypatch, server):
    folder, base = server
    files = build_archives("vlcs", folder)
    use_checksums(monkeypatch, "vlcs", files)
    data = tmp_path / "data"
    (data / "downloads").mkdir(parents=True)
    blob = files["VLCS.tar.gz"].read_bytes()
    (data / "downloads" / "VLCS.tar.gz.part").write_bytes(blob[:100])  # an interrupted run
    root = dg.download_domain_set("vlcs", data, progress=False,
                                  urls={"VLCS.tar.gz": f"{base}/VLCS.tar.gz"}, keep_archives=True)
    assert (data / "downloads" / "VLCS.tar.gz").read_bytes() == blob
    assert (root / "VOC2007" / "person" / "img1.jpg").exists()


# ----------------------------------------------------------------------------- command line

def test_command_line(tmp_path, monkeypatch, capsys):
    files = build_archives("pacs", tmp_path / "served")
    use_checksums(monkeypatch, "pacs", files)
    data = tmp_path / "data"
    assert cli_main(["pacs", "--root", str(data), "--url",
                     f"PACS.zip={files['PACS.zip'].as_uri()}"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (f"{data / 'PACS'}: art_painting 4, cartoon 4, photo 4, sketch 4")
    assert cli_main(["vlcs", "--root", str(data), "--url",
                     f"VLCS.tar.gz={(tmp_path / 'absent.tar.gz').as_uri()}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snc: error: could not download VLCS.tar.gz")
