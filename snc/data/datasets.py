"""From a dataset config to train/test loaders and the corrupted test sets.

Datasets are registered by name (``@register_dataset``), like backbones; each builder returns a
:class:`Source` (arrays or class folders), and one path turns any source into loaders and
corrupted sets. Registered (``cfg.dataset.name``):

- ``cifar10`` / ``cifar100``: torchvision files under ``paths.data_dir``; CIFAR-C from
  ``dataset.corrupted_dir`` (``corrupted=published``) or generated (``corrupted=generate``).
- ``synthetic``: the offline default (:mod:`snc.data.synthetic`), corrupted set generated once
  and cached under ``paths.data_dir/synthetic``.
- ``npz``: your own arrays, ``train_images``/``train_labels``/``test_images``/``test_labels``
  (uint8 ``(N, H, W, 3)``), the layout of the real CIFAR subsets.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from snc.atomic import read_marker, write_marker
from snc.augment.augmix import AugMix
from snc.corruptions import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    GENERATOR_VERSION,
)
from snc.corruptions.sets import (
    default_workers,
    generate_cifar_style,
    imagenet_c_dir,
    load_cifar_c,
    load_imagenet_c,
    read_manifest,
    severity_rows,
    sha256_file,
)
from snc.data.checksums import array_digest, folder_digest
from snc.data.loader import ArrayLoader
from snc.errors import ConfigError

log = logging.getLogger("snc")
CORRUPTED_MODES = ("published", "generate", "none")
PREFETCH_BYTES = 1 << 30  # corrupted blocks up to 1 GiB are read one ahead of the evaluation


@dataclass
class CorruptedSets:
    """The corrupted test sets of one dataset, in a published layout.

    :meth:`prepare` generates them (``corrupted=generate``) or checks that every part is there
    (``published``); call it before training so a missing set fails early. Iterating yields
    ``(corruption, severity, make_batches)``; :meth:`expected` gives each set's size.
    """

    root: Path
    corruptions: Tuple[str, ...]
    mode: str
    make_loader: Callable
    generate: Callable[[], None]
    counts: Dict[Tuple[str, int], int] = field(default_factory=dict)
    generated: bool = False

    def check(self, name: str) -> None:  # pragma: no cover - abstract
        """Raises, naming the download or generate command, if ``name`` is missing."""
        raise NotImplementedError

    def prepare(self) -> None:
        if self.mode == "generate":
            self.generate()
        for name in self.corruptions:
            self.check(name)
        self.generated = bool(read_manifest(self.root).get("generated"))
        if self.mode == "published" and self.generated:
            log.warning("%s holds a generated set (manifest.json): results are labelled "
                        "'generated', not the published benchmark", self.root)

    def expected(self, name: str, severity: int) -> int:
        return self.counts[(name, severity)]


@dataclass
class ArrayCorruptedSets(CorruptedSets):
    """CIFAR-C layout: ``<root>/<corruption>.npy`` (5 severities stacked) + ``labels.npy``."""

    def check(self, name: str) -> None:
        load_cifar_c(self.root, name)

    pin: bool = False  # CUDA: blocks are read into pinned memory, copied without blocking

    def __iter__(self) -> Iterator[Tuple[str, int, Callable]]:
        """One (corruption, severity) block at a time, read from the memory-mapped file while
        the block before it is evaluated (one block ahead, for blocks up to
        :data:`PREFETCH_BYTES`), into pinned memory on CUDA so its copy to the device does not
        block."""
        def blocks():
            for name in self.corruptions:
                images, labels = load_cifar_c(self.root, name)
                for s in range(1, 6):
                    yield name, s, images, labels, severity_rows(len(images), s)

        def read(block):
            name, s, images, labels, rows = block
            x = torch.from_numpy(np.array(images[rows]))  # a writable copy of the mapped rows
            return name, s, (x.pin_memory() if self.pin else x), labels[rows]

        with ThreadPoolExecutor(max_workers=1) as pool:
            todo = blocks()
            block = next(todo, None)
            pending = pool.submit(read, block) if block is not None else None
            while pending is not None:
                name, s, x, y = pending.result()
                block = next(todo, None)
                small = block is not None and x.numel() <= PREFETCH_BYTES
                pending = pool.submit(read, block) if small else None
                self.counts[(name, s)] = len(y)
                yield name, s, (lambda x=x, y=y: iter(self.make_loader(x, y)))
                if block is not None and pending is None:  # a large block: read it now
                    pending = pool.submit(read, block)
                    pending.result()


@dataclass
class FolderCorruptedSets(CorruptedSets):
    """ImageNet-C layout: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``; ImageNet-C-bar names
    its severity folders by the severity value instead (``severity_dirs``:
    ``{corruption: (folder of severity 1, ..., of 5)}``)."""

    transform: object = None
    severity_dirs: Optional[Dict[str, Tuple[str, ...]]] = None

    def _dir(self, name: str, s: int):
        return self.severity_dirs[name][s - 1] if self.severity_dirs else s

    def check(self, name: str) -> None:
        for s in range(1, 6):
            imagenet_c_dir(self.root, name, self._dir(name, s))

    def __iter__(self) -> Iterator[Tuple[str, int, Callable]]:
        for name in self.corruptions:
            for s in range(1, 6):
                ds = load_imagenet_c(self.root, name, self._dir(name, s),
                                     transform=self.transform)
                self.counts[(name, s)] = len(ds)
                yield name, s, (lambda ds=ds: iter(self.make_loader(ds)))


@dataclass
class Data:
    train: ArrayLoader
    test: ArrayLoader
    num_classes: int
    corrupted: Optional[CorruptedSets]
    info: Dict[str, object]
    layout: Any = None  # makes loaders and corrupted sets of further shifts (snc.eval.suite)


@dataclass
class Source:
    """What a registered classification dataset provides.

    Attributes:
        layout: ``array`` (uint8 ``(N, H, W, 3)`` images in memory, CIFAR-C layout for the
            corrupted sets) or ``folder`` (class folders, ImageNet-C layout).
        train, test: ``(images, labels)`` arrays (``array``) or class-folder roots (``folder``).
        num_classes: the class count, or None to infer it.
        generated_root: where a generated corrupted set goes (``corrupted=generate``) when
            ``dataset.corrupted_dir`` is not given.
        description: names the source in a generated set's manifest.
    """

    layout: str
    train: Any
    test: Any
    num_classes: Optional[int]
    generated_root: Path
    description: str = ""
    _digests: Dict[str, str] = field(default_factory=dict, repr=False)

    def digest(self, split: str = "all") -> str:
        """SHA-256 of the data actually used: ``all`` (train + test), or ``test`` alone (what a
        corrupted copy is made from). Arrays: their bytes; folders: relative paths and sizes."""
        if split not in self._digests:
            parts = {"all": (self.train, self.test), "test": (self.test,)}[split]
            if self.layout == "array":
                self._digests[split] = array_digest(*(a for part in parts for a in part))
            elif split == "test":
                self._digests[split] = folder_digest(Path(self.test))
            else:
                self._digests[split] = array_digest(np.frombuffer("".join(
                    folder_digest(Path(p)) for p in parts).encode(), np.uint8))
        return self._digests[split]


SourceBuilder = Callable[[Any, Path], Source]
_DATASETS: Dict[str, SourceBuilder] = {}


def register_dataset(name: str) -> Callable[[SourceBuilder], SourceBuilder]:
    """Decorator registering ``builder(cfg, data_dir) -> Source`` as ``dataset=<name>``."""

    def wrap(builder: SourceBuilder) -> SourceBuilder:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _DATASETS[name] = builder
        return builder

    return wrap


def list_datasets() -> Tuple[str, ...]:
    return tuple(sorted(_DATASETS))


def get_source(cfg, data_dir: Path, fetch: bool = True) -> Source:
    """The :class:`Source` of ``cfg.dataset``; unknown names fail with the known ones. With
    ``fetch=False`` nothing is downloaded, whatever ``dataset.download`` says: a missing
    dataset fails naming how to get it."""
    name = cfg.dataset.name
    if name not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return _DATASETS[name](cfg if fetch else without_download(cfg), data_dir)


def without_download(cfg):
    """``cfg`` with ``dataset.download=false`` (the original is left as it is)."""
    if not cfg.dataset.get("download", False):
        return cfg
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    copy.dataset.download = False
    return copy


def fetch_data(cfg, data_dir: Path) -> Source:
    """The explicit download step of a run (``dataset.download=true``): the clean set and its
    published corrupted set are fetched when missing (under torchrun by one process, the others
    find its files). Returns the source; :func:`data_identity` then only reads."""
    from snc.distributed import main_process_first

    with main_process_first():
        source = get_source(cfg, data_dir)
        if corrupted_mode(cfg) == "published" and source.layout == "array":
            _download_published(cfg, corrupted_root(cfg, source))
    return source


@register_dataset("cifar10")
@register_dataset("cifar100")
def _cifar(cfg, data_dir: Path) -> Source:
    from snc.data.cifar import load_cifar

    d = cfg.dataset
    train, test = load_cifar(d.name, data_dir, download=d.download)
    return Source("array", train, test, d.get("num_classes"),
                  data_dir / f"{d.name}-C-generated-{d.corruption_preset}",
                  f"{d.name} test set")


@register_dataset("synthetic")
def _synthetic(cfg, data_dir: Path) -> Source:
    from snc.data.synthetic import make_synthetic

    d = cfg.dataset
    train = make_synthetic(d.num_train, d.seed, d.image_size, d.num_classes)
    test = make_synthetic(d.num_test, d.seed + 1_000_003, d.image_size, d.num_classes)
    root = (data_dir / "synthetic" / f"test{d.num_test}-seed{d.seed}-c{d.num_classes}-"
            f"px{d.image_size}-{d.corruption_preset}-C")
    return Source("array", train, test, d.num_classes, root, "synthetic test set")


@register_dataset("npz")
def _npz(cfg, data_dir: Path) -> Source:
    try:
        given = cfg.dataset.get("path")
    except MissingMandatoryValue:  # path: ??? in configs/dataset/npz.yaml
        given = None
    if not given:
        raise ConfigError("dataset.path is required for dataset=npz: give an .npz with "
                          "train_images, train_labels, test_images, test_labels (uint8 (N, H, W, "
                          "3) images), e.g. dataset.path=data/my_images.npz")
    path = Path(cfg.dataset.path)
    if not path.exists():
        raise FileNotFoundError(
            f"dataset.path={path} does not exist: give an .npz with train_images, "
            "train_labels, test_images, test_labels (uint8 (N, H, W, 3) images)"
        )
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ConfigError(f"dataset.path={path} is not a readable .npz ({err}); save your "
                          "arrays with np.savez(path, train_images=..., train_labels=..., "
                          "test_images=..., test_labels=...)") from None
    with f:
        missing = {"train_images", "train_labels", "test_images", "test_labels"} - set(f.files)
        if missing:
            raise ConfigError(f"{path} lacks {sorted(missing)}: an .npz needs train_images, "
                              "train_labels, test_images and test_labels")
        train = (f["train_images"], f["train_labels"])  # labels checked, then cast, later
        test = (f["test_images"], f["test_labels"])
    root = data_dir / f"{path.stem}-C-generated-{cfg.dataset.corruption_preset}"
    return Source("array", train, test, cfg.dataset.get("num_classes"), root, f"{path} test set")


@register_dataset("imagenet")
def _imagenet(cfg, data_dir: Path) -> Source:
    from snc.data.imagenet import TRAIN_DIRS, VAL_DIRS, split_dir

    root = Path(cfg.dataset.root)
    test = split_dir(root, VAL_DIRS)
    if cfg.dataset.get("eval_only") and not any((root / d).is_dir() for d in TRAIN_DIRS):
        train = test  # python -m snc.evaluate needs the validation images only; never iterated
    else:
        train = split_dir(root, TRAIN_DIRS)
    return Source("folder", train, test,
                  cfg.dataset.get("num_classes"), data_dir / "ImageNet-C-generated",
                  "ImageNet val")


def load_arrays(cfg, data_dir: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` of an array dataset."""
    source = get_source(cfg, data_dir)
    if source.layout != "array":
        raise ConfigError(f"dataset={cfg.dataset.name} is a folder dataset, not arrays")
    return (*source.train, *source.test)


def _check_split(where: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """uint8 ``(N, H, W, 3)`` images, integer labels of the same length, not empty."""
    shape = tuple(images.shape)
    if images.ndim == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3):
        raise ConfigError(f"{where}: {split} images are channels-first {shape}; store them "
                          "channels-last (N, H, W, 3): np.transpose(images, (0, 2, 3, 1))")
    if images.dtype != np.uint8 or images.ndim != 4 or shape[-1] != 3:
        raise ConfigError(f"{where}: {split} images must be uint8 (N, H, W, 3), got "
                          f"{images.dtype} {shape} (scale floats in [0, 1] by 255 and cast)")
    if len(images) == 0:
        raise ConfigError(f"{where}: the {split} split is empty")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ConfigError(f"{where}: {len(images)} {split} images but labels of shape "
                          f"{labels.shape}; give one integer label per image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"{where}: {split} labels are {labels.dtype}; labels must be integer "
                          "class indices 0..C-1 (cast whole-number floats with "
                          ".astype(np.int64); nothing is truncated silently)")
    if labels.min() < 0:
        raise ConfigError(f"{where}: {split} labels include {int(labels.min())}; class "
                          "indices start at 0")


def check_source(cfg, source: Source) -> int:
    """Checks an array source's images and labels before anything is written; returns the
    class count (``dataset.num_classes``, or inferred when the labels are contiguous).

    Raises:
        ConfigError: naming the split, what is wrong and the fix.
    """
    where = f"dataset={cfg.dataset.name}" + (f" ({cfg.dataset.path})"
                                             if cfg.dataset.get("path") else "")
    if source.layout != "array":
        return int(source.num_classes) if source.num_classes else 0
    for split, (images, labels) in (("train", source.train), ("test", source.test)):
        _check_split(where, split, images, labels)
    labels = np.concatenate([np.asarray(source.train[1]), np.asarray(source.test[1])])
    top = int(labels.max())
    if source.num_classes:
        if top >= int(source.num_classes):
            raise ConfigError(f"{where}: label {top} but dataset.num_classes="
                              f"{source.num_classes}; labels must lie in [0, num_classes)")
        return int(source.num_classes)
    present = np.unique(labels)
    if len(present) != top + 1:
        missing = sorted(set(range(top + 1)) - set(present.tolist()))
        raise ConfigError(f"{where}: labels are not contiguous: {len(present)} classes occur "
                          f"but the largest label is {top} (never seen: {missing[:10]}"
                          f"{' ...' if len(missing) > 10 else ''}); relabel to 0..C-1 or set "
                          "dataset.num_classes")
    return top + 1


VERIFIED = ".snc-verified.json"


def verify_published(root: Path, names, dataset: str) -> Dict[str, str]:
    """Checks a CIFAR-C-style folder before training: every file present and in the layout,
    and its checksum equal to the published MD5 (CIFAR-10-C / CIFAR-100-C) or to the SHA-256 in
    its manifest (a generated set). A file is hashed once; the result is remembered by size and
    modification time in ``<root>/.snc-verified.json``. Returns ``{file: digest}`` (the set's
    identity).

    Raises:
        ConfigError: a file whose checksum differs (truncated, zeroed or replaced), naming it
            and the command that downloads the set again.
    """
    from snc.data.download import CIFAR_C_FILE_MD5, md5_file

    root = Path(root)
    for name in names:
        load_cifar_c(root, name)  # present, readable, in the layout (names the fix otherwise)
    manifest = read_manifest(root)
    published = CIFAR_C_FILE_MD5.get(dataset, {}) if not manifest.get("generated") else {}
    expected = {f: ("md5", m) for f, m in published.items()}
    expected.update({f: ("sha256", d) for f, d in manifest.get("files", {}).items()})
    cache = read_marker(root / VERIFIED)
    identity, changed = {}, False
    for file in [f"{n}.npy" for n in names] + ["labels.npy"]:
        path = root / file
        st = path.stat()
        key = [st.st_size, st.st_mtime_ns]
        hit = cache.get(file)
        if hit and hit[:2] == key:
            identity[file] = hit[2]
            continue
        kind, want = expected.get(file, ("md5", None))
        digest = md5_file(path) if kind == "md5" else sha256_file(path)
        if want is not None and digest != want:
            fix = (f"python scripts/download_cifar_c.py {dataset} --root {root.parent}"
                   if published else f"delete it and generate the set again into {root}")
            raise ConfigError(f"{path} does not match its published {kind.upper()} "
                              f"({digest[:12]}... != {want[:12]}...): truncated or altered; "
                              f"{fix}")
        identity[file] = digest
        cache[file] = key + [digest]
        changed = True
    if changed:
        try:
            write_marker(root / VERIFIED, cache)
        except OSError:  # a read-only dataset folder: verify again next time
            pass
    return identity


def _download_published(cfg, root: Path) -> None:
    """Fetches the published CIFAR-10-C / CIFAR-100-C (resumable, checksums) into ``root`` when
    it is absent and ``dataset.download`` is on, as the clean set is fetched."""
    from snc.data.download import CIFAR_C, download_cifar_c

    name = cfg.dataset.name
    if not cfg.dataset.get("download", False) or name not in CIFAR_C:
        return
    if Path(root).name != CIFAR_C[name][2] or (Path(root) / "labels.npy").exists():
        return  # a folder of the user's own, or already there
    log.info("%s is not in %s: downloading it (resumable, checked against the published MD5s; "
             "dataset.download=false turns this off)", CIFAR_C[name][2], root.parent)
    try:
        download_cifar_c(name, root.parent, progress=bool(cfg.get("progress", True)))
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not download {CIFAR_C[name][2]} from {CIFAR_C[name][0]} "
                          f"({err}); fetch it there (or from a mirror) and unpack it into "
                          f"{root.parent}, or evaluate on a generated set with "
                          "dataset.corrupted=generate") from None


def folder_identity(root: Path, names) -> Dict[str, object]:
    """ImageNet-C-style folder: every (corruption, severity) present; its manifest (generated)
    or the class-folder count per part as the identity (a listing of 3.75 M files per launch
    would be too slow)."""
    for name in names:
        for s in range(1, 6):
            imagenet_c_dir(root, name, s)
    manifest = read_manifest(Path(root))
    if manifest:
        return {"manifest": array_digest(np.frombuffer(
            json.dumps(manifest, sort_keys=True).encode(), np.uint8))}
    return {f"{n}/{s}": len(os.listdir(Path(root) / n / str(s))) for n in names
            for s in range(1, 6)}


def _corruption_list(cfg) -> Tuple[str, ...]:
    """The corruptions of the dataset's own set: ``dataset.corruptions`` (default the 15 of the
    benchmark), plus the four held-out ones (speckle_noise, gaussian_blur, spatter, saturate)
    with ``evaluate.validation=extra``; those never enter the mCE."""
    names = tuple(cfg.dataset.get("corruptions") or CORRUPTIONS)
    bad = [c for c in names if c not in ALL_CORRUPTIONS]
    if bad:
        raise ValueError(f"dataset.corruptions has unknown names {bad}; choose from "
                         f"{', '.join(ALL_CORRUPTIONS)}")
    evaluate = cfg.get("evaluate") or {}
    if evaluate.get("validation", "none") == "extra":
        names += tuple(c for c in EXTRA_CORRUPTIONS if c not in names)
    return names


def corrupted_root(cfg, source: Source) -> Path:
    """Where the corrupted set of ``cfg.dataset`` is read from or generated into.

    A generated set lives in a folder named after the digest of the images it is made from, so
    an edited dataset of the same name never reuses (or overwrites) another set; an explicit
    ``dataset.corrupted_dir`` that holds a set made from other images (or by another generator
    version) is left alone and a sibling ``<dir>-<digest>`` is used instead.
    """
    d = cfg.dataset
    digest = source.digest("test")[:8]
    if not d.get("corrupted_dir"):
        root = source.generated_root
        return root.with_name(f"{root.name}-{digest}")
    root = Path(d.corrupted_dir)
    made = read_manifest(root)
    if d.get("corrupted", "none") == "generate" and made.get("generated"):
        key = "source_sha256" if source.layout == "array" else "source_listing_sha256"
        if (made.get(key) != source.digest("test")
                or made.get("generator_version") != GENERATOR_VERSION):
            other = root.with_name(f"{root.name}-{digest}")
            log.warning("%s holds a set generated from other images or by another generator "
                        "version; generating into %s instead (the old set is kept)", root, other)
            return other
    return root


def _augmix(cfg) -> Optional[AugMix]:
    if not cfg.augmix.enabled:
        return None
    return AugMix(list(cfg.dataset.mean), list(cfg.dataset.std), severity=cfg.augmix.severity,
                  width=cfg.augmix.width, depth=cfg.augmix.depth, alpha=cfg.augmix.alpha)


class _ArrayLayout:
    """In-memory uint8 arrays; CIFAR-C layout for the corrupted sets."""

    sets = ArrayCorruptedSets

    def __init__(self, cfg, source: Source, common: Dict[str, Any]) -> None:
        self.cfg, self.source, self.common = cfg, source, common

    def loader(self, split, batch_size: int, train: bool, **kw):
        images, labels = split
        return ArrayLoader(images, labels, batch_size=batch_size, train=train, **kw,
                           **self.common)

    def train_loader(self):
        cfg = self.cfg
        return self.loader(self.source.train, cfg.batch_size, True,
                           padding=cfg.dataset.get("crop_padding", 4), augmix=_augmix(cfg),
                           drop_last=cfg.get("drop_last", False), seed=cfg.seed)

    def test_loader(self):
        return self.loader(self.source.test, self.cfg.eval_batch_size, False)

    def sizes(self) -> Tuple[int, int]:
        return len(self.source.train[0]), len(self.source.test[0])

    def num_classes(self) -> int:
        (_, ytr), (_, yte) = self.source.train, self.source.test
        return int(max(ytr.max(), yte.max())) + 1

    def generate(self, root: Path, names, progress: bool) -> None:
        d = self.cfg.dataset
        images, labels = self.source.test
        generate_cifar_style(images, labels, root, corruptions=names, preset=d.corruption_preset,
                             seed=d.get("corruption_seed", 0), workers=default_workers(),
                             progress=progress, source=self.source.description,
                             source_digest=self.source.digest("test"))

    def corrupted_kwargs(self) -> Dict[str, Any]:
        return {"make_loader": lambda x, y: self.loader((x, y), self.cfg.eval_batch_size, False),
                "pin": torch.device(self.common["device"]).type == "cuda"}


class _FolderLayout:
    """Class folders read by worker processes; ImageNet-C layout for the corrupted sets."""

    sets = FolderCorruptedSets

    def __init__(self, cfg, source: Source, common: Dict[str, Any]) -> None:
        from torchvision.datasets import ImageFolder

        from snc.data.imagenet import imagenet_transform

        self.cfg, self.source = cfg, source
        d = cfg.dataset
        self.world = common["world"]
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size={cfg.batch_size} is the global batch and must be "
                             f"divisible by the {self.world} processes")
        self.common = dict(common, workers=int(d.workers))
        size, resize = int(d.image_size), int(d.resize_size)
        self.eval_tf = imagenet_transform(False, size, resize)
        self.train_set = ImageFolder(str(source.train), imagenet_transform(True, size))
        self.test_set = ImageFolder(str(source.test), self.eval_tf)
        # ImageNet-C images are 224 px already; the official script still applies
        # Resize(256) + CenterCrop(224) (dataset.imagenet_c_resize=true), the authors only the crop
        self.c_tf = self.eval_tf if d.get("imagenet_c_resize", True) else imagenet_transform(
            False, size, size)

    def loader(self, dataset, batch_size: int, train: bool, **kw):
        from snc.data.imagenet import FolderLoader

        return FolderLoader(dataset, batch_size, train=train, **kw, **self.common)

    def train_loader(self):
        cfg = self.cfg
        return self.loader(self.train_set, cfg.batch_size // self.world, True, seed=cfg.seed,
                           augmix=_augmix(cfg), drop_last=cfg.get("drop_last", False))

    def test_loader(self):
        return self.loader(self.test_set, max(1, self.cfg.eval_batch_size // self.world), False)

    def sizes(self) -> Tuple[int, int]:
        return len(self.train_set), len(self.test_set)

    def num_classes(self) -> int:
        return len(self.train_set.classes)

    def generate(self, root: Path, names, progress: bool) -> None:
        from snc.corruptions.sets import generate_imagenet_style

        d = self.cfg.dataset
        generate_imagenet_style(self.source.test, root, corruptions=names,
                                preset=d.corruption_preset, seed=d.get("corruption_seed", 0),
                                workers=default_workers(), progress=progress)

    def corrupted_kwargs(self) -> Dict[str, Any]:
        batch = max(1, self.cfg.eval_batch_size // self.world)
        return {"transform": self.c_tf,
                "make_loader": lambda ds: self.loader(ds, batch, False)}


_LAYOUTS = {"array": _ArrayLayout, "folder": _FolderLayout}


def corrupted_mode(cfg) -> str:
    """``published``, ``generate`` or ``none`` (also none with ``evaluate_corruptions=false``)."""
    mode = cfg.dataset.get("corrupted", "none")
    if mode not in CORRUPTED_MODES:
        raise ConfigError(f"dataset.corrupted={mode!r}; choose one of "
                          f"{', '.join(CORRUPTED_MODES)}")
    return mode if cfg.get("evaluate_corruptions", True) else "none"


def data_identity(cfg, source: Source) -> Dict[str, object]:
    """What the numbers of a run depend on besides its config: the digest of the data and of
    the corrupted set it is evaluated on. Checks the inputs (and a published corrupted set's
    checksums) on the way, before anything is written."""
    identity: Dict[str, object] = {"data": source.digest()}
    mode = corrupted_mode(cfg)
    if mode == "none":
        return identity
    root, names = corrupted_root(cfg, source), _corruption_list(cfg)
    if mode == "generate":
        identity["corrupted"] = {"generated_from": source.digest("test"),
                                 "generator_version": GENERATOR_VERSION}
    elif source.layout == "array":  # fetched before, by fetch_data (nothing downloads here)
        identity["corrupted"] = verify_published(root, names, cfg.dataset.name)
    else:
        identity["corrupted"] = folder_identity(root, names)
    return identity


def generator(layout, root: Path, names, progress: bool, rank: int) -> Callable[[], None]:
    """The ``generate`` step of a corrupted set: rank 0 generates ``names`` into ``root``, the
    other processes wait for the files."""
    from snc.distributed import barrier

    def generate() -> None:
        if rank == 0:
            layout.generate(root, names, progress)
        barrier()

    return generate


def build_data(cfg, device, *, progress: bool = True, rank: int = 0, world: int = 1,
               source: Optional[Source] = None) -> Data:
    """Loaders for ``cfg`` on ``device`` (and the corrupted sets, generating them if asked).

    ``rank``/``world``: this process's shard under ``torch.distributed``. ``source``: the
    already loaded and checked :class:`Source` (loaded here when None).
    """
    d = cfg.dataset
    mode = corrupted_mode(cfg)
    if source is None:
        source = get_source(cfg, Path(cfg.paths.data_dir))
        check_source(cfg, source)
    common = dict(mean=list(d.mean), std=list(d.std), device=device,
                  channels_last=cfg.channels_last, rank=rank, world=world)
    layout = _LAYOUTS[source.layout](cfg, source, common)
    train, test = layout.train_loader(), layout.test_loader()
    num_train, num_test = layout.sizes()
    info: Dict[str, object] = {"dataset": d.name, "num_train": num_train, "num_test": num_test}
    if source.layout == "folder":
        info["num_classes_found"] = layout.num_classes()
    corrupted = None
    if mode != "none":
        root = corrupted_root(cfg, source)
        names = _corruption_list(cfg)

        corrupted = layout.sets(root=root, corruptions=names, mode=mode,
                                generate=generator(layout, root, names, progress, rank),
                                **layout.corrupted_kwargs())
        info.update(corrupted_dir=str(root))
    num_classes = int(source.num_classes or layout.num_classes())
    return Data(train=train, test=test, num_classes=num_classes, corrupted=corrupted, info=info,
                layout=layout)
