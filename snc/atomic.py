"""Atomic file writes: write a temporary file beside the target, then rename it over the target,
so readers (and a resumed run) see the old file or the new one, never a torn one.

The temporary file has a unique name (``<name>.<random>.tmp`` in the target's folder), so two
writers never share one: each write is whole, and the last rename wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, Optional, Union


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "wb", fsync: bool = True,
                verify: Optional[Callable[[Path], None]] = None) -> Iterator[IO]:
    """Opens a unique temporary file beside ``path`` for writing; on a clean exit flushes it
    (and, with ``fsync``, forces it to disk), calls ``verify(temporary path)`` if given (it
    raises to refuse the file) and renames it over ``path``. On an exception the temporary file
    is removed and ``path`` is untouched."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_marker(path: Union[str, Path]) -> Dict[str, Any]:
    """A small JSON marker file (a verification cache, a download's state), or ``{}`` when it
    is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_marker(path: Union[str, Path], doc: Dict[str, Any]) -> None:
    """Writes a marker atomically (no fsync: it is re-derivable from the files it describes)."""
    with atomic_open(path, "w", fsync=False) as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True))
