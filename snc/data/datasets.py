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

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from snc.data.augmix import AugMix
from snc.data.corrupted import (
    default_workers,
    generate_cifar_style,
    imagenet_c_dir,
    load_cifar_c,
    load_imagenet_c,
    read_manifest,
    severity_rows,
)
from snc.data.corruptions import ALL_CORRUPTIONS, CORRUPTIONS
from snc.data.loader import ArrayLoader
from snc.errors import ConfigError

log = logging.getLogger("snc")
CORRUPTED_MODES = ("published", "generate", "none")


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

    def __iter__(self) -> Iterator[Tuple[str, int, Callable]]:
        for name in self.corruptions:
            images, labels = load_cifar_c(self.root, name)
            for s in range(1, 6):
                rows = severity_rows(len(images), s)
                self.counts[(name, s)] = rows.stop - rows.start
                x, y = np.asarray(images[rows]), labels[rows]
                yield name, s, (lambda x=x, y=y: iter(self.make_loader(x, y)))


@dataclass
class FolderCorruptedSets(CorruptedSets):
    """ImageNet-C layout: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``."""

    transform: object = None

    def check(self, name: str) -> None:
        for s in range(1, 6):
            imagenet_c_dir(self.root, name, s)

    def __iter__(self) -> Iterator[Tuple[str, int, Callable]]:
        for name in self.corruptions:
            for s in range(1, 6):
                ds = load_imagenet_c(self.root, name, s, transform=self.transform)
                self.counts[(name, s)] = len(ds)
                yield name, s, (lambda ds=ds: iter(self.make_loader(ds)))


@dataclass
class Data:
    train: ArrayLoader
    test: ArrayLoader
    num_classes: int
    corrupted: Optional[CorruptedSets]
    info: Dict[str, object]


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


def get_source(cfg, data_dir: Path) -> Source:
    """The :class:`Source` of ``cfg.dataset``; unknown names fail with the known ones."""
    name = cfg.dataset.name
    if name not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return _DATASETS[name](cfg, data_dir)


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
    path = Path(cfg.dataset.path)
    if not path.exists():
        raise FileNotFoundError(
            f"dataset.path={path} does not exist: give an .npz with train_images, "
            "train_labels, test_images, test_labels (uint8 (N, H, W, 3) images)"
        )
    with np.load(path, allow_pickle=False) as f:
        missing = {"train_images", "train_labels", "test_images", "test_labels"} - set(f.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        train = (f["train_images"], f["train_labels"].astype(np.int64))
        test = (f["test_images"], f["test_labels"].astype(np.int64))
    root = data_dir / f"{path.stem}-C-generated-{cfg.dataset.corruption_preset}"
    return Source("array", train, test, cfg.dataset.get("num_classes"), root, f"{path} test set")


@register_dataset("imagenet")
def _imagenet(cfg, data_dir: Path) -> Source:
    from snc.data.imagenet import TRAIN_DIRS, VAL_DIRS, split_dir

    root = Path(cfg.dataset.root)
    return Source("folder", split_dir(root, TRAIN_DIRS), split_dir(root, VAL_DIRS),
                  cfg.dataset.get("num_classes"), data_dir / "ImageNet-C-generated",
                  "ImageNet val")


def load_arrays(cfg, data_dir: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` of an array dataset."""
    source = get_source(cfg, data_dir)
    if source.layout != "array":
        raise ConfigError(f"dataset={cfg.dataset.name} is a folder dataset, not arrays")
    return (*source.train, *source.test)


def _corruption_list(cfg) -> Tuple[str, ...]:
    names = tuple(cfg.dataset.get("corruptions") or CORRUPTIONS)
    bad = [c for c in names if c not in ALL_CORRUPTIONS]
    if bad:
        raise ValueError(f"dataset.corruptions has unknown names {bad}; choose from "
                         f"{', '.join(ALL_CORRUPTIONS)}")
    return names


def corrupted_root(cfg, source: Source) -> Path:
    """Where the corrupted set of ``cfg.dataset`` is read from or generated into."""
    d = cfg.dataset
    return Path(d.corrupted_dir) if d.get("corrupted_dir") else source.generated_root


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
                             progress=progress, source=self.source.description)

    def corrupted_kwargs(self) -> Dict[str, Any]:
        return {"make_loader": lambda x, y: self.loader((x, y), self.cfg.eval_batch_size, False)}


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
        from snc.data.corrupted import generate_imagenet_style

        d = self.cfg.dataset
        generate_imagenet_style(self.source.test, root, corruptions=names,
                                preset=d.corruption_preset, seed=d.get("corruption_seed", 0),
                                workers=default_workers(), progress=progress)

    def corrupted_kwargs(self) -> Dict[str, Any]:
        batch = max(1, self.cfg.eval_batch_size // self.world)
        return {"transform": self.c_tf,
                "make_loader": lambda ds: self.loader(ds, batch, False)}


_LAYOUTS = {"array": _ArrayLayout, "folder": _FolderLayout}


def build_data(cfg, device, *, progress: bool = True, rank: int = 0, world: int = 1) -> Data:
    """Loaders for ``cfg`` on ``device`` (and the corrupted sets, generating them if asked).

    ``rank``/``world``: this process's shard under ``torch.distributed``.
    """
    from snc.distributed import barrier

    d = cfg.dataset
    mode = d.get("corrupted", "none")
    if mode not in CORRUPTED_MODES:
        raise ValueError(f"dataset.corrupted={mode!r}; choose one of {', '.join(CORRUPTED_MODES)}")
    source = get_source(cfg, Path(cfg.paths.data_dir))
    common = dict(mean=list(d.mean), std=list(d.std), device=device,
                  channels_last=cfg.channels_last, rank=rank, world=world)
    layout = _LAYOUTS[source.layout](cfg, source, common)
    train, test = layout.train_loader(), layout.test_loader()
    num_train, num_test = layout.sizes()
    info: Dict[str, object] = {"dataset": d.name, "num_train": num_train, "num_test": num_test}
    if source.layout == "folder":
        info["num_classes_found"] = layout.num_classes()
    corrupted = None
    if mode != "none" and cfg.get("evaluate_corruptions", True):
        root = corrupted_root(cfg, source)
        names = _corruption_list(cfg)

        def generate() -> None:
            if rank == 0:  # one process generates, the others wait for the files
                layout.generate(root, names, progress)
            barrier()

        corrupted = layout.sets(root=root, corruptions=names, mode=mode, generate=generate,
                                **layout.corrupted_kwargs())
        info.update(corrupted_dir=str(root))
    num_classes = int(source.num_classes or layout.num_classes())
    return Data(train=train, test=test, num_classes=num_classes, corrupted=corrupted, info=info)
