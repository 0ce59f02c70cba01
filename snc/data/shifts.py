"""The published distribution-shift test sets: where each comes from, how it is laid out on
disk, which model heads it fits, and how to download, find and open it.

One registry entry (:class:`Shift`) per test set, registered by name like the datasets
(``register_shift``); ``list_shifts()`` / ``get_shift(name)`` look them up:

- corruption grids (``kind="corruptions"``: corruptions x 5 severities): ``cifar10c``,
  ``cifar100c``, ``imagenetc`` (Hendrycks & Dietterich) and ``cifar10c_bar``,
  ``cifar100c_bar``, ``imagenetc_bar`` (Mintun et al.); read by :mod:`snc.data.corrupted`.
- single test sets (``kind="single"``), opened by :func:`open_single`: ``cifar10_1``,
  ``imagenet_r``, ``imagenet_a``, ``imagenet_sketch``, ``imagenet_v2`` (matched frequency; also
  ``imagenet_v2_threshold`` and ``imagenet_v2_topimages``).

Checksums are the published ones only (each entry's ``checksum_source`` says where from); a set
without one is downloaded unverified and says so when opened. Class lists live in
``snc/data/shift_data/`` (see each file's ``source``); labels of ImageNet-R / -A are in the set's
own 200 classes and ``class_subset`` gives their columns in a 1000-class head.

Command line::

    python -m snc.data.shifts list
    python -m snc.data.shifts download imagenet_r --data-dir data
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from snc.atomic import read_marker, write_marker
from snc.data.corrupted import SEVERITIES, imagenet_c_dir
from snc.data.corruptions import CORRUPTIONS
from snc.data.download import (
    CIFAR_C,
    CIFAR_C_FILE_MD5,
    _safe_extract,
    checksum_matches,
    download_cifar_c,
    download_resumable,
)
from snc.errors import ConfigError

log = logging.getLogger("snc")
SHIFT_DATA = Path(__file__).with_name("shift_data")
DOMAINS = ("cifar10", "cifar100", "imagenet")
DOMAIN_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
DOMAIN_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
IMAGE_EXTS = (".jpeg", ".jpg", ".png")
VERIFIED_MARK = ".snc-shift.json"  # written into a set's folder once its download is verified
# how a missing set is fetched; {name} and {data_dir} are filled in
DOWNLOAD_COMMAND = "python -m snc.data.shifts download {name} --data-dir {data_dir}"


# ----------------------------------------------------------------------------- class lists


@lru_cache(maxsize=None)
def _class_file(name: str) -> Tuple[str, ...]:
    doc = json.loads((SHIFT_DATA / f"{name}_classes.json").read_text())
    wnids = tuple(doc["wnids"])
    if len(wnids) != doc["count"]:
        raise ValueError(f"{name}_classes.json lists {len(wnids)} wnids, says {doc['count']}")
    return wnids


def imagenet_wnids() -> Tuple[str, ...]:
    """The 1000 ImageNet wnids; label ``i`` of a 1000-class head is ``imagenet_wnids()[i]``."""
    return _class_file("imagenet")


def subset_indices(wnids: Sequence[str]) -> Tuple[int, ...]:
    """Columns of ``wnids`` in a 1000-class head, in the given order."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    missing = [w for w in wnids if w not in index]
    if missing:
        raise ValueError(f"not ImageNet-1k classes: {missing[:10]}")
    return tuple(index[w] for w in wnids)


@lru_cache(maxsize=None)
def c_bar_severities(domain: str) -> Dict[str, Tuple[float, ...]]:
    """``{corruption: five severity values}`` of CIFAR-10-C-bar (``cifar10``) or
    ImageNet-C-bar (``imagenet``), in the published corruption order."""
    from snc.data.corruptions.cbar import CBAR, SEVERITY_VALUES

    preset = "imagenet" if domain == "imagenet" else "cifar"
    return {name: tuple(SEVERITY_VALUES[preset][name]) for name in CBAR[preset]}


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Shift:
    """A published test set.

    Attributes:
        name: registry name (``shifts=[...]``).
        title: the name the papers use.
        domain: which heads it fits: ``cifar10``, ``cifar100`` or ``imagenet``.
        kind: ``corruptions`` (a grid of corruptions x 5 severities) or ``single``.
        num_images: published image count; for ``corruptions``, per (corruption, severity).
        num_classes: the set's own classes (200 for ImageNet-R / -A).
        source: paper and the page the set is published on.
        urls: download locations, one per file of ``files`` (empty: not published).
        checksums: ``{file: "sha256:..." | "md5:..."}``, published values only.
        layout: the layout on disk, in words (used in the missing-data error).
        dirname: the set's folder under ``paths.data_dir``.
        corruptions: the grid's corruptions (``corruptions``).
        generated_ok: may be generated here when not downloaded.
        class_subset: columns of the set's classes in a 1000-class head, in label order.
        files: the file name each URL is saved as.
        aliases: other folder names the set is found under (other unpackers, mirrors).
        extract_to: folder under ``paths.data_dir`` the archives are unpacked into.
        checksum_source: where the checksums come from, or why there are none.
        severities: the -C-bar severity values per corruption (folder names of ImageNet-C-bar).
        classes: how folders map to labels: ``wnid`` (class-folder names from ``class_list``),
            ``index`` (folders named 0..999 by class index) or ``array``.
        class_list: the class file in ``shift_data/`` (``imagenet``, ``imagenet_r``, ...).
        manual: the host needs a browser or its own client; the archive is placed by hand and
            ``download`` verifies and unpacks it.
        download_bytes: published total download size, when known.
        notes: caveats shown with the entry.
        file_checksums: per-file checksums of the unpacked set (CIFAR-C).
    """

    name: str
    title: str
    domain: str
    kind: str
    num_images: int
    num_classes: int
    source: str
    urls: Tuple[str, ...]
    checksums: Dict[str, str]
    layout: str
    dirname: str
    corruptions: Tuple[str, ...] = ()
    generated_ok: bool = False
    class_subset: Optional[Tuple[int, ...]] = None
    files: Tuple[str, ...] = ()
    aliases: Tuple[str, ...] = ()
    extract_to: str = ""
    checksum_source: str = ""
    severities: Optional[Dict[str, Tuple[float, ...]]] = None
    classes: str = "wnid"
    class_list: str = "imagenet"
    manual: bool = False
    download_bytes: Optional[int] = None
    notes: str = ""
    file_checksums: Dict[str, str] = field(default_factory=dict)

    @property
    def published(self) -> bool:
        """Published as a download (not generate-only)."""
        return bool(self.urls)

    @property
    def class_wnids(self) -> Tuple[str, ...]:
        """The set's classes in label order (wnid sets)."""
        return _class_file(self.class_list)


_SHIFTS: Dict[str, Shift] = {}


def register_shift(shift: Shift) -> Shift:
    """Adds ``shift`` to the registry under ``shift.name``."""
    if shift.name in _SHIFTS:
        raise ValueError(f"shift {shift.name!r} is registered twice")
    if shift.domain not in DOMAINS or shift.kind not in ("corruptions", "single"):
        raise ValueError(f"shift {shift.name!r}: domain {shift.domain!r} / kind {shift.kind!r}")
    if len(shift.urls) != len(shift.files):
        raise ValueError(f"shift {shift.name!r}: one file name per URL")
    _SHIFTS[shift.name] = shift
    return shift


def list_shifts() -> Tuple[str, ...]:
    return tuple(_SHIFTS)


def get_shift(name: str) -> Shift:
    """The registered :class:`Shift`; an unknown name fails with the known ones."""
    if name not in _SHIFTS:
        raise ConfigError(f"unknown shift {name!r}; choose from {', '.join(list_shifts())}")
    return _SHIFTS[name]


def shifts_for(domain: str) -> Tuple[str, ...]:
    """The registered shifts that fit a model of ``domain``."""
    return tuple(n for n, s in _SHIFTS.items() if s.domain == domain)


def check_fits(shift: Shift, dataset_name: str, num_classes: int) -> None:
    """Raises ConfigError when ``shift`` does not fit a model trained on ``dataset_name`` with
    ``num_classes`` outputs: the class count must be the domain's (10, 100, 1000), and a model of
    a known dataset (cifar10, cifar100, imagenet) must be of the same domain. Other datasets
    (npz, synthetic) are judged by their class count alone."""
    want = DOMAIN_CLASSES[shift.domain]
    domain = dataset_name if dataset_name in DOMAIN_CLASSES else next(
        (d for d, c in DOMAIN_CLASSES.items() if c == num_classes), None)
    if num_classes == want and domain in (shift.domain, None):
        return
    fitting = shifts_for(domain) if domain else ()
    hint = (f"use shifts=[{', '.join(fitting)}]" if fitting else
            "no registered shift fits it")
    raise ConfigError(
        f"{shift.name} is {'an' if shift.domain == 'imagenet' else 'a'} "
        f"{DOMAIN_TITLES[shift.domain]} test set ({want} classes); this model "
        f"has {num_classes} classes ({dataset_name}): its outputs do not match the set's labels; "
        f"{hint}")


# ----------------------------------------------------------------------------- the entries

_HENDRYCKS_C = ("Hendrycks & Dietterich, Benchmarking Neural Network Robustness to Common "
                "Corruptions and Perturbations, ICLR 2019; https://github.com/hendrycks/robustness")
_CBAR = ("Mintun, Kirillov & Xie, On Interaction Between Augmentations and Corruptions in Natural "
         "Corruption Robustness, NeurIPS 2021; "
         "https://github.com/facebookresearch/augmentation-corruption")
_TFDS = "tensorflow_datasets {}/checksums.tsv (SHA-256 and size of the download)"

for _domain, _zenodo in (("cifar10", "https://zenodo.org/record/2535967"),
                         ("cifar100", "https://zenodo.org/record/3555552")):
    _url, _md5, _folder = CIFAR_C[_domain]
    register_shift(Shift(
        name=f"{_domain}c", title=_folder, domain=_domain, kind="corruptions",
        num_images=10_000, num_classes=DOMAIN_CLASSES[_domain],
        source=f"{_HENDRYCKS_C}; {_zenodo}", urls=(_url,), files=(f"{_folder}.tar",),
        checksums={f"{_folder}.tar": f"md5:{_md5}"},
        file_checksums={f: f"md5:{m}" for f, m in CIFAR_C_FILE_MD5[_domain].items()},
        checksum_source="Zenodo record MD5s (snc.data.download.CIFAR_C / CIFAR_C_FILE_MD5)",
        layout=(f"{_folder}/<corruption>.npy, uint8 (50000, 32, 32, 3): severities 1-5 stacked in "
                "blocks of 10000 (test-set order inside each), plus labels.npy (50000,); the "
                "archive also holds speckle_noise, gaussian_blur, spatter, saturate"),
        dirname=_folder, corruptions=CORRUPTIONS, generated_ok=True, classes="array",
        download_bytes=None))

# ImageNet-C archives: MD5s of Zenodo record 2235448, as recorded identically by several
# independent dataset loaders (one states it checked them against the Zenodo API)
IMAGENET_C_ARCHIVES = {
    "noise.tar": "e80562d7f6c3f8834afb1ecf27252745",
    "blur.tar": "2d8e81fdd8e07fef67b9334fa635e45c",
    "weather.tar": "33ffea4db4d93fe4a428c40a6ce0c25d",
    "digital.tar": "89157860d7b10d5797849337ca2e5c03",
    "extra.tar": "d492dfba5fc162d8ec2c3cd8ee672984",
}
register_shift(Shift(
    name="imagenetc", title="ImageNet-C", domain="imagenet", kind="corruptions",
    num_images=50_000, num_classes=1000,
    source=f"{_HENDRYCKS_C}; https://zenodo.org/record/2235448",
    urls=tuple(f"https://zenodo.org/record/2235448/files/{f}" for f in IMAGENET_C_ARCHIVES),
    files=tuple(IMAGENET_C_ARCHIVES),
    checksums={f: f"md5:{m}" for f, m in IMAGENET_C_ARCHIVES.items()},
    checksum_source="Zenodo record 2235448 MD5s (recorded alike by several dataset loaders)",
    layout=("ImageNet-C/<corruption>/<severity 1-5>/<wnid>/*.JPEG (224 px, JPEG quality 85), "
            "optionally under a group folder (noise, blur, weather, digital, extra)"),
    dirname="ImageNet-C", extract_to="ImageNet-C", corruptions=CORRUPTIONS,
    generated_ok=True, download_bytes=66_022_818_580,  # the five sizes on the Zenodo record
    notes="five archives, about 66 GB together"))

for _domain, _folder in (("cifar10", "CIFAR-10-C-Bar"), ("cifar100", "CIFAR-100-C-Bar")):
    register_shift(Shift(
        name=f"{_domain}c_bar", title=_folder.replace("-Bar", "-bar"), domain=_domain,
        kind="corruptions", num_images=10_000, num_classes=DOMAIN_CLASSES[_domain],
        source=_CBAR, urls=(), files=(), checksums={},
        checksum_source="not published: the authors publish generation code only",
        layout=(f"{_folder}/<corruption>.npy, uint8 (50000, 32, 32, 3): the five severities of "
                "cifar10_c_bar.csv stacked in blocks of 10000, plus labels.npy (50000,)"),
        dirname=_folder, corruptions=tuple(c_bar_severities("cifar10")), generated_ok=True,
        severities=c_bar_severities("cifar10"), classes="array",
        notes=("generate-only: no download is published" if _domain == "cifar10" else
               "generate-only: the -C-bar authors define CIFAR-10-C-bar only; this applies the "
               "CIFAR-10-C-bar corruptions and severities to the CIFAR-100 test set, as later "
               "papers do")))

register_shift(Shift(
    name="imagenetc_bar", title="ImageNet-C-bar", domain="imagenet", kind="corruptions",
    num_images=50_000, num_classes=1000, source=_CBAR,
    urls=("https://dl.fbaipublicfiles.com/inc_bar/imagenet_c_bar.tar.gz",),
    files=("imagenet_c_bar.tar.gz",), checksums={},
    checksum_source="none published (the repository README gives the URL only)",
    layout=("ImageNet-C-Bar/<corruption>/<severity>/<wnid>/*.JPEG, where <severity> is 1-5 "
            "(the preprocessed download) or the csv value with two decimals, e.g. "
            "caustic_refraction/2.35 (the make script)"),
    dirname="ImageNet-C-Bar", aliases=("cbar_download", "imagenet-c-bar", "ImageNet-C-bar"),
    corruptions=tuple(c_bar_severities("imagenet")), generated_ok=True,
    severities=c_bar_severities("imagenet"),
    notes="the preprocessed copy is said to unpack to cbar_download/; it is not checksummed"))

register_shift(Shift(
    name="cifar10_1", title="CIFAR-10.1 (v6)", domain="cifar10", kind="single",
    num_images=2000, num_classes=10,
    source=("Recht et al., Do CIFAR-10 Classifiers Generalize to CIFAR-10?, arXiv:1806.00451, "
            "2018; https://github.com/modestyachts/CIFAR-10.1"),
    urls=tuple(f"https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/{f}"
               for f in ("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy")),
    files=("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy"),
    checksums={
        "cifar10.1_v6_data.npy":
            "sha256:2997188e5816f5bd545dc77771b6227828c28146049fcecf3fa10775474cacc6",
        "cifar10.1_v6_labels.npy":
            "sha256:ae40beda001693674edc94d925ee8268cfe68905f8f9aff800c8dcdfcd6c9448",
    },
    # the labels' SHA-256 equals that of the file in the repository (int32 '<i4', 8128 bytes)
    checksum_source="tensorflow_datasets url_checksums/cifar10_1.txt (6144128 and 8128 bytes)",
    layout=("CIFAR-10.1/cifar10.1_v6_data.npy, uint8 (2000, 32, 32, 3), and "
            "cifar10.1_v6_labels.npy, integer (2000,), CIFAR-10 class order"),
    dirname="CIFAR-10.1", classes="array", class_list="", download_bytes=6_152_256))

_HENDRYCKS_R = ("Hendrycks et al., The Many Faces of Robustness, ICCV 2021; "
                "https://github.com/hendrycks/imagenet-r")
_HENDRYCKS_A = ("Hendrycks et al., Natural Adversarial Examples, CVPR 2021; "
                "https://github.com/hendrycks/natural-adv-examples")
for _name, _title, _n, _src, _sha, _bytes in (
        ("imagenet_r", "ImageNet-R", 30_000, _HENDRYCKS_R,
         "18c6bf493b39a0d975d48e587437f562caab9c52ae6327dcfa9dd8eb54aa1b52", 2_191_079_936),
        ("imagenet_a", "ImageNet-A", 7_500, _HENDRYCKS_A,
         "3bb3632277e6ba6392ea64c02ddbf4dd2266c9caffd6bc09c9656d28f012589e", 687_552_512)):
    _folder = _title.lower()
    register_shift(Shift(
        name=_name, title=_title, domain="imagenet", kind="single", num_images=_n,
        num_classes=200, source=_src,
        urls=(f"https://people.eecs.berkeley.edu/~hendrycks/{_folder}.tar",),
        files=(f"{_folder}.tar",), checksums={f"{_folder}.tar": f"sha256:{_sha}"},
        checksum_source=_TFDS.format(f"datasets/{_name}") + f" ({_bytes} bytes)",
        layout=(f"{_folder}/<wnid>/*.jpg, one folder for each of the set's 200 ImageNet classes "
                f"(shift_data/{_name}_classes.json); labels 0-199 in sorted wnid order"),
        dirname=_folder, class_subset=subset_indices(_class_file(_name)), class_list=_name,
        download_bytes=_bytes))

register_shift(Shift(
    name="imagenet_sketch", title="ImageNet-Sketch", domain="imagenet", kind="single",
    num_images=50_889, num_classes=1000,
    source=("Wang et al., Learning Robust Global Representations by Penalizing Local Predictive "
            "Power, NeurIPS 2019; https://github.com/HaohanWang/ImageNet-Sketch"),
    urls=("https://drive.google.com/u/0/uc?id=1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA&export=download",),
    files=("ImageNet-Sketch.zip",),
    checksums={"ImageNet-Sketch.zip":
               "sha256:4d3ce6b82a7c48aabf14aeac105eb533e75707f152cc858f55bfc022031a72ed"},
    checksum_source=_TFDS.format("datasets/imagenet_sketch") + " (7593573012 bytes)",
    layout="sketch/<wnid>/*.JPEG for the 1000 ImageNet classes; labels 0-999 in wnid order",
    dirname="sketch", aliases=("imagenet-sketch", "ImageNet-Sketch"), manual=True,
    download_bytes=7_593_573_012,
    notes=("hosted on Google Drive (also Kaggle wanghaohan/imagenetsketch and Hugging Face "
           "imagenet_sketch, in other formats): fetch ImageNet-Sketch.zip in a browser, put it "
           "in the data folder and run the download command, which verifies and unpacks it. "
           "The README says 50,000 images (50 per class); the archive holds 50,889")))

_V2 = ("Recht et al., Do ImageNet Classifiers Generalize to ImageNet?, ICML 2019; "
       "https://github.com/modestyachts/ImageNetV2")
_V2_ROOT = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main"
for _name, _variant, _folder, _sha, _bytes in (
        ("imagenet_v2", "matched-frequency", "imagenetv2-matched-frequency",
         "f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c", 1_264_079_360),
        ("imagenet_v2_threshold", "threshold-0.7", "imagenetv2-threshold0.7",
         "32142bfe998f9cfa4141be691f6a80eeb1e27b24bd532a668eb08c26d98897a2", 1_249_906_176),
        ("imagenet_v2_topimages", "top-images", "imagenetv2-top-images",
         "85e4ace30f3f0d660152062254b8759dda66267b27f7ec0fd8d5768f1073a04b", 1_245_927_936)):
    register_shift(Shift(
        name=_name, title=f"ImageNetV2 ({_variant})", domain="imagenet", kind="single",
        num_images=10_000, num_classes=1000, source=_V2,
        urls=(f"{_V2_ROOT}/{_folder}.tar.gz",), files=(f"{_folder}.tar.gz",),
        checksums={f"{_folder}.tar.gz": f"sha256:{_sha}"},
        checksum_source=_TFDS.format("datasets/imagenet_v2") + f" ({_bytes} bytes)",
        layout=(f"{_folder}-format-val/<class index 0-999>/*.jpeg, 10 images per class; the "
                "folder name is the label (read as a number, not sorted as text)"),
        dirname=f"{_folder}-format-val", aliases=(f"ImageNetV2-{_variant}",), classes="index",
        download_bytes=_bytes,
        notes=("the original bucket https://s3-us-west-2.amazonaws.com/imagenetv2public/ holds "
               "the same archive names" if _name == "imagenet_v2" else "")))


# ----------------------------------------------------------------------------- finding a set


def severity_dir(shift: Shift, root: Path, corruption: str, severity: int) -> Path:
    """The folder of one (corruption, severity) of a folder grid (ImageNet-C, ImageNet-C-bar).

    Raises:
        FileNotFoundError: naming the folders tried.
    """
    if shift.name == "imagenetc":
        return imagenet_c_dir(root, corruption, severity)
    names = [str(severity)]
    if shift.severities:
        names.append(f"{shift.severities[corruption][severity - 1]:.2f}")
    for n in names:
        if (Path(root) / corruption / n).is_dir():
            return Path(root) / corruption / n
    raise FileNotFoundError(" or ".join(str(Path(root) / corruption / n) for n in names))


def _missing_parts(shift: Shift, folder: Path) -> List[str]:
    """What of the layout is absent in ``folder`` (empty: complete enough to open)."""
    if not folder.is_dir():
        return [str(folder)]
    if shift.classes == "array":
        names = (shift.files if shift.kind == "single" else
                 [f"{c}.npy" for c in shift.corruptions] + ["labels.npy"])
        return [n for n in names if not (folder / n).is_file()]
    if shift.kind == "corruptions":
        missing = []
        for c in shift.corruptions:
            for s in SEVERITIES:
                try:
                    severity_dir(shift, folder, c, s)
                except FileNotFoundError:
                    missing.append(f"{c}/{s}")
        return missing
    return [] if any(p.is_dir() for p in folder.iterdir()) else ["class folders"]


def _candidates(shift: Shift, data_dir: Path) -> List[Path]:
    return [Path(data_dir) / n for n in (shift.dirname,) + shift.aliases]


def _how_to_get(shift: Shift, data_dir: Path) -> str:
    if not shift.published:
        return (f"{shift.title} is not published for download ({shift.notes}); generate it in "
                "this layout (corrupted=generate)")
    where = ", ".join(shift.urls)
    command = DOWNLOAD_COMMAND.format(name=shift.name, data_dir=data_dir)
    if shift.manual:
        return (f"download {', '.join(shift.files)} by hand from {where} into {data_dir} "
                f"({shift.notes}), then run `{command}` to verify and unpack it")
    return f"download it from {where}, or run `{command}` (or evaluate with download=true)"


def locate(shift: Shift, data_dir: Path, root: Optional[Path] = None) -> Path:
    """The folder holding ``shift``: ``root`` when given, else the first of its folder names
    under ``data_dir`` that has the whole layout.

    Raises:
        FileNotFoundError: naming the folders tried, what is missing, the expected layout, the
            URL and the download command.
    """
    tried = [Path(root)] if root is not None else _candidates(shift, data_dir)
    gaps = []
    for folder in tried:
        missing = _missing_parts(shift, folder)
        if not missing:
            return folder
        if folder.is_dir():
            gaps.append(f"{folder} lacks {', '.join(missing[:6])}"
                        f"{' ...' if len(missing) > 6 else ''}")
    found = "; ".join(gaps) if gaps else f"none of {', '.join(map(str, tried))} exists"
    raise FileNotFoundError(
        f"{shift.title} ({shift.name}) not found: {found}. Expected layout: {shift.layout}. "
        f"{_how_to_get(shift, Path(data_dir))}.")


# ----------------------------------------------------------------------------- downloading


def _is_archive(file: str) -> bool:
    return file.endswith((".tar", ".tar.gz", ".tgz", ".zip"))


def _unpack(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if archive.suffix != ".zip":
        _safe_extract(archive, into)
        return
    with zipfile.ZipFile(archive) as zf:
        top = into.resolve()
        for member in zf.namelist():
            if not (into / member).resolve().is_relative_to(top):
                raise ValueError(f"unsafe path in {archive}: {member}")
        zf.extractall(into)


def download(shift: Shift, data_dir: Path, progress: bool = True, *,
             keep_archive: bool = False) -> Path:
    """Downloads ``shift`` into ``data_dir`` (resumable, with a progress bar), checks every file
    against its published checksum, unpacks the archives and returns the set's folder.

    A set that is already complete is returned at once; an interrupted run continues (finished
    archives are remembered in ``<extract folder>/.snc-download-<name>.json``). A set without a
    published checksum is kept with a warning that it was not verified.

    Raises:
        ConfigError: the set is not published (generate it), must be fetched by hand and is not
            there, or a file does not match its checksum (the bad file is removed).
    """
    data_dir = Path(data_dir)
    if shift.name in ("cifar10c", "cifar100c"):  # the archive and every unpacked file checked
        out = download_cifar_c(shift.domain, data_dir, url=shift.urls[0],
                               md5=shift.checksums[shift.files[0]].split(":", 1)[1],
                               file_md5={f: m.split(":", 1)[1]
                                         for f, m in shift.file_checksums.items()},
                               keep_archive=keep_archive, progress=progress)
        _mark_verified(shift, out, verified=True)
        return out
    if not shift.published:
        raise ConfigError(_how_to_get(shift, data_dir))
    try:
        found = locate(shift, data_dir)
    except FileNotFoundError:
        found = None
    extract_into = data_dir / shift.extract_to if shift.extract_to else data_dir
    state_path = extract_into / f".snc-download-{shift.name}.json"
    if found is not None and ((found / VERIFIED_MARK).exists() or not state_path.exists()):
        return found  # downloaded and checked before, or put there by hand (opened unverified)
    state = read_marker(state_path)
    done = state.setdefault("done", {})
    absent = [data_dir / f for f in shift.files if f not in done and not (data_dir / f).exists()]
    if shift.manual and absent:
        raise ConfigError(f"{absent[0]} not found: {_how_to_get(shift, data_dir)}.")
    extract_into.mkdir(parents=True, exist_ok=True)
    write_marker(state_path, state)  # from here an incomplete folder is known to be ours
    for url, file in zip(shift.urls, shift.files, strict=True):
        if file in done:
            continue
        archive = _is_archive(file)
        dest = data_dir / file if archive else data_dir / shift.dirname / file
        dest.parent.mkdir(parents=True, exist_ok=True)
        checksum = shift.checksums.get(file)
        try:
            if shift.manual:
                ok, actual = checksum_matches(dest, checksum)
                if not ok:
                    raise ValueError(f"{dest} has checksum {actual}, expected {checksum}: "
                                     "truncated or another file; fetch it again")
            else:
                download_resumable(url, dest, checksum, progress=progress)
        except ValueError as err:
            raise ConfigError(f"{err}. Delete {dest} if it remains and run "
                              f"`{DOWNLOAD_COMMAND.format(name=shift.name, data_dir=data_dir)}`"
                              ) from None
        if checksum is None:
            log.warning("%s: no checksum is published for %s; it was not verified",
                        shift.name, file)
        if archive:
            log.info("unpacking %s into %s", dest, extract_into)
            _unpack(dest, extract_into)
            if not keep_archive:
                dest.unlink()
        done[file] = checksum
        write_marker(state_path, state)
    try:
        out = locate(shift, data_dir)
    except FileNotFoundError as err:
        tops = sorted(p.name for p in extract_into.iterdir() if not p.name.startswith("."))
        raise ConfigError(f"unpacked {', '.join(shift.files)} into {extract_into} (now holding "
                          f"{tops[:12]}), but: {err}") from None
    _mark_verified(shift, out, verified=all(done.get(f) for f in shift.files))
    return out


def _mark_verified(shift: Shift, folder: Path, verified: bool) -> None:
    try:
        write_marker(folder / VERIFIED_MARK, {"shift": shift.name, "verified": verified,
                                             "checksums": {f: shift.checksums.get(f)
                                                           for f in shift.files}})
    except OSError:  # a read-only folder: the set is used, just not marked
        pass


# ----------------------------------------------------------------------------- opening a set


@dataclass
class SingleSet:
    """An opened ``single`` test set.

    Attributes:
        images, labels: uint8 NHWC images and int64 labels (array sets), else None.
        samples: ``(path, label)`` pairs sorted by label, then file name (folder sets), else None.
        class_subset: columns of the set's labels in a 1000-class head (ImageNet-R / -A).
        name: the shift.
        num_classes: the set's own class count.
        expected, found: published and actual image counts.
        verified: every file traced to a published checksum (at download, or here for arrays).
        notes: what differs from the published set (count, missing classes, verification).
    """

    images: Optional[np.ndarray]
    labels: Optional[np.ndarray]
    samples: Optional[List[Tuple[str, int]]]
    class_subset: Optional[Tuple[int, ...]]
    name: str = ""
    num_classes: int = 0
    expected: int = 0
    found: int = 0
    verified: bool = False
    notes: List[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """The count differs from the published one."""
        return self.found != self.expected

    def __len__(self) -> int:
        return self.found


def _fix(shift: Shift, path: Path) -> str:
    data_dir = path.parent.parent if shift.classes == "array" else path.parent
    return (f"delete {path} and run "
            f"`{DOWNLOAD_COMMAND.format(name=shift.name, data_dir=data_dir)}`")


def _open_arrays(shift: Shift, root: Path) -> Tuple[np.ndarray, np.ndarray, bool]:
    data_path, labels_path = (root / f for f in shift.files)
    verified = True
    for path in (data_path, labels_path):
        want = shift.checksums.get(path.name)
        ok, actual = checksum_matches(path, want)
        if not ok:
            raise ConfigError(f"{path} does not match its published checksum ({actual[:12]}... "
                              f"!= {want}): truncated or altered; {_fix(shift, path)}")
        verified = verified and want is not None
    try:
        images = np.load(data_path, allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except ValueError as err:
        raise ConfigError(f"{data_path} or {labels_path} is unreadable ({err}); "
                          f"{_fix(shift, data_path)}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ConfigError(f"{data_path}: expected uint8 (N, 32, 32, 3), got {images.dtype} "
                          f"{images.shape}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype,
                                                                           np.integer):
        raise ConfigError(f"{labels_path}: expected {len(images)} integer labels, got "
                          f"{labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= shift.num_classes):
        raise ConfigError(f"{labels_path}: labels must lie in 0..{shift.num_classes - 1}, found "
                          f"{int(labels.min())}..{int(labels.max())}")
    return images, labels.astype(np.int64), verified


def _class_folders(shift: Shift, root: Path) -> Dict[str, int]:
    """``{folder name: label}`` of the class folders under ``root``."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if shift.classes == "index":
        bad = [f for f in folders if not f.isdigit() or int(f) >= shift.num_classes]
        known = {f: int(f) for f in folders if f not in bad}
        expect = "class-index folders 0..999"
    else:
        index = {w: i for i, w in enumerate(shift.class_wnids)}
        bad = [f for f in folders if f not in index]
        known = {f: index[f] for f in folders if f in index}
        expect = f"wnid folders of shift_data/{shift.class_list}_classes.json"
    if bad:
        raise ConfigError(f"{root}: {len(bad)} folders are not classes of {shift.title} "
                          f"({bad[:10]}{' ...' if len(bad) > 10 else ''}); expected {expect}. "
                          f"Layout: {shift.layout}")
    return known


def open_single(shift: Shift, root: Path) -> SingleSet:
    """Opens a ``single`` set from its folder (see :func:`locate`), checking it against the
    published set: array shapes, dtypes and checksums (CIFAR-10.1), class folders, and the image
    count (a different count is warned about and recorded in ``notes``).

    Raises:
        ConfigError: a file does not match its checksum, arrays of the wrong shape, or folders
            that are not classes of the set (each named, with the fix).
    """
    if shift.kind != "single":
        raise ConfigError(f"{shift.name} is a corruption grid; read it with snc.data.corrupted")
    root = Path(root)
    notes: List[str] = []
    images = labels = samples = None
    if shift.classes == "array":
        images, labels, verified = _open_arrays(shift, root)
        found = len(images)
    else:
        folders = _class_folders(shift, root)
        samples = []
        for folder, label in sorted(folders.items(), key=lambda kv: kv[1]):
            files = sorted(f for f in os.listdir(root / folder)
                           if f.lower().endswith(IMAGE_EXTS))
            samples.extend((str(root / folder / f), label) for f in files)
        found = len(samples)
        absent = shift.num_classes - len(folders)
        if absent:
            notes.append(f"{absent} of {shift.num_classes} class folders are absent")
        mark = read_marker(root / VERIFIED_MARK)
        verified = bool(mark.get("verified"))
        if not verified:
            notes.append("not verified: " + ("no checksum is published" if not shift.checksums
                                             else "not downloaded (and checked) by snc"))
    if found != shift.num_images:
        notes.append(f"{found} images where {shift.num_images} are published")
    for note in notes:
        log.warning("%s (%s): %s", shift.title, root, note)
    return SingleSet(images=images, labels=labels, samples=samples,
                     class_subset=shift.class_subset, name=shift.name,
                     num_classes=shift.num_classes, expected=shift.num_images, found=found,
                     verified=verified, notes=notes)


# ----------------------------------------------------------------------------- command line


def _table() -> str:
    rows = [("name", "images", "classes", "kind", "checksum", "folder")]
    for name in list_shifts():
        s = get_shift(name)
        rows.append((name, f"{s.num_images:,}", str(s.num_classes), s.kind,
                     "published" if s.checksums else ("-" if not s.published else "none"),
                     s.dirname))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The published distribution-shift test sets.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered sets")
    get = sub.add_parser("download", help="download, verify and unpack sets")
    get.add_argument("names", nargs="+")
    get.add_argument("--data-dir", type=Path, default=Path("data"))
    get.add_argument("--keep-archive", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(_table())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for name in args.names:
            out = download(get_shift(name), args.data_dir, keep_archive=args.keep_archive)
            print(f"{name}: {out}")
    except ConfigError as err:
        print(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
