"""Finding a published test set on disk, and downloading, verifying and unpacking it."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import List, Optional

from snc.atomic import read_marker, write_marker
from snc.corruptions.sets import SEVERITIES, imagenet_c_dir
from snc.data.download import (
    _safe_extract,
    checksum_matches,
    download_cifar_c,
    download_resumable,
)
from snc.errors import ConfigError
from snc.shifts.entries import DOWNLOAD_COMMAND, VERIFIED_MARK, Shift

log = logging.getLogger("snc")


# ----------------------------------------------------------------------------- finding a set


def severity_dir(shift: Shift, root: Path, corruption: str, severity: int) -> Path:
    """The folder of one (corruption, severity) of a folder grid (ImageNet-C, ImageNet-C-bar).

    Raises:
        FileNotFoundError: naming the folders tried.
    """
    if shift.name == "imagenetc":
        return imagenet_c_dir(root, corruption, severity)
    names = [str(severity)]
    if shift.severities:
        names.append(f"{shift.severities[corruption][severity - 1]:.2f}")
    for n in names:
        if (Path(root) / corruption / n).is_dir():
            return Path(root) / corruption / n
    raise FileNotFoundError(" or ".join(str(Path(root) / corruption / n) for n in names))


def _missing_parts(shift: Shift, folder: Path) -> List[str]:
    """What of the layout is absent in ``folder`` (empty: complete enough to open)."""
    if not folder.is_dir():
        return [str(folder)]
    if shift.classes == "array":
        names = (shift.files if shift.kind == "single" else
                 [f"{c}.npy" for c in shift.corruptions] + ["labels.npy"])
        return [n for n in names if not (folder / n).is_file()]
    if shift.kind == "corruptions":
        missing = []
        for c in shift.corruptions:
            for s in SEVERITIES:
                try:
                    severity_dir(shift, folder, c, s)
                except FileNotFoundError:
                    missing.append(f"{c}/{s}")
        return missing
    return [] if any(p.is_dir() for p in folder.iterdir()) else ["class folders"]


def _candidates(shift: Shift, data_dir: Path) -> List[Path]:
    return [Path(data_dir) / n for n in (shift.dirname,) + shift.aliases]


def _how_to_get(shift: Shift, data_dir: Path) -> str:
    if not shift.published:
        return (f"{shift.title} is not published for download ({shift.notes}); generate it in "
                "this layout (corrupted=generate)")
    where = ", ".join(shift.urls)
    command = DOWNLOAD_COMMAND.format(name=shift.name, data_dir=data_dir)
    if shift.manual:
        return (f"download {', '.join(shift.files)} by hand from {where} into {data_dir} "
                f"({shift.notes}), then run `{command}` to verify and unpack it")
    return f"download it from {where}, or run `{command}` (or evaluate with download=true)"


def locate(shift: Shift, data_dir: Path, root: Optional[Path] = None) -> Path:
    """The folder holding ``shift``: ``root`` when given, else the first of its folder names
    under ``data_dir`` that has the whole layout.

    Raises:
        FileNotFoundError: naming the folders tried, what is missing, the expected layout, the
            URL and the download command.
    """
    tried = [Path(root)] if root is not None else _candidates(shift, data_dir)
    gaps = []
    for folder in tried:
        missing = _missing_parts(shift, folder)
        if not missing:
            return folder
        if folder.is_dir():
            gaps.append(f"{folder} lacks {', '.join(missing[:6])}"
                        f"{' ...' if len(missing) > 6 else ''}")
    found = "; ".join(gaps) if gaps else f"none of {', '.join(map(str, tried))} exists"
    raise FileNotFoundError(
        f"{shift.title} ({shift.name}) not found: {found}. Expected layout: {shift.layout}. "
        f"{_how_to_get(shift, Path(data_dir))}.")


# ----------------------------------------------------------------------------- downloading


def _is_archive(file: str) -> bool:
    return file.endswith((".tar", ".tar.gz", ".tgz", ".zip"))


def _unpack(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if archive.suffix != ".zip":
        _safe_extract(archive, into)
        return
    with zipfile.ZipFile(archive) as zf:
        top = into.resolve()
        for member in zf.namelist():
            if not (into / member).resolve().is_relative_to(top):
                raise ValueError(f"unsafe path in {archive}: {member}")
        zf.extractall(into)


def download(shift: Shift, data_dir: Path, progress: bool = True, *,
             keep_archive: bool = False) -> Path:
    """Downloads ``shift`` into ``data_dir`` (resumable, with a progress bar), checks every file
    against its published checksum, unpacks the archives and returns the set's folder.

    A set that is already complete is returned at once; an interrupted run continues (finished
    archives are remembered in ``<extract folder>/.snc-download-<name>.json``). A set without a
    published checksum is kept with a warning that it was not verified.

    Raises:
        ConfigError: the set is not published (generate it), must be fetched by hand and is not
            there, or a file does not match its checksum (the bad file is removed).
    """
    data_dir = Path(data_dir)
    if shift.name in ("cifar10c", "cifar100c"):  # the archive and every unpacked file checked
        out = download_cifar_c(shift.domain, data_dir, url=shift.urls[0],
                               md5=shift.checksums[shift.files[0]].split(":", 1)[1],
                               file_md5={f: m.split(":", 1)[1]
                                         for f, m in shift.file_checksums.items()},
                               keep_archive=keep_archive, progress=progress)
        _mark_verified(shift, out, verified=True)
        return out
    if not shift.published:
        raise ConfigError(_how_to_get(shift, data_dir))
    try:
        found = locate(shift, data_dir)
    except FileNotFoundError:
        found = None
    extract_into = data_dir / shift.extract_to if shift.extract_to else data_dir
    state_path = extract_into / f".snc-download-{shift.name}.json"
    if found is not None and ((found / VERIFIED_MARK).exists() or not state_path.exists()):
        return found  # downloaded and checked before, or put there by hand (opened unverified)
    state = read_marker(state_path)
    done = state.setdefault("done", {})
    absent = [data_dir / f for f in shift.files if f not in done and not (data_dir / f).exists()]
    if shift.manual and absent:
        raise ConfigError(f"{absent[0]} not found: {_how_to_get(shift, data_dir)}.")
    extract_into.mkdir(parents=True, exist_ok=True)
    write_marker(state_path, state)  # from here an incomplete folder is known to be ours
    for url, file in zip(shift.urls, shift.files, strict=True):
        if file in done:
            continue
        archive = _is_archive(file)
        dest = data_dir / file if archive else data_dir / shift.dirname / file
        dest.parent.mkdir(parents=True, exist_ok=True)
        checksum = shift.checksums.get(file)
        try:
            if shift.manual:
                ok, actual = checksum_matches(dest, checksum)
                if not ok:
                    raise ValueError(f"{dest} has checksum {actual}, expected {checksum}: "
                                     "truncated or another file; fetch it again")
            else:
                download_resumable(url, dest, checksum, progress=progress)
        except ValueError as err:
            raise ConfigError(f"{err}. Delete {dest} if it remains and run "
                              f"`{DOWNLOAD_COMMAND.format(name=shift.name, data_dir=data_dir)}`"
                              ) from None
        if checksum is None:
            log.warning("%s: no checksum is published for %s; it was not verified",
                        shift.name, file)
        if archive:
            log.info("unpacking %s into %s", dest, extract_into)
            _unpack(dest, extract_into)
            if not keep_archive:
                dest.unlink()
        done[file] = checksum
        write_marker(state_path, state)
    try:
        out = locate(shift, data_dir)
    except FileNotFoundError as err:
        tops = sorted(p.name for p in extract_into.iterdir() if not p.name.startswith("."))
        raise ConfigError(f"unpacked {', '.join(shift.files)} into {extract_into} (now holding "
                          f"{tops[:12]}), but: {err}") from None
    _mark_verified(shift, out, verified=all(done.get(f) for f in shift.files))
    return out


def _mark_verified(shift: Shift, folder: Path, verified: bool) -> None:
    try:
        write_marker(folder / VERIFIED_MARK, {"shift": shift.name, "verified": verified,
                                             "checksums": {f: shift.checksums.get(f)
                                                           for f in shift.files}})
    except OSError:  # a read-only folder: the set is used, just not marked
        pass


