"""Atomic file writes: write a temporary file beside the target, then rename it over the target,
so readers (and a resumed run) see the old file or the new one, never a torn one.

The temporary file has a unique name (``<name>.<random>.tmp`` in the target's folder), so two
writers never share one: each write is whole, and the last rename wins. The file ends with the
permissions an ordinary ``open()`` would have given it (``0o666`` less the umask), so colleagues
on a shared filesystem read results and checkpoints as they read ``config.yaml``.

A write that fails because the disk (or quota) is full raises :class:`DiskFull`, which names the
folder and its free space, instead of the library's own message (torch's is ``enforce fail at
inline_container.cc``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, Optional, Union

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """A write failed for lack of space: the message names the folder and its free space."""

    def __str__(self) -> str:
        return str(self.strerror)


def _umask() -> int:
    """The process umask. Read from ``/proc/self/status`` where Linux gives it: setting and
    restoring it (the portable way) would let a file made by another thread meanwhile get
    mode 0666."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_space(folder: Union[str, Path]) -> str:
    """``"1.24 GB free"`` on the filesystem of ``folder`` (its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e9:.2f} GB free" if free >= 1e8 else f"{free / 1e6:.1f} MB free"


def is_disk_full(err: BaseException) -> bool:
    """The error, or one it was raised while handling, is ENOSPC/EDQUOT (torch.save wraps the
    OSError of its writer into ``RuntimeError: [enforce fail at inline_container.cc]``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL:
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_error(folder: Union[str, Path], name: Optional[str] = None) -> DiskFull:
    """The error of a write into ``folder`` (of the file ``name``) that ran out of space."""
    what = f"to write {name} in {folder}" if name else f"in {folder}"
    return DiskFull(errno.ENOSPC, f"no space left {what} ({free_space(folder)}): free space "
                    "there, or write elsewhere (paths.output_dir=..., paths.data_dir=...)")


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "wb", fsync: bool = True,
                verify: Optional[Callable[[Path], None]] = None) -> Iterator[IO]:
    """Opens a unique temporary file beside ``path`` for writing; on a clean exit flushes it
    (and, with ``fsync``, forces it to disk), calls ``verify(temporary path)`` if given (it
    raises to refuse the file) and renames it over ``path``. On an exception the temporary file
    is removed and ``path`` is untouched.

    Raises:
        DiskFull: the write failed for lack of space (the message names the folder).
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as err:
        if err.errno in _FULL:
            raise disk_full_error(path.parent, path.name) from None
        raise
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; open() would not
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        if is_disk_full(err):
            raise disk_full_error(path.parent, path.name) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def new_folders(path: Union[str, Path]) -> Iterator[Path]:
    """``mkdir -p path`` for a step that may fail (a download): on an exception the folders it
    created are removed again while empty, so a failed command leaves no empty folder behind."""
    path = Path(path)
    created = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (a partial download to resume) or gone
                break
        raise


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
