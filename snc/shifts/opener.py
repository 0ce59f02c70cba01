"""Opening a single (non-grid) test set: arrays or class folders, labels in the set's classes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from snc.atomic import read_marker
from snc.data.download import (
    checksum_matches,
)
from snc.errors import ConfigError
from snc.shifts.entries import DOWNLOAD_COMMAND, IMAGE_EXTS, VERIFIED_MARK, Shift

log = logging.getLogger("snc")


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
        expect = f"wnid folders of snc/shifts/classes/{shift.class_list}_classes.json"
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
        raise ConfigError(f"{shift.name} is a corruption grid; read it with snc.corruptions.sets")
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


