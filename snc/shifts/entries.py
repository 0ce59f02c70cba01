"""The registry of published test sets: one :class:`Shift` entry per set (layout, sources,
published checksums, class lists and the heads it fits); see :mod:`snc.shifts`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from snc.corruptions import CORRUPTIONS
from snc.data.download import (
    CIFAR_C,
    CIFAR_C_FILE_MD5,
)
from snc.errors import ConfigError

log = logging.getLogger("snc")
SHIFT_DATA = Path(__file__).with_name("classes")
DOMAINS = ("cifar10", "cifar100", "imagenet")
DOMAIN_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
DOMAIN_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
IMAGE_EXTS = (".jpeg", ".jpg", ".png")
VERIFIED_MARK = ".snc-shift.json"  # written into a set's folder once its download is verified
# how a missing set is fetched; {name} and {data_dir} are filled in
DOWNLOAD_COMMAND = "python -m snc.shifts download {name} --data-dir {data_dir}"


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
    from snc.corruptions.cbar import CBAR, SEVERITY_VALUES

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
        class_list: the class file in ``classes/`` (``imagenet``, ``imagenet_r``, ...).
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
                f"(snc/shifts/classes/{_name}_classes.json); labels 0-199 in sorted wnid order"),
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


