"""File digests for download and generation checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest (``sha256``, ``md5``, ...) of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over the shapes, dtypes and bytes of ``arrays`` (the content a run trains or
    evaluates on)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def folder_digest(root: Path) -> str:
    """SHA-256 over the relative paths and sizes of every file below ``root`` (a class-folder
    set: renaming, adding, removing or resizing an image changes it)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            h.update(f"{rel}/{name}:{os.path.getsize(os.path.join(dirpath, name))}\n".encode())
    return h.hexdigest()
