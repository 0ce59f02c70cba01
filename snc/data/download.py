"""Resumable, checksum-verified downloads of the published CIFAR-10-C / CIFAR-100-C archives.

Archives and checksums (Zenodo records 2535967 and 3555552; MD5 values as recorded by several
independent dataset loaders, see the project's corruption reference): the archive MD5 is
checked after download and every unpacked ``.npy`` against its own MD5, so a truncated or
corrupt file is detected and named.
"""

from __future__ import annotations

import logging
import tarfile
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Tuple

from snc.atomic import new_folders
from snc.data.checksums import file_digest

log = logging.getLogger("snc")

CIFAR_C = {
    "cifar10": ("https://zenodo.org/record/2535967/files/CIFAR-10-C.tar",
                "56bf5dcef84df0e2308c6dcbcbbd8499", "CIFAR-10-C"),
    "cifar100": ("https://zenodo.org/record/3555552/files/CIFAR-100-C.tar",
                 "11f0ed0f1191edbf9fa23466ae6021d3", "CIFAR-100-C"),
}
_NAMES = ("brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost",
          "gaussian_blur", "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression",
          "labels", "motion_blur", "pixelate", "saturate", "shot_noise", "snow", "spatter",
          "speckle_noise", "zoom_blur")
_C10 = ("0a81ef75e0b523c3383219c330a85d48 3c8262171c51307f916c30a3308235a8 "
        "7d1322666342a0702b1957e92f6254bc 9421657c6cd452429cf6ce96cc412b5f "
        "7b397314b5670f825465fbcd1f6e9ccd 31f6ab3bce1d9934abfb0cc13656f141 "
        "c33370155bc9b055fb4a89113d3c559d ecaf8b9a2399ffeda7680934c33405fd "
        "7361fb4019269e02dbf6925f083e8629 2090e01c83519ec51427e65116af6b1a "
        "2b9cc4c864e0193bb64db8d7728f8187 c439b113295ed5254878798ffe28fd54 "
        "fffa5f852ff7ad299cfe8a7643f090f4 0f14f7e2db14288304e1de10df16832f "
        "1cfae0964219c5102abbb883e538cc56 3a7239bb118894f013d9bf1984be7f11 "
        "bb238de8555123da9c282dea23bd6e55 8a5a3903a7f8f65b59501a6093b4311e "
        "ef00b87611792b00df09c0b0237a1e30 6ea8e63f1c5cdee1517533840641641b").split()
_C100 = ("f22d7195aecd6abb541e27fca230c171 322bb385f1d05154ee197ca16535f71e "
         "d923e3d9c585a27f0956e2f2ad832564 a0792bd6581f6810878be71acedfc65a "
         "4efc7ebd5e82b028bdbe13048e3ea564 3a39c6823bdfaa0bf8b12fe7004b8117 "
         "5204ba0d557839772ef5a4196a052c3e ecc4d366eac432bdf25c024086f5e97d "
         "0bf384f38e5ccbf8dd479d9059b913e1 3b3c210ddfa0b5cb918ff4537a429fef "
         "c851b7f1324e1d2ffddeb76920576d11 bb4026e9ce52996b95f439544568cdb2 "
         "732a7e2e54152ff97c742d4c388c5516 96c00c60f144539e14cffb02ddbd0640 "
         "c0697e9fdd646916a61e9c312c77bf6b b0a1fa6e1e465a747c1b204b1914048a "
         "0237be164583af146b7b144e73b43465 12ccf41d62564d36e1f6a6ada5022728 "
         "e3f215b1a0f9fd9fd6f0d1cf94a7ce99 0204613400c034a81c4830d5df81cb82").split()
CIFAR_C_FILE_MD5 = {
    "cifar10": {f"{n}.npy": m for n, m in zip(_NAMES, _C10, strict=True)},
    "cifar100": {f"{n}.npy": m for n, m in zip(_NAMES, _C100, strict=True)},
}


def md5_file(path: Path) -> str:
    return file_digest(path, "md5")


def parse_checksum(checksum: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """``(algorithm, hex)`` of ``"sha256:<hex>"``, ``"md5:<hex>"`` or a bare MD5 hex;
    ``(None, None)`` for None (nothing published to check against)."""
    if checksum is None:
        return None, None
    algorithm, sep, value = checksum.partition(":")
    return (algorithm.lower(), value.lower()) if sep else ("md5", checksum.lower())


def checksum_matches(path: Path, checksum: Optional[str]) -> Tuple[bool, str]:
    """``(matches, actual digest)`` of ``path`` against ``checksum`` (None: always matches)."""
    algorithm, want = parse_checksum(checksum)
    if algorithm is None:
        return True, ""
    actual = file_digest(path, algorithm)
    return actual == want, actual


def download_resumable(url: str, dest: Path, md5: Optional[str], *, progress: bool = True,
                       timeout: float = 60.0) -> Path:
    """Downloads ``url`` to ``dest``, continuing a previous ``dest.part`` when the server honours
    HTTP Range requests, and checks the checksum.

    ``md5``: the published MD5 (bare hex), or ``"sha256:<hex>"`` / ``"md5:<hex>"``; None when no
    checksum is published (the file is then kept unverified).

    Raises:
        ValueError: the finished file does not match the checksum (the bad file is removed).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    if dest.exists() and checksum_matches(dest, md5)[0]:
        return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = offset > 0 and response.status == 206
        if offset and not resumed:
            log.info("%s does not support resuming; starting %s again", url, dest.name)
            offset = 0
        total = response.headers.get("Content-Length")
        total = int(total) + offset if total is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
                disable=not progress) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
    ok, actual = checksum_matches(part, md5)
    if not ok:
        part.unlink()
        algorithm, want = parse_checksum(md5)
        raise ValueError(f"{dest.name} from {url} has {algorithm.upper()} {actual}, expected "
                         f"{want}: the download is truncated or corrupt and was removed; run the "
                         "command again")
    part.replace(dest)
    return dest


def check_archive(path: Path, md5: Optional[str]) -> None:
    """Raises ConfigError when ``path`` does not match its published MD5 (None: no check)."""
    from snc.errors import ConfigError

    if md5 is None:
        return
    actual = md5_file(path)
    if actual != md5:
        raise ConfigError(f"{path} has MD5 {actual}, expected {md5}: the archive is truncated "
                          "or corrupt; delete it and download it again")


def ensure_archive(archive: Path, url: str, md5: Optional[str], *, download: bool,
                   missing: str) -> Path:
    """``archive``, downloaded (resumable) when it is absent and ``download`` is on, checked
    against ``md5``.

    Raises:
        ConfigError: absent with ``download`` off (``missing`` says where to get it), a failed
            download, or an MD5 mismatch.
    """
    from snc.errors import ConfigError

    archive = Path(archive)
    if not archive.exists():
        if not download:
            raise ConfigError(missing)
        try:
            with new_folders(archive.parent):
                download_resumable(url, archive, md5)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    check_archive(archive, md5)
    return archive


def _safe_extract(archive: Path, root: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
            return
        for member in tar.getmembers():  # older Pythons: refuse paths outside root and links
            target = (root / member.name).resolve()
            if not str(target).startswith(str(root.resolve())) or member.issym() or member.islnk():
                raise ValueError(f"unsafe path in {archive}: {member.name}")
        tar.extractall(root)


def verify_files(folder: Path, file_md5: Dict[str, str]) -> None:
    """Checks every listed file of an unpacked set; names each missing or corrupt one."""
    bad = []
    for name, md5 in sorted(file_md5.items()):
        path = Path(folder) / name
        if not path.exists():
            bad.append(f"{name} (missing)")
        elif md5_file(path) != md5:
            bad.append(f"{name} (MD5 mismatch: truncated or corrupt)")
    if bad:
        raise ValueError(f"{folder}: " + "; ".join(bad) + ". Delete these files and run the "
                         "download again.")


def download_cifar_c(name: str, root: Path, *, url: Optional[str] = None,
                     md5: Optional[str] = None, file_md5: Optional[Dict[str, str]] = None,
                     keep_archive: bool = False, progress: bool = True) -> Path:
    """Downloads, verifies and unpacks CIFAR-10-C or CIFAR-100-C into ``root``.

    Args:
        name: ``cifar10`` or ``cifar100``.
        root: the data folder; the set lands in ``root/CIFAR-10-C`` (or ``CIFAR-100-C``).
        url, md5, file_md5: overrides of the published location and checksums (mirrors, tests).
        keep_archive: keep the ``.tar`` after unpacking.

    Returns:
        The unpacked folder.
    """
    if name not in CIFAR_C:
        raise ValueError(f"unknown CIFAR-C set {name!r}; choose cifar10 or cifar100")
    default_url, default_md5, folder = CIFAR_C[name]
    root = Path(root)
    out = root / folder
    checks = CIFAR_C_FILE_MD5[name] if file_md5 is None else file_md5
    try:
        verify_files(out, checks)
        return out  # already complete
    except ValueError:
        pass
    with new_folders(root):
        archive = download_resumable(url or default_url, root / f"{folder}.tar",
                                     md5 or default_md5, progress=progress)
    _safe_extract(archive, root)
    verify_files(out, checks)
    if not keep_archive:
        archive.unlink()
    return out
