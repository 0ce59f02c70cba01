"""From a dataset config to train/test loaders and the corrupted test sets.

Datasets (``cfg.dataset.name``):

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
from typing import Callable, Dict, Iterator, Optional, Tuple

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

log = logging.getLogger("snc")
DATASETS = ("cifar10", "cifar100", "synthetic", "npz", "imagenet")
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


def load_arrays(cfg, data_dir: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` for ``cfg.dataset``."""
    name = cfg.dataset.name
    if name in ("cifar10", "cifar100"):
        from snc.data.cifar import load_cifar

        (xtr, ytr), (xte, yte) = load_cifar(name, data_dir, download=cfg.dataset.download)
        return xtr, ytr, xte, yte
    if name == "synthetic":
        from snc.data.synthetic import make_synthetic

        d = cfg.dataset
        xtr, ytr = make_synthetic(d.num_train, d.seed, d.image_size, d.num_classes)
        xte, yte = make_synthetic(d.num_test, d.seed + 1_000_003, d.image_size, d.num_classes)
        return xtr, ytr, xte, yte
    if name == "npz":
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
            return (f["train_images"], f["train_labels"].astype(np.int64), f["test_images"],
                    f["test_labels"].astype(np.int64))
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _corruption_list(cfg) -> Tuple[str, ...]:
    names = tuple(cfg.dataset.get("corruptions") or CORRUPTIONS)
    bad = [c for c in names if c not in ALL_CORRUPTIONS]
    if bad:
        raise ValueError(f"dataset.corruptions has unknown names {bad}; choose from "
                         f"{', '.join(ALL_CORRUPTIONS)}")
    return names


def corrupted_root(cfg, data_dir: Path) -> Path:
    """Where the corrupted set of ``cfg.dataset`` is read from or generated into."""
    d = cfg.dataset
    if d.get("corrupted_dir"):
        return Path(d.corrupted_dir)
    if d.name == "synthetic":
        return (data_dir / "synthetic" /
                f"test{d.num_test}-seed{d.seed}-c{d.num_classes}-px{d.image_size}-"
                f"{d.corruption_preset}-C")
    stem = Path(d.path).stem if d.name == "npz" else d.name
    return data_dir / f"{stem}-C-generated-{d.corruption_preset}"


def _augmix(cfg) -> Optional[AugMix]:
    if not cfg.augmix.enabled:
        return None
    return AugMix(list(cfg.dataset.mean), list(cfg.dataset.std), severity=cfg.augmix.severity,
                  width=cfg.augmix.width, depth=cfg.augmix.depth, alpha=cfg.augmix.alpha)


def build_data(cfg, device, *, progress: bool = True, rank: int = 0, world: int = 1) -> Data:
    """Loaders for ``cfg`` on ``device`` (and the corrupted sets, generating them if asked).

    ``rank``/``world``: this process's shard under ``torch.distributed``.
    """
    d = cfg.dataset
    mode = d.get("corrupted", "none")
    if mode not in CORRUPTED_MODES:
        raise ValueError(f"dataset.corrupted={mode!r}; choose one of {', '.join(CORRUPTED_MODES)}")
    if d.name == "imagenet":
        return _build_folder_data(cfg, device, mode, progress, rank, world)
    data_dir = Path(cfg.paths.data_dir)
    xtr, ytr, xte, yte = load_arrays(cfg, data_dir)
    num_classes = int(d.get("num_classes") or int(max(ytr.max(), yte.max())) + 1)
    mean, std = list(d.mean), list(d.std)
    common = dict(mean=mean, std=std, device=device, channels_last=cfg.channels_last,
                  rank=rank, world=world)
    train = ArrayLoader(xtr, ytr, batch_size=cfg.batch_size, train=True,
                        padding=d.get("crop_padding", 4), augmix=_augmix(cfg),
                        drop_last=cfg.get("drop_last", False), seed=cfg.seed, **common)
    test = ArrayLoader(xte, yte, batch_size=cfg.eval_batch_size, **common)
    corrupted = None
    info: Dict[str, object] = {"dataset": d.name, "num_train": len(xtr), "num_test": len(xte)}
    if mode != "none" and cfg.get("evaluate_corruptions", True):
        root = corrupted_root(cfg, data_dir)
        names = _corruption_list(cfg)

        def generate() -> None:
            from snc.distributed import barrier

            if rank == 0:  # one process generates, the others wait for the files
                generate_cifar_style(xte, yte, root, corruptions=names,
                                     preset=d.corruption_preset,
                                     seed=d.get("corruption_seed", 0), workers=default_workers(),
                                     progress=progress, source=f"{d.name} test set")
            barrier()

        corrupted = ArrayCorruptedSets(
            root=root, corruptions=names, mode=mode, generate=generate,
            make_loader=lambda x, y: ArrayLoader(x, y, batch_size=cfg.eval_batch_size, **common))
        info.update(corrupted_dir=str(root))
    return Data(train=train, test=test, num_classes=num_classes, corrupted=corrupted, info=info)


def _build_folder_data(cfg, device, mode: str, progress: bool, rank: int, world: int) -> Data:
    from torchvision.datasets import ImageFolder

    from snc.data.corrupted import generate_imagenet_style
    from snc.data.imagenet import TRAIN_DIRS, VAL_DIRS, FolderLoader, imagenet_transform, split_dir

    d = cfg.dataset
    root = Path(d.root)
    size, resize = int(d.image_size), int(d.resize_size)
    train_set = ImageFolder(str(split_dir(root, TRAIN_DIRS)), imagenet_transform(True, size))
    val_dir = split_dir(root, VAL_DIRS)
    eval_tf = imagenet_transform(False, size, resize)
    val_set = ImageFolder(str(val_dir), eval_tf)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is the global batch and must be divisible "
                         f"by the {world} processes")
    common = dict(mean=list(d.mean), std=list(d.std), device=device, rank=rank, world=world,
                  channels_last=cfg.channels_last, workers=int(d.workers))
    train = FolderLoader(train_set, cfg.batch_size // world, train=True, seed=cfg.seed,
                         augmix=_augmix(cfg), drop_last=cfg.get("drop_last", False), **common)
    test = FolderLoader(val_set, max(1, cfg.eval_batch_size // world), **common)
    info: Dict[str, object] = {"dataset": d.name, "num_train": len(train_set),
                               "num_test": len(val_set), "num_classes_found":
                               len(train_set.classes)}
    corrupted = None
    if mode != "none" and cfg.get("evaluate_corruptions", True):
        c_root = Path(d.corrupted_dir) if d.get("corrupted_dir") else \
            Path(cfg.paths.data_dir) / "ImageNet-C-generated"
        names = _corruption_list(cfg)

        def generate() -> None:
            if rank == 0:
                generate_imagenet_style(val_dir, c_root, corruptions=names,
                                        preset=d.corruption_preset,
                                        seed=d.get("corruption_seed", 0),
                                        workers=default_workers(), progress=progress)
            from snc.distributed import barrier

            barrier()

        # ImageNet-C images are 224 px already; the official script still applies
        # Resize(256) + CenterCrop(224) (dataset.imagenet_c_resize=true), the authors only the crop
        c_tf = eval_tf if d.get("imagenet_c_resize", True) else imagenet_transform(
            False, size, size)
        corrupted = FolderCorruptedSets(
            root=c_root, corruptions=names, mode=mode, generate=generate, transform=c_tf,
            make_loader=lambda ds: FolderLoader(ds, max(1, cfg.eval_batch_size // world),
                                                **common))
        info.update(corrupted_dir=str(c_root))
    num_classes = int(d.get("num_classes") or len(train_set.classes))
    return Data(train=train, test=test, num_classes=num_classes, corrupted=corrupted, info=info)
