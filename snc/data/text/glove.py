"""GloVe word vectors: parse ``glove.6B.100d.txt`` once, cache it as ``.npy``, memory-map it.

Source: ``glove.6B.zip`` (nlp.stanford.edu/projects/glove/, 822 MB, MD5
``056ea991adb4740ac6bf1b6d9b50408b``); the member ``glove.6B.100d.txt`` (MD5
``dd7f3ad906768166883176d69cc028de``, as recorded by several loaders) is UTF-8 text without a
header, one token and 100 space-separated floats a line, 400,000 lower-cased tokens.

Cache: beside the text file, ``<stem>.npy`` (float32 ``(V, dim)``, opened with
``mmap_mode="r"``), ``<stem>.words.txt`` (one token a line) and ``<stem>.meta.json`` (the text
file's size and mtime and the width). A changed text file is parsed again. Where the folder is
read-only the vectors are used without a cache.

Lookup follows the tutorial (torchtext ``Vectors``): **case-sensitive**, so capitalised tokens
miss the lower-cased GloVe vocabulary; a missing token gets N(0, 1) (``unk_init=normal_``);
the ``<unk>`` and ``<pad>`` rows are zero.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from snc.atomic import atomic_open
from snc.data.download import ensure_archive, md5_file
from snc.errors import ConfigError

log = logging.getLogger("snc")

GLOVE_URL = "https://nlp.stanford.edu/data/glove.6B.zip"
GLOVE_ZIP_MD5 = "056ea991adb4740ac6bf1b6d9b50408b"
GLOVE_TXT_MD5 = {"glove.6B.100d.txt": "dd7f3ad906768166883176d69cc028de"}
HOW_TO_GET = (
    "Download glove.6B.zip from https://nlp.stanford.edu/projects/glove/ (MD5 "
    f"{GLOVE_ZIP_MD5}) and extract glove.6B.100d.txt to dataset.glove_path (or call "
    "snc.data.text.glove.prepare_glove(<folder>))")
_CHUNK = 20_000


@dataclass
class GloVe:
    """Loaded vectors: ``words[i]`` has the row ``vectors[i]`` (float32, possibly memory-mapped)."""

    words: List[str]
    vectors: np.ndarray
    index: Dict[str, int]
    from_cache: bool
    seconds: float

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def prepare_glove(folder: Path, name: str = "glove.6B.100d.txt", *, url: str = GLOVE_URL,
                  md5: Optional[str] = GLOVE_ZIP_MD5, download: bool = True) -> Path:
    """Extracts ``name`` from ``folder/glove.6B.zip`` (downloaded, MD5-checked) into ``folder``."""
    folder = Path(folder)
    target = folder / name
    if target.exists():
        return target
    archive = ensure_archive(folder / "glove.6B.zip", url, md5, download=download,
                             missing=f"{target} is missing. {HOW_TO_GET}")
    with zipfile.ZipFile(archive) as zf:  # extraction checks the member's CRC
        zf.extract(name, folder)
    return target


def _cache_paths(path: Path) -> Tuple[Path, Path, Path]:
    stem = path.with_suffix("")
    return (stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".words.txt"),
            stem.with_name(stem.name + ".meta.json"))


def _source_meta(path: Path, dim: int) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "dim": dim, "format": 1}


def parse_glove_text(path: Path, dim: int) -> Tuple[List[str], np.ndarray]:
    """Parses a GloVe text file (no header; token then ``dim`` floats per line).

    Raises:
        ConfigError: a line with another number of values (wrong file width), a value that is
            not a number, non-UTF-8 bytes, or an empty file.
    """
    words: List[str] = []
    blocks: List[np.ndarray] = []
    with open(path, "rb") as f:
        number = 0
        while True:
            lines = f.readlines(_CHUNK * (dim * 10))
            if not lines:
                break
            rows = []
            for raw in lines:
                number += 1
                try:
                    line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
                except UnicodeDecodeError:
                    raise ConfigError(f"{path}:{number} is not valid UTF-8: the file is "
                                      f"damaged. {HOW_TO_GET}") from None
                if not line.strip():
                    continue
                parts = line.rstrip(" ").split(" ")
                if len(parts) - 1 != dim:
                    raise ConfigError(
                        f"{path}:{number} has {len(parts) - 1} values after the token, expected "
                        f"dataset.glove_dim={dim}: use glove.6B.{dim}d.txt or set glove_dim "
                        "to the file's width (the model's embedding has glove_dim columns)")
                words.append(parts[0])
                rows.append(" ".join(parts[1:]))
            try:
                block = np.array(" ".join(rows).split(" "), dtype=np.float32)
            except ValueError:
                raise ConfigError(f"{path}: a value near line {number} is not a number; the "
                                  f"file is damaged. {HOW_TO_GET}") from None
            blocks.append(block.reshape(len(rows), dim))
    if not words:
        raise ConfigError(f"{path} has no vectors. {HOW_TO_GET}")
    return words, np.concatenate(blocks)


def load_glove(path: Path, dim: int, *, md5: Optional[str] = "auto", cache: bool = True
               ) -> GloVe:
    """Loads GloVe vectors, from the ``.npy`` cache when it is current (module docstring).

    Args:
        path: the ``.txt`` file.
        dim: the expected width (100 for glove.6B.100d.txt).
        md5: checked when the text is parsed: ``auto`` = the published MD5 of a known file name
            (none for other names), a hex string, or None (no check).
        cache: write/read the ``.npy`` cache.

    Raises:
        ConfigError: a missing file (where to get it), an MD5 mismatch, a wrong width.
    """
    path = Path(path)
    start = time.perf_counter()
    if not path.exists():
        raise ConfigError(f"GloVe file {path} is missing. {HOW_TO_GET}")
    npy, words_txt, meta_json = _cache_paths(path)
    meta = _source_meta(path, dim)
    if cache and npy.exists() and words_txt.exists() and meta_json.exists():
        try:
            cached = json.loads(meta_json.read_text())
        except ValueError:
            cached = None
        if cached == meta:
            vectors = np.load(npy, mmap_mode="r")
            words = words_txt.read_text(encoding="utf-8").split("\n")
            if vectors.shape == (len(words), dim):
                return GloVe(words, vectors, {w: i for i, w in enumerate(words)}, True,
                             time.perf_counter() - start)
            log.warning("GloVe cache %s does not match its word list; parsing again", npy)
    expected = GLOVE_TXT_MD5.get(path.name) if md5 == "auto" else md5
    if expected is not None:
        actual = md5_file(path)
        if actual != expected:
            raise ConfigError(f"{path} has MD5 {actual}, expected {expected}: truncated or "
                              "corrupt; extract it from glove.6B.zip again (or set "
                              "dataset.glove_md5=null for a copy you trust)")
    words, vectors = parse_glove_text(path, dim)
    if any("\n" in w for w in words):  # impossible after splitlines; guards the cache format
        raise ConfigError(f"{path}: a token contains a newline")
    if cache:
        try:  # atomic, meta last: a reader (another rank) sees a complete cache or none
            with atomic_open(npy, "wb", fsync=False) as f:
                np.save(f, vectors)
            with atomic_open(words_txt, "wb", fsync=False) as f:
                f.write("\n".join(words).encode("utf-8"))
            with atomic_open(meta_json, "wb", fsync=False) as f:
                f.write(json.dumps(meta).encode())
        except OSError as err:
            log.warning("could not write the GloVe cache beside %s (%s); using it uncached",
                        path, err)
    return GloVe(words, vectors, {w: i for i, w in enumerate(words)}, False,
                 time.perf_counter() - start)


def embedding_matrix(itos: Sequence[str], glove: GloVe, generator: torch.Generator,
                     specials: Sequence[int] = (0, 1)) -> Tuple[torch.Tensor, int]:
    """The initial embedding: GloVe rows for the tokens found (case-sensitive), N(0, 1) for the
    others, zero rows for ``specials`` (``<unk>``, ``<pad>``).

    Returns:
        ``(weights (len(itos), dim) float32, number of tokens found in GloVe)``.
    """
    weights = torch.randn(len(itos), glove.dim, generator=generator)
    rows = [(i, glove.index[t]) for i, t in enumerate(itos) if t in glove.index]
    if rows:
        ours, theirs = zip(*rows, strict=True)
        weights[list(ours)] = torch.from_numpy(np.asarray(glove.vectors[list(theirs)]))
    for i in specials:
        weights[i] = 0.0
    hits = sum(1 for i, _ in rows if i not in specials)
    return weights, hits
