"""Where the five domain-generalization benchmarks come from, and their download into the layout
DomainBed trains on: ``<data_dir>/<folder>/<domain>/<class>/<image>``.

The URLs, archive layouts and the rearrangement follow facebookresearch/DomainBed
``domainbed/scripts/download.py``; the domain folders are DomainBed's environments (sorted folder
names, as its ``MultipleEnvironmentImageFolder`` reads them). Each :class:`Archive` names where its
URL and checksum come from. An archive is fetched into ``<data_dir>/downloads/`` with the project's
resumable downloader (or taken from there when it was fetched by hand), checked, unpacked into a
temporary folder beside the final one, rearranged, and renamed into place in one step: a killed
download never leaves a folder that looks complete.

    from snc.data.dg_sources import download_domain_set
    download_domain_set("pacs", Path("data"))   # -> data/PACS/art_painting/dog/*.jpg ...
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tarfile
import urllib.error
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Mapping, Optional, Tuple

from snc.atomic import new_folders, read_marker, write_marker
from snc.data.checksums import file_digest
from snc.data.download import checksum_matches, download_resumable, parse_checksum
from snc.errors import ConfigError

log = logging.getLogger("snc")

MARKER = ".complete"
DOWNLOADS = "downloads"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DUPLICATES_FILE = Path(__file__).with_name("domain_net_duplicates.txt")


@dataclass(frozen=True)
class Archive:
    """One published archive of a set."""

    url: str  # published download URL
    filename: str  # the archive's file name on disk (in <data_dir>/downloads/)
    checksum: Optional[str]  # "md5:<hex>" / "sha256:<hex>" where one is published; else None
    source: str  # where url and checksum come from


@dataclass(frozen=True)
class DomainSet:
    """A multi-domain image classification benchmark in DomainBed's layout."""

    name: str  # config name
    title: str
    folder: str  # the final folder under the data dir
    domains: Tuple[str, ...]  # domain folder names, in DomainBed's order (sorted)
    classes: Tuple[str, ...]  # class folder names, sorted as torchvision's ImageFolder sorts
    images: Mapping[str, int]  # published image count per domain; empty: none published
    archives: Tuple[Archive, ...]
    homepage: str
    citation: str


def _gdrive(file_id: str) -> str:
    """The direct-download URL of a public Google Drive file (``confirm=t`` skips the page Drive
    shows instead of large files)."""
    return f"https://drive.google.com/uc?export=download&confirm=t&id={file_id}"


_DOMAINBED = "DomainBed domainbed/scripts/download.py"
_LARSKUE = "LarsKue/context-aware-domain-generalization src/adaptive_dg/datasets/domain_bed/{}.py"
_TFDS = "tensorflow/datasets tensorflow_datasets/image_classification/domainnet/checksums.tsv"
_LILA = "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps/"
_VISDA = "http://csr.bu.edu/ftp/visda/2019/multi-source/"

_PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
_VLCS_CLASSES = ("bird", "car", "chair", "dog", "person")
_OFFICE_HOME_CLASSES = (
    "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator",
    "Calendar", "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp",
    "Drill", "Eraser", "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder",
    "Fork", "Glasses", "Hammer", "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade", "Laptop",
    "Marker", "Monitor", "Mop", "Mouse", "Mug", "Notebook", "Oven", "Pan", "Paper_Clip", "Pen",
    "Pencil", "Postit_Notes", "Printer", "Push_Pin", "Radio", "Refrigerator", "Ruler", "Scissors",
    "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda", "Speaker", "Spoon", "TV", "Table",
    "Telephone", "ToothBrush", "Toys", "Trash_Can", "Webcam",
)


# DomainBed's selection from the Caltech Camera Traps (ECCV'18) annotations.
_TERRA_LOCATIONS = ("38", "46", "100", "43")
_TERRA_CLASSES = ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit",
                  "raccoon", "squirrel")
_TERRA_ANNOTATIONS = ("cis_test_annotations.json", "cis_val_annotations.json",
                      "train_annotations.json", "trans_test_annotations.json",
                      "trans_val_annotations.json")
_DOMAIN_NET_CLASSES = (
    "The_Eiffel_Tower", "The_Great_Wall_of_China", "The_Mona_Lisa", "aircraft_carrier",
    "airplane", "alarm_clock", "ambulance", "angel", "animal_migration", "ant", "anvil", "apple",
    "arm", "asparagus", "axe", "backpack", "banana", "bandage", "barn", "baseball",
    "baseball_bat", "basket", "basketball", "bat", "bathtub", "beach", "bear", "beard", "bed",
    "bee", "belt", "bench", "bicycle", "binoculars", "bird", "birthday_cake", "blackberry",
    "blueberry", "book", "boomerang", "bottlecap", "bowtie", "bracelet", "brain", "bread",
    "bridge", "broccoli", "broom", "bucket", "bulldozer", "bus", "bush", "butterfly", "cactus",
    "cake", "calculator", "calendar", "camel", "camera", "camouflage", "campfire", "candle",
    "cannon", "canoe", "car", "carrot", "castle", "cat", "ceiling_fan", "cell_phone", "cello",
    "chair", "chandelier", "church", "circle", "clarinet", "clock", "cloud", "coffee_cup",
    "compass", "computer", "cookie", "cooler", "couch", "cow", "crab", "crayon", "crocodile",
    "crown", "cruise_ship", "cup", "diamond", "dishwasher", "diving_board", "dog", "dolphin",
    "donut", "door", "dragon", "dresser", "drill", "drums", "duck", "dumbbell", "ear", "elbow",
    "elephant", "envelope", "eraser", "eye", "eyeglasses", "face", "fan", "feather", "fence",
    "finger", "fire_hydrant", "fireplace", "firetruck", "fish", "flamingo", "flashlight",
    "flip_flops", "floor_lamp", "flower", "flying_saucer", "foot", "fork", "frog", "frying_pan",
    "garden", "garden_hose", "giraffe", "goatee", "golf_club", "grapes", "grass", "guitar",
    "hamburger", "hammer", "hand", "harp", "hat", "headphones", "hedgehog", "helicopter",
    "helmet", "hexagon", "hockey_puck", "hockey_stick", "horse", "hospital", "hot_air_balloon",
    "hot_dog", "hot_tub", "hourglass", "house", "house_plant", "hurricane", "ice_cream", "jacket",
    "jail", "kangaroo", "key", "keyboard", "knee", "knife", "ladder", "lantern", "laptop", "leaf",
    "leg", "light_bulb", "lighter", "lighthouse", "lightning", "line", "lion", "lipstick",
    "lobster", "lollipop", "mailbox", "map", "marker", "matches", "megaphone", "mermaid",
    "microphone", "microwave", "monkey", "moon", "mosquito", "motorbike", "mountain", "mouse",
    "moustache", "mouth", "mug", "mushroom", "nail", "necklace", "nose", "ocean", "octagon",
    "octopus", "onion", "oven", "owl", "paint_can", "paintbrush", "palm_tree", "panda", "pants",
    "paper_clip", "parachute", "parrot", "passport", "peanut", "pear", "peas", "pencil",
    "penguin", "piano", "pickup_truck", "picture_frame", "pig", "pillow", "pineapple", "pizza",
    "pliers", "police_car", "pond", "pool", "popsicle", "postcard", "potato", "power_outlet",
    "purse", "rabbit", "raccoon", "radio", "rain", "rainbow", "rake", "remote_control",
    "rhinoceros", "rifle", "river", "roller_coaster", "rollerskates", "sailboat", "sandwich",
    "saw", "saxophone", "school_bus", "scissors", "scorpion", "screwdriver", "sea_turtle",
    "see_saw", "shark", "sheep", "shoe", "shorts", "shovel", "sink", "skateboard", "skull",
    "skyscraper", "sleeping_bag", "smiley_face", "snail", "snake", "snorkel", "snowflake",
    "snowman", "soccer_ball", "sock", "speedboat", "spider", "spoon", "spreadsheet", "square",
    "squiggle", "squirrel", "stairs", "star", "steak", "stereo", "stethoscope", "stitches",
    "stop_sign", "stove", "strawberry", "streetlight", "string_bean", "submarine", "suitcase",
    "sun", "swan", "sweater", "swing_set", "sword", "syringe", "t-shirt", "table", "teapot",
    "teddy-bear", "telephone", "television", "tennis_racquet", "tent", "tiger", "toaster", "toe",
    "toilet", "tooth", "toothbrush", "toothpaste", "tornado", "tractor", "traffic_light", "train",
    "tree", "triangle", "trombone", "truck", "trumpet", "umbrella", "underwear", "van", "vase",
    "violin", "washing_machine", "watermelon", "waterslide", "whale", "wheel", "windmill",
    "wine_bottle", "wine_glass", "wristwatch", "yoga", "zebra", "zigzag",
)

DOMAIN_SETS: Dict[str, DomainSet] = {
    "pacs": DomainSet(
        name="pacs", title="PACS", folder="PACS",
        domains=("art_painting", "cartoon", "photo", "sketch"),
        classes=_PACS_CLASSES,
        # Dassl.pytorch dassl/data/datasets/dg/pacs.py (the PACS paper's counts)
        images={"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929},
        archives=(Archive(
            _gdrive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd"), "PACS.zip",
            "md5:fd5db817f7cdafeef3bfd525aaf9b42e",
            f"URL: {_DOMAINBED}; MD5: {_LARSKUE.format('pacs')}"),),
        homepage="https://domaingeneralization.github.io/#data",
        citation="Li et al., ICCV 2017"),
    "vlcs": DomainSet(
        name="vlcs", title="VLCS", folder="VLCS",
        domains=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
        classes=_VLCS_CLASSES,
        # the lines per domain of DomainBed domainbed/misc/vlcs_files.txt, the file list the
        # archive was built from
        images={"Caltech101": 1415, "LabelMe": 2656, "SUN09": 3282, "VOC2007": 3376},
        archives=(Archive(
            _gdrive("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8"), "VLCS.tar.gz",
            "md5:8870171eba660927d9668f4e515928e4",
            f"URL: {_DOMAINBED}; MD5: {_LARSKUE.format('vlcs')}"),),
        homepage="https://github.com/facebookresearch/DomainBed",
        citation="Fang et al., ICCV 2013"),
    "office_home": DomainSet(
        name="office_home", title="OfficeHome", folder="office_home",
        domains=("Art", "Clipart", "Product", "Real World"),
        classes=_OFFICE_HOME_CLASSES,
        # the OfficeHome paper's counts (15,588 in all, as in the DomainBed paper)
        images={"Art": 2427, "Clipart": 4365, "Product": 4439, "Real World": 4357},
        archives=(Archive(
            _gdrive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC"), "office_home.zip",
            "md5:b1c14819770c4448fd5b6d931031c91c",
            f"URL: {_DOMAINBED}; MD5: {_LARSKUE.format('office_home')}"),),
        homepage="https://www.hemanthdv.org/officeHomeDataset.html",
        citation="Venkateswara et al., CVPR 2017"),
    "terra_incognita": DomainSet(
        name="terra_incognita", title="TerraIncognita", folder="terra_incognita",
        domains=("location_100", "location_38", "location_43", "location_46"),
        classes=_TERRA_CLASSES,
        # the 24,788-image version of the DomainBed/SWAD/MIRO papers, per domain as given in
        # khanrc/miro issue #9; the archives now published give 24,330 in all (same issue)
        images={"location_100": 4879, "location_38": 9767, "location_43": 4020,
                "location_46": 6122},
        archives=(
            Archive(_LILA + "eccv_18_all_images_sm.tar.gz", "eccv_18_all_images_sm.tar.gz",
                    None, f"URL: {_DOMAINBED}; no checksum published"),
            Archive(_LILA + "eccv_18_annotations.tar.gz", "eccv_18_annotations.tar.gz",
                    None, f"URL: {_DOMAINBED}; no checksum published"),
        ),
        homepage="https://lila.science/datasets/caltech-camera-traps",
        citation="Beery et al., ECCV 2018"),
    "domain_net": DomainSet(
        name="domain_net", title="DomainNet", folder="domain_net",
        domains=("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
        classes=_DOMAIN_NET_CLASSES,
        images={},  # no per-domain count after the duplicate removal is published
        archives=tuple(
            Archive(_VISDA + path, path.rsplit("/", 1)[-1], "sha256:" + digest,
                    f"URL: {_DOMAINBED}; SHA-256: {_TFDS}")
            for path, digest in (
                ("groundtruth/clipart.zip",
                 "f8f248a3e8bbc9868c523ae24e6601b4c2ad102afc60c0efeb4f3255df22354d"),
                ("infograph.zip",
                 "891e14f476317e97b6f06d6498c11d0a5b8d0c8b57210765ed9beb072da611fa"),
                ("groundtruth/painting.zip",
                 "fa47e6d405503ea0286cabd767f176bd30e988b63ddd7b9db16cf030c9770015"),
                ("quickdraw.zip",
                 "9f37df2a8c3733703dbb35ad9964202a65f675ca30137756457537536b485d84"),
                ("real.zip",
                 "d7fe010b430c5b510f85d657d38c4a1924822695fabea4fef57bd00dba251d63"),
                ("sketch.zip",
                 "23a7dbae7016b343e934399beaa8a68728fb5e570ebe2c71df9b75cf91c499fc"),
            )),
        homepage="http://ai.bu.edu/M3SDA/",
        citation="Peng et al., ICCV 2019"),
}


def get_domain_set(name: str) -> DomainSet:
    """The registry entry of ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return DOMAIN_SETS[name]
    except KeyError:
        raise ValueError(f"unknown domain-generalization set {name!r}; choose one of "
                         f"{', '.join(DOMAIN_SETS)}") from None


def dataset_root(name: str, data_dir: Path) -> Path:
    """``data_dir / <the set's folder>``."""
    return Path(data_dir) / get_domain_set(name).folder


def missing_message(name: str, data_dir: Path) -> str:
    """One line saying how to get the set into ``data_dir``."""
    spec = get_domain_set(name)
    data_dir = Path(data_dir)
    files = ", ".join(a.filename for a in spec.archives)
    return (f"{dataset_root(name, data_dir)} not found: download {spec.title} with "
            f"`python scripts/download_dg.py {name} --root {data_dir}` (or put the hand-fetched "
            f"{files} in {data_dir / DOWNLOADS}/ and run the same command)")


def domain_net_duplicates() -> List[str]:
    """DomainBed's list of DomainNet images held more than once (paths under the set folder)."""
    if not DUPLICATES_FILE.exists():
        raise ConfigError(f"{DUPLICATES_FILE} is missing: reinstall snc (the file ships with "
                          "the package)")
    lines = DUPLICATES_FILE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# ----------------------------------------------------------------------------- unpacking

def _unsafe_name(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return (path.is_absolute() or ".." in path.parts
            or (len(name) > 1 and name[1] == ":"))  # a Windows drive


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpacks a zip or tar archive into ``dest``, refusing absolute paths, ``..`` and links.

    Raises:
        ConfigError: an unsafe member (named) or a file that is no zip or tar archive.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def refuse(member: str, why: str) -> ConfigError:
        return ConfigError(f"{archive.name} holds an unsafe member {member!r} ({why}): it was "
                           "not unpacked; delete the archive and fetch it from the published "
                           "source")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if _unsafe_name(info.filename):
                    raise refuse(info.filename, "a path outside the folder")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise refuse(info.filename, "a link")
            zf.extractall(dest)
        return
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError:
        raise ConfigError(f"{archive} is neither a zip nor a tar archive (an error page saved "
                          "in its place?): delete it and fetch it again") from None
    with tar:
        for member in tar.getmembers():
            if _unsafe_name(member.name):
                raise refuse(member.name, "a path outside the folder")
            if member.issym() or member.islnk():
                raise refuse(member.name, "a link")
            if not (member.isfile() or member.isdir()):
                raise refuse(member.name, "a device or special file")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # checked above
            tar.extractall(dest)


# ----------------------------------------------------------------------------- rearranging

def _rename_top(folder_in_archive: str):
    """A set whose archive holds one folder that becomes the final one (PACS's ``kfold``,
    ``VLCS``, OfficeHome's ``OfficeHomeDataset_10072016``)."""

    def build(unpacked: Path, out: Path, spec: DomainSet) -> None:
        top = unpacked / folder_in_archive
        if not top.is_dir():
            found = sorted(p.name for p in unpacked.iterdir())
            raise ConfigError(f"{spec.title}: the archive has no {folder_in_archive}/ folder "
                              f"(found: {', '.join(found) or 'nothing'}): it is not the "
                              f"published archive; delete it from downloads/ and run again")
        top.rename(out)

    return build


def _build_domain_net(unpacked: Path, out: Path, spec: DomainSet) -> None:
    unpacked.rename(out)  # the six zips unpack to clipart/, infograph/, ...
    removed = 0
    for rel in domain_net_duplicates():
        try:
            (out / rel).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    log.info("DomainNet: removed %d duplicate images listed by DomainBed", removed)


def _build_terra_incognita(unpacked: Path, out: Path, spec: DomainSet) -> None:
    images = unpacked / "eccv_18_all_images_sm"
    notes = unpacked / "eccv_18_annotation_files"
    data: Dict[str, list] = defaultdict(list)
    for name in _TERRA_ANNOTATIONS:
        path = notes / name
        if not path.exists():
            raise ConfigError(f"TerraIncognita: {name} is missing from "
                              "eccv_18_annotations.tar.gz: delete the archive from downloads/ "
                              "and run again")
        with open(path) as f:
            for key, value in json.load(f).items():
                if isinstance(value, list):
                    data[key].extend(value)
    categories = {c["id"]: c["name"] for c in data["categories"]}
    by_image: Dict[object, list] = defaultdict(list)
    for note in data["annotations"]:
        by_image[note["image_id"]].append(note)
    out.mkdir()
    for image in data["images"]:
        location = str(image["location"])
        if location not in _TERRA_LOCATIONS:
            continue
        folder = out / f"location_{location}"
        folder.mkdir(exist_ok=True)
        for note in by_image.get(image["id"], ()):
            category = categories[note["category_id"]]
            if category not in _TERRA_CLASSES:
                continue
            source = images / image["file_name"]
            if not source.exists():
                raise ConfigError(f"TerraIncognita: {image['file_name']} is annotated but not "
                                  "in eccv_18_all_images_sm.tar.gz: delete the archives from "
                                  "downloads/ and run again")
            (folder / category).mkdir(exist_ok=True)
            shutil.copyfile(source, folder / category / Path(image["file_name"]).name)


_BUILDERS = {
    "pacs": _rename_top("kfold"),
    "vlcs": _rename_top("VLCS"),
    "office_home": _rename_top("OfficeHomeDataset_10072016"),
    "terra_incognita": _build_terra_incognita,
    "domain_net": _build_domain_net,
}


# ----------------------------------------------------------------------------- checking

def _missing_folders(spec: DomainSet, root: Path) -> List[str]:
    missing = []
    for domain in spec.domains:
        if not (root / domain).is_dir():
            missing.append(domain)
            continue
        missing += [f"{domain}/{c}" for c in spec.classes if not (root / domain / c).is_dir()]
    return missing


def count_images(spec: DomainSet, root: Path) -> Dict[str, int]:
    """Image files per domain folder of an unpacked set."""
    counts = {}
    for domain in spec.domains:
        n = 0
        for _, _, files in os.walk(root / domain):
            n += sum(f.lower().endswith(IMAGE_SUFFIXES) for f in files)
        counts[domain] = n
    return counts


def is_complete(name: str, data_dir: Path) -> bool:
    """The set's folder holds every domain (as recorded by a finished download in its
    ``.complete`` marker) or every domain and class folder."""
    spec = get_domain_set(name)
    root = dataset_root(name, data_dir)
    if not root.is_dir():
        return False
    marker = read_marker(root / MARKER)
    if sorted(marker.get("images", {})) == sorted(spec.domains):
        return all((root / d).is_dir() for d in spec.domains)
    return not _missing_folders(spec, root)


def _finish(spec: DomainSet, out: Path) -> Dict[str, int]:
    """Checks a built folder, warns where it differs from the published counts and writes the
    marker (inside ``out``, before ``out`` is renamed into place)."""
    absent = [d for d in spec.domains if not (out / d).is_dir()]
    if absent:
        raise ConfigError(f"{spec.title}: the unpacked archives have no {', '.join(absent)} "
                          "folder: they are not the published archives; delete them from "
                          "downloads/ and run again")
    missing = _missing_folders(spec, out)
    if missing:  # DomainBed makes a class folder only where there are images of it
        log.warning("%s: no images of %s", spec.title, ", ".join(missing))
    counts = count_images(spec, out)
    for domain, n in counts.items():
        want = spec.images.get(domain)
        if want is not None and n != want:
            log.warning("%s/%s has %d images, %d published", spec.title, domain, n, want)
    write_marker(out / MARKER, {"name": spec.name, "images": counts,
                                "classes_missing": missing})
    return counts


# ----------------------------------------------------------------------------- downloading

def _fetch(archive: Archive, downloads: Path, url: str, progress: bool) -> Tuple[Path, bool]:
    """``(path, downloaded now)`` of a checked archive in ``downloads``."""
    dest = downloads / archive.filename
    algorithm, want = parse_checksum(archive.checksum)
    if dest.exists():
        ok, actual = checksum_matches(dest, archive.checksum)
        if not ok:
            raise ConfigError(f"{dest} has {algorithm.upper()} {actual}, expected {want} "
                              f"({archive.source}): it is truncated or another file; delete "
                              "it and run again")
        log.info("using %s", dest)
        fetched = False
    else:
        try:
            with new_folders(downloads):
                download_resumable(url, dest, archive.checksum, progress=progress)
        except ValueError as err:
            hint = (" Google Drive answers large or busy files with a web page: fetch it in a "
                    f"browser and put it in {downloads}/." if "drive.google" in url else "")
            raise ConfigError(f"{err}.{hint}") from None
        except (urllib.error.URLError, OSError) as err:
            raise ConfigError(f"could not download {archive.filename} from {url} ({err}): fetch "
                              f"it by hand, put it in {downloads}/ and run the same command "
                              "again") from None
        fetched = True
    if archive.checksum is None:
        log.info("%s: no published checksum; its SHA-256 is %s (compare with a colleague's "
                 "copy)", archive.filename, file_digest(dest, "sha256"))
    return dest, fetched


def download_domain_set(name: str, data_dir: Path, *, progress: bool = True,
                        urls: Optional[Mapping[str, str]] = None,
                        keep_archives: bool = False) -> Path:
    """Downloads, checks, unpacks and arranges a set into ``data_dir/<folder>`` (skipped when
    that folder is complete).

    Args:
        name: a key of :data:`DOMAIN_SETS`.
        data_dir: the data folder; archives go to ``data_dir/downloads/``, where an archive
            fetched by hand is used as it is.
        urls: replacement URLs by archive file name (mirrors, tests).
        keep_archives: keep the archives this call downloaded (hand-fetched ones are always
            kept).

    Returns:
        The set's folder.

    Raises:
        ConfigError: a failed download, a checksum mismatch (the file is named), an unsafe or
            unexpected archive, or an incomplete folder already in the way.
    """
    spec = get_domain_set(name)
    data_dir = Path(data_dir)
    root = data_dir / spec.folder
    known = {a.filename for a in spec.archives}
    unknown = sorted(set(urls or {}) - known)
    if unknown:
        raise ValueError(f"urls for {', '.join(unknown)}: {spec.title}'s archives are "
                         f"{', '.join(sorted(known))}")
    if is_complete(name, data_dir):
        log.info("%s is complete", root)
        if not (root / MARKER).exists():
            try:
                write_marker(root / MARKER, {"name": spec.name,
                                             "images": count_images(spec, root)})
            except OSError:  # a read-only shared copy: complete all the same
                pass
        return root
    if root.exists():
        missing = _missing_folders(spec, root)
        raise ConfigError(f"{root} exists but is incomplete (missing {', '.join(missing[:5])}"
                          f"{', ...' if len(missing) > 5 else ''}): move or delete it and run "
                          "again")
    downloads = data_dir / DOWNLOADS
    fetched = []
    archives = []
    for archive in spec.archives:
        url = (urls or {}).get(archive.filename, archive.url)
        path, new = _fetch(archive, downloads, url, progress)
        archives.append(path)
        if new:
            fetched.append(path)
    for stale in data_dir.glob(f".{spec.folder}.partial-*"):
        log.info("removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    work = data_dir / f".{spec.folder}.partial-{os.getpid()}"
    try:
        unpacked, out = work / "unpacked", work / spec.folder
        for path in archives:
            log.info("unpacking %s", path.name)
            safe_extract(path, unpacked)
        _BUILDERS[name](unpacked, out, spec)
        _finish(spec, out)
        out.rename(root)  # the one step that makes the set visible
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not keep_archives:
        for path in fetched:
            path.unlink()
    log.info("%s is complete", root)
    return root
