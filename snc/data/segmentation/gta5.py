"""GTA5 ("Playing for Data", Richter et al., ECCV 2016) in its published layout.

    <root>/images/NNNNN.png     RGB, mostly 1914x1052
    <root>/labels/NNNNN.png     palette PNG whose pixel values are Cityscapes labelIds
    <root>/split.mat            trainIds / valIds / testIds (12,403 / 6,382 / 6,181)

Download (registration needed): https://download.visinf.tu-darmstadt.de/data/from_games/
(images and labels in 10 parts each, and ``read_mapping.zip`` holding ``split.mat``). Labels are
mapped to trainIds on the fly (no ``labels_mapped/`` copy as the official loader needs).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from snc.data.segmentation.base import Pair, SegmentationDataError

SPLITS = {"train": "trainIds", "val": "valIds", "test": "testIds"}

LAYOUT = """expected layout (GTA5, https://download.visinf.tu-darmstadt.de/data/from_games/,
registration needed):
  {root}/images/00001.png ...
  {root}/labels/00001.png ...   (Cityscapes labelIds)
  {root}/split.mat              (from read_mapping.zip: trainIds, valIds, testIds)
set dataset.root=<folder> (or paths.data_dir), or use dataset=generated for the offline set"""


def gta5_name(i: int) -> str:
    return f"{int(i):05d}"


def read_split(root: Path, split: str) -> List[str]:
    """The ids of ``split`` from ``split.mat`` as 5-digit names."""
    import scipy.io

    root = Path(root)
    if split not in SPLITS:
        raise SegmentationDataError(f"unknown GTA5 split {split!r}; choose train, val or test")
    if not (root / "images").is_dir():
        raise SegmentationDataError(f"GTA5 not found at {root}: no images/ folder.\n"
                                    + LAYOUT.format(root=root))
    mat = root / "split.mat"
    if not mat.is_file():
        raise SegmentationDataError(f"GTA5 split file {mat} is missing.\n"
                                    + LAYOUT.format(root=root))
    try:
        data = scipy.io.loadmat(str(mat))
    except Exception as err:  # scipy raises several types on a bad file
        raise SegmentationDataError(f"cannot read {mat}: {err}") from None
    key = SPLITS[split]
    if key not in data:
        raise SegmentationDataError(f"{mat} has no {key!r} array (keys: "
                                    f"{sorted(k for k in data if not k.startswith('__'))})")
    return [gta5_name(i) for i in np.asarray(data[key]).reshape(-1)]


def gta5_pairs(root: Path, names: List[str]) -> List[Pair]:
    root = Path(root)
    return [Pair(n, root / "images" / f"{n}.png", root / "labels" / f"{n}.png") for n in names]


def missing_pairs(pairs: List[Pair]) -> List[str]:
    """Names whose image or label file is absent (some distributed copies lack 25 ids)."""
    return [p.name for p in pairs if not (p.image.is_file() and p.label.is_file())]


def gta5_split(root: Path, split: str, names: Optional[List[str]] = None) -> List[Pair]:
    """Pairs of ``split`` (or of ``names``, e.g. a list file) under ``root``."""
    return gta5_pairs(root, names if names is not None else read_split(root, split))
