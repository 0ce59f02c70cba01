"""Atomic file writes: write a temporary file beside the target, then rename it over the target,
so readers (and a resumed run) see the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator, Union


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """Opens ``<path>.tmp`` for writing; on a clean exit flushes it (and, with ``fsync``, forces
    it to disk) and renames it over ``path``. On an exception the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
