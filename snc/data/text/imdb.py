"""IMDb movie reviews (Maas et al. 2011), the source domain of the paper's Table 4.

Archive: ``aclImdb_v1.tar.gz`` (ai.stanford.edu/~amaas/data/sentiment/), MD5
``7c2ac02c03563afcf9b574c7e56c153a`` (the value torchtext and other loaders check). Layout::

    aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt     12,500 files each, one review per file

Reviews are read as UTF-8 and kept as they are (``<br />`` tags included, as the tutorial's
torchtext loader did). The 25,000 training reviews are split 70/30 into 17,500 train and 7,500
validation with a recorded seed (the tutorial's split cannot be replayed without torchtext's
shuffler; ours is a NumPy permutation of the sorted file list).

Bad input: a file that is not valid UTF-8 stops loading with its name (``bad_files=error``,
default: in the published archive every file decodes, so such a file means a damaged copy) or
is skipped and counted (``bad_files=skip``); a review that is empty (only whitespace) is always
skipped and counted. Counts are returned and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from snc.data.download import _safe_extract, ensure_archive
from snc.data.download import check_archive as _check_md5
from snc.errors import ConfigError

log = logging.getLogger("snc")

IMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
BAD_FILES = ("error", "skip")

HOW_TO_GET = (
    "Download aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/ (MD5 "
    f"{IMDB_MD5}) into the data folder and unpack it (or call "
    "snc.data.text.imdb.prepare_imdb(<data_dir>)); the expected layout is "
    "aclImdb/{train,test}/{pos,neg}/*.txt")


@dataclass
class TextSplit:
    """Texts and binary labels of one split, plus what was skipped while reading it."""

    texts: List[str]
    labels: np.ndarray  # float32 (N,), 1 = positive
    skipped: Dict[str, int] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def check_archive(path: Path, md5: Optional[str] = IMDB_MD5) -> None:
    """Raises ConfigError when ``path`` does not match its published MD5 (truncated/corrupt)."""
    _check_md5(path, md5)


def prepare_imdb(data_dir: Path, *, url: str = IMDB_URL, md5: Optional[str] = IMDB_MD5,
                 download: bool = True) -> Path:
    """Makes ``data_dir/aclImdb`` from ``data_dir/aclImdb_v1.tar.gz`` (downloaded if missing
    and ``download``), checking the archive MD5 first. Returns the ``aclImdb`` folder."""
    data_dir = Path(data_dir)
    root = data_dir / "aclImdb"
    if (root / "train" / "pos").is_dir() and (root / "test" / "neg").is_dir():
        return root
    archive = ensure_archive(data_dir / IMDB_ARCHIVE, url, md5, download=download,
                             missing=f"IMDb not found under {data_dir}. {HOW_TO_GET}")
    _safe_extract(archive, data_dir)
    return root


def _rating(path: Path) -> Optional[int]:
    try:
        return int(path.stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return None


def read_imdb(root: Path, split: str, *, bad_files: str = "error") -> TextSplit:
    """Reads ``root/{split}/{pos,neg}/*.txt``.

    Args:
        root: the ``aclImdb`` folder.
        split: ``train`` or ``test``.
        bad_files: ``error`` (default) or ``skip`` for files that are not valid UTF-8.

    Raises:
        ConfigError: missing folders (with where to get the data), a non-UTF-8 file under
            ``bad_files=error``, or a split without any review.
    """
    if bad_files not in BAD_FILES:
        raise ConfigError(f"dataset.bad_files={bad_files!r}; choose error or skip")
    root = Path(root)
    texts: List[str] = []
    labels: List[float] = []
    skipped = {"empty": 0, "not_utf8": 0}
    bad_names: List[str] = []
    for label, sub in ((0.0, "neg"), (1.0, "pos")):
        folder = root / split / sub
        if not folder.is_dir():
            raise ConfigError(f"IMDb folder {folder} is missing. {HOW_TO_GET}")
        for path in sorted(folder.glob("*.txt")):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if bad_files == "error":
                    raise ConfigError(
                        f"{path} is not valid UTF-8 ({err.reason} at byte {err.start}); the "
                        "copy is damaged: unpack aclImdb_v1.tar.gz again, or set "
                        "dataset.bad_files=skip to skip and count such files") from None
                skipped["not_utf8"] += 1
                bad_names.append(path.name)
                continue
            if not text.strip():
                skipped["empty"] += 1
                continue
            texts.append(text)
            labels.append(label)
    if not texts:
        raise ConfigError(f"no review found under {root / split}/{{pos,neg}}. {HOW_TO_GET}")
    if any(skipped.values()):
        log.warning("IMDb %s: skipped %d empty and %d non-UTF-8 files%s", split,
                    skipped["empty"], skipped["not_utf8"],
                    f" (e.g. {', '.join(bad_names[:5])})" if bad_names else "")
    return TextSplit(texts, np.asarray(labels, dtype=np.float32), skipped, str(root / split))


def split_train_valid(n: int, valid_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, valid)`` of a seeded random split; ``round(n * (1 - f))`` train.

    25,000 reviews with ``valid_fraction=0.3`` give 17,500 / 7,500 (the tutorial's sizes).
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"dataset.valid_fraction={valid_fraction}; use a value in (0, 1), "
                          "e.g. 0.3 (17,500 / 7,500)")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(n * (1.0 - valid_fraction)))
    if n_train < 1 or n_train >= n:
        raise ConfigError(f"a {valid_fraction} validation split of {n} reviews leaves an empty "
                          "split; change dataset.valid_fraction")
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
