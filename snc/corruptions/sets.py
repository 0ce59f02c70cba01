"""Corrupted test sets in the published layouts: read them, or generate them for any images.

CIFAR-10-C / CIFAR-100-C layout (Hendrycks & Dietterich, ICLR 2019): a folder with one
``<corruption>.npy`` per corruption, uint8 ``(5 * N, 32, 32, 3)`` with severity 1 in rows
``0 .. N-1``, then severity 2, ... (test-set order inside each block), and ``labels.npy`` of
length ``5 * N`` (CIFAR-10-C-bar uses the same layout with its 10 corruptions). ImageNet-C
layout: ``<corruption>/<severity>/<class>/<file>.JPEG`` (JPEG quality 85), read with an
image-folder loader.

A generated set carries ``manifest.json`` with ``"generated": true``, the generator settings and
a SHA-256 per file, so it is never mistaken for (or reported as) the published set.

Devices: ``device="cpu"`` (the default) runs the exact per-image NumPy generator, so sets and
their hashes stay those of earlier versions; ``device="cuda"`` (or ``"auto"`` with a GPU) runs
the batched tensor corruptions of :mod:`snc.corruptions.batched`, whose random draws differ from
the NumPy ones (same distributions); such a set records ``"backend"`` and ``"random_blocks"``
in its manifest, so the two are never mixed in one folder. Its random draws are made per block
of images of the set (:class:`snc.corruptions.batched.RandomBlocks`), so it does not depend on
the batch size (recorded as ``"batch_size"``, informative only).
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from snc.atomic import atomic_open
from snc.corruptions import CORRUPTIONS, GENERATOR_VERSION, check_corruption, corrupt
from snc.data.checksums import array_digest, file_digest, folder_digest

log = logging.getLogger("snc")
MANIFEST = "manifest.json"
CHUNK = 500  # images per generation job; fixed so the draws do not depend on the worker count
SEVERITIES = (1, 2, 3, 4, 5)
IMAGENET_C_GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "spatter", "gaussian_blur", "saturate"),
}


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    return file_digest(path, "sha256")


def read_manifest(root: Path) -> Dict:
    """The manifest of a generated set, or ``{"generated": False}`` for a published one."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return {"generated": False}
    return json.loads(path.read_text())


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path) as f:
        np.save(f, array, allow_pickle=False)


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


# ----------------------------------------------------------------------------- CIFAR-C layout


def load_cifar_c(root: Path, corruption: str, *, verify: bool = False
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Reads one corruption of a CIFAR-C-style folder.

    Args:
        root: the folder holding ``<corruption>.npy`` and ``labels.npy``.
        corruption: a corruption name.
        verify: check the file against the manifest's SHA-256 (generated sets).

    Returns:
        ``(images, labels)``: uint8 ``(5 * N, H, W, 3)`` (memory-mapped) and int64 ``(5 * N,)``.

    Raises:
        FileNotFoundError: with the command that downloads or generates the set.
        ValueError: if a file is truncated or does not follow the layout.
    """
    root = Path(root)
    path = root / f"{corruption}.npy"
    labels_path = root / "labels.npy"
    for p in (path, labels_path):
        if not p.exists():
            raise FileNotFoundError(
                f"{p} not found. Download the published set with "
                f"`python scripts/download_cifar_c.py cifar10 --root {root.parent}` (or cifar100), "
                f"or generate one with `python scripts/make_corrupted.py --source cifar10 "
                f"--out {root}`"
            )
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except ValueError as err:  # numpy reports a short file as a failed reshape
        raise ValueError(
            f"{path} is truncated or corrupt ({err}); delete it and download or generate it again"
        ) from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 (5N, H, W, 3), got {images.dtype} "
                         f"{images.shape}")
    if len(images) % 5 or len(labels) != len(images):
        raise ValueError(
            f"{path}: {len(images)} images and {len(labels)} labels; the layout needs 5 equal "
            "severity blocks with one label per image (a truncated download?)"
        )
    if verify:
        manifest = read_manifest(root)
        expected = manifest.get("files", {}).get(path.name)
        if expected and sha256_file(path) != expected:
            raise ValueError(f"{path} does not match the SHA-256 in {root / MANIFEST}; "
                             "delete it and generate it again")
    return images, labels.astype(np.int64)


def severity_rows(n_total: int, severity: int) -> slice:
    """Rows of ``severity`` (1-5) in a CIFAR-C-style array of ``n_total`` rows."""
    n = n_total // 5
    return slice((severity - 1) * n, severity * n)


def _corrupt_job(args):
    images, name, severity, preset, seed, chunk = args
    chunk_seed = int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])
    return name, severity, chunk, corrupt(images, name, severity, preset=preset, seed=chunk_seed)


def _backend(device: str, batched: Optional[bool]):
    """``(torch.device or None, backend name or None)``: None for the exact NumPy path."""
    if device == "cpu" and not batched:
        return None, None
    from snc.corruptions.batched import resolve_device

    dev = resolve_device(device)
    if batched is False or (batched is None and dev.type == "cpu"):
        return None, None
    return dev, f"batched-{dev.type}"


def _random_blocks() -> int:
    from snc.corruptions.batched import BLOCK

    return BLOCK


def _batched_seed(seed: int, name: str, severity: int) -> int:
    return int(np.random.SeedSequence(
        [int(seed), zlib.crc32(name.encode()), int(severity), 0]).generate_state(1)[0])


def generate_cifar_style(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    preset: str = "cifar",
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    source: str = "",
    source_digest: Optional[str] = None,
    device: str = "cpu",
    batched: Optional[bool] = None,
    batch_size: int = CHUNK,
) -> Dict:
    """Writes a CIFAR-C-style corrupted copy of ``images`` into ``out_dir``.

    Resumable: a corruption file already listed in the manifest with a matching checksum is
    skipped. Files are written atomically. The result does not depend on ``workers``.

    Args:
        images: uint8 ``(N, H, W, 3)`` clean test images.
        labels: ``(N,)`` labels.
        out_dir: destination folder.
        corruptions: names to generate (default: the 15 benchmark corruptions; -C-bar names,
            e.g. ``CBAR_CORRUPTIONS["cifar"]``, give a CIFAR-10-C-bar folder).
        preset: corruption parameter table (``cifar``, ``tinyimagenet``, ``imagenet``; -C-bar
            names take ``cifar`` or ``imagenet``).
        seed: generation seed.
        workers: processes.
        progress: show a tqdm bar.
        source: free text naming the clean images (goes into the manifest).
        source_digest: SHA-256 of the clean images (default: computed); recorded with the
            generator version, so a set made from other images or by another generator version
            is never mistaken for this one.
        device: ``cpu`` (default: the exact per-image generator), ``cuda`` or ``auto`` (cuda
            when available, else cpu): the batched tensor corruptions on that device, one
            process, ``batch_size`` images at a time (halved on CUDA out-of-memory, logged).
        batched: force the batched path (``True``, also on the CPU) or the exact one
            (``False``); default: batched on a GPU only.
        batch_size: images per batch on the batched path (recorded; the result does not depend
            on it, so a set may be resumed with another one).

    Returns:
        The manifest written to ``out_dir/manifest.json``.
    """
    from tqdm.auto import tqdm

    images = np.ascontiguousarray(images, dtype=np.uint8)
    for name in corruptions:
        check_corruption(name, preset)  # before any file is written
    dev, backend = _backend(device, batched)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    settings = {"generated": True, "generator": "snc.corruptions", "preset": preset,
                "seed": int(seed), "num_images": int(len(images)), "source": source,
                "image_shape": list(images.shape[1:]),
                "generator_version": GENERATOR_VERSION,
                "source_sha256": source_digest or array_digest(images, labels)}
    if backend:
        settings.update(backend=backend, random_blocks=_random_blocks(),
                        batch_size=int(batch_size))
    keys = set(settings) | {"backend", "random_blocks"}  # an exact set has neither
    if manifest.get("generated") and any(manifest.get(k) != settings.get(k) for k in keys
                                         if k not in ("source", "batch_size")):
        raise ValueError(f"{out_dir} holds a set generated with other settings "
                         f"({ {k: manifest.get(k) for k in settings} }); use another --out")
    files = dict(manifest.get("files", {}))
    todo = [c for c in corruptions
            if not ((out_dir / f"{c}.npy").exists() and files.get(f"{c}.npy")
                    and sha256_file(out_dir / f"{c}.npy") == files[f"{c}.npy"])]
    n = len(images)
    if backend:
        return _generate_cifar_batched(images, labels, out_dir, todo, settings, files, dev,
                                       progress)
    chunks = [(i, images[i:i + CHUNK]) for i in range(0, n, CHUNK)]
    jobs = [(chunk, name, s, preset, seed, i // CHUNK)
            for name in todo for s in SEVERITIES for i, chunk in chunks]
    results: Dict[str, np.ndarray] = {name: np.empty((5 * n,) + images.shape[1:], np.uint8)
                                      for name in todo}
    remaining = {name: 5 * len(chunks) for name in todo}
    bar = tqdm(total=len(jobs), desc="corrupting", disable=not progress, unit="job")

    def store(result):
        name, severity, chunk, out = result
        start = (severity - 1) * n + chunk * CHUNK
        results[name][start:start + len(out)] = out
        remaining[name] -= 1
        bar.update(1)
        if remaining[name] == 0:  # a corruption is complete: write it and record it at once
            path = out_dir / f"{name}.npy"
            _atomic_save_npy(path, results.pop(name))
            files[path.name] = sha256_file(path)
            _write_manifest(out_dir, settings, files)
            if not progress:  # no bar: a line per finished corruption
                log.info("corrupted %s (%d/%d)", name, len(todo) - len(results), len(todo))

    if workers > 1 and jobs:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_corrupt_job, jobs, chunksize=1):
                store(result)
    else:
        for job in jobs:
            store(_corrupt_job(job))
    bar.close()
    return _finish_cifar(out_dir, labels, settings, files)


def _finish_cifar(out_dir: Path, labels, settings: Dict, files: Dict) -> Dict:
    labels_path = out_dir / "labels.npy"
    _atomic_save_npy(labels_path, np.tile(np.asarray(labels).astype(np.int64), 5))
    files[labels_path.name] = sha256_file(labels_path)
    return _write_manifest(out_dir, settings, files)


def _generate_cifar_batched(images, labels, out_dir, todo, settings, files, dev, progress):
    """The batched path of :func:`generate_cifar_style`: corruption after corruption, each
    severity over all images on ``dev``; a line per finished corruption with its rate."""
    from tqdm.auto import tqdm

    from snc.corruptions.batched import corrupt_in_batches

    n = len(images)
    preset, seed, batch_size = settings["preset"], settings["seed"], settings["batch_size"]
    bar = tqdm(total=len(todo) * len(SEVERITIES), desc=f"corrupting on {dev}",
               disable=not progress, unit="severity")
    for k, name in enumerate(todo, 1):
        start = time.perf_counter()
        result = np.empty((5 * n,) + images.shape[1:], np.uint8)
        for s in SEVERITIES:
            result[(s - 1) * n:s * n] = corrupt_in_batches(
                images, name, s, seed=_batched_seed(seed, name, s), device=dev, preset=preset,
                batch_size=batch_size)
            bar.update(1)
        path = out_dir / f"{name}.npy"
        _atomic_save_npy(path, result)
        files[path.name] = sha256_file(path)
        _write_manifest(out_dir, settings, files)
        rate = 5 * n / max(time.perf_counter() - start, 1e-9)
        log.info("corrupted %s (%d/%d) on %s: %.0f images/s", name, k, len(todo), dev, rate)
    bar.close()
    return _finish_cifar(out_dir, labels, settings, files)


def _write_manifest(out_dir: Path, settings: Dict, files: Dict) -> Dict:
    manifest = dict(settings, files=dict(sorted(files.items())),
                    note="generated by snc; not a published corrupted set (-C or -C-bar)")
    _atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


# ----------------------------------------------------------------------------- ImageNet-C layout


def imagenet_c_dir(root: Path, corruption: str, severity: int) -> Path:
    """``root/<corruption>/<severity>``, or with the group folder ``root/<group>/<corruption>/..``
    that some set-ups keep."""
    root = Path(root)
    direct = root / corruption / str(severity)
    if direct.is_dir():
        return direct
    for group, names in IMAGENET_C_GROUPS.items():
        if corruption in names and (root / group / corruption / str(severity)).is_dir():
            return root / group / corruption / str(severity)
    raise FileNotFoundError(
        f"{direct} not found: ImageNet-C is laid out as <root>/<corruption>/<severity>/<wnid>/"
        "*.JPEG. Download the archives from https://zenodo.org/record/2235448 or generate a set "
        "with `python scripts/make_corrupted.py --source <imagenet val folder> --layout imagenet`"
    )


def load_imagenet_c(root: Path, corruption: str, severity: int, transform=None):
    """An ``ImageFolder`` over one corruption and severity of an ImageNet-C-style folder."""
    from torchvision.datasets import ImageFolder

    return ImageFolder(str(imagenet_c_dir(root, corruption, severity)), transform=transform)


def list_image_folder(root: Path) -> List[Tuple[str, Path]]:
    """``(class, file)`` pairs of an image-folder dataset, in sorted order."""
    root = Path(root)
    exts = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}
    items = []
    for cls in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() in exts:
                items.append((cls, f))
    if not items:
        raise FileNotFoundError(f"no images in class folders under {root}")
    return items


def _imagenet_job(args):
    items, out_dir, corruptions, preset, seed, resize_crop, index = args[:7]
    dev, first = args[7:9] if len(args) > 7 else (None, 0)
    from PIL import Image

    from snc.data.imagenet import eval_geometry

    geometry = eval_geometry(224, 256) if resize_crop else (lambda img: img)
    images = [np.asarray(geometry(Image.open(path).convert("RGB"))) for _, path in items]
    batch = np.stack(images)
    chunk_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    for name in corruptions:
        for s in SEVERITIES:
            if dev is None:
                out = corrupt(batch, name, s, preset=preset, seed=chunk_seed)
            else:
                from snc.corruptions.batched import corrupt_in_batches

                # the random blocks are those of the whole folder (first: the chunk's
                # first image), so the output does not depend on the chunk size
                out = corrupt_in_batches(batch, name, s, device=dev, preset=preset,
                                         seed=_batched_seed(seed, name, s),
                                         batch_size=len(batch), first=first)
            for (cls, path), img in zip(items, out, strict=True):
                dest = Path(out_dir) / name / str(s) / cls / (path.stem + ".JPEG")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with atomic_open(dest, fsync=False) as f:  # millions of tiles: no fsync each
                    Image.fromarray(img).save(f, "JPEG", quality=85, optimize=True)
    return len(items)


def generate_imagenet_style(
    source: Path,
    out_dir: Path,
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    preset: str = "imagenet",
    seed: int = 0,
    workers: int = 1,
    resize_crop: bool = True,
    progress: bool = True,
    chunk: int = 64,
    device: str = "cpu",
    batched: Optional[bool] = None,
) -> Dict:
    """Writes ``out_dir/<corruption>/<severity>/<class>/<file>.JPEG`` (quality 85) for the
    class-folder dataset ``source`` (Resize(256) + CenterCrop(224) first, as published, unless
    ``resize_crop=False``). Resumable: chunks whose every output file exists are skipped.
    ``device``/``batched`` as :func:`generate_cifar_style`; the batched path corrupts ``chunk``
    images at a time in one process (``workers`` is then ignored); its random draws are made per
    block of the folder's images, so the result does not depend on ``chunk``."""
    from tqdm.auto import tqdm

    items = list_image_folder(Path(source))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def done(part: Iterable[Tuple[str, Path]]) -> bool:
        return all((out_dir / c / str(s) / cls / (p.stem + ".JPEG")).exists()
                   for cls, p in part for c in corruptions for s in SEVERITIES)

    dev, backend = _backend(device, batched)
    jobs = [(items[i:i + chunk], str(out_dir), tuple(corruptions), preset, seed, resize_crop,
             i // chunk) + ((dev, i) if backend else ()) for i in range(0, len(items), chunk)]
    jobs = [j for j in jobs if not done(j[0])]
    if backend and workers > 1:
        log.info("batched corruption on %s: one process (workers=%d ignored)", dev, workers)
        workers = 1
    with tqdm(total=len(items), desc="corrupting", disable=not progress, unit="img") as bar:
        if workers > 1 and jobs:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for count in pool.map(_imagenet_job, jobs):
                    bar.update(count)
        else:
            for job in jobs:
                bar.update(_imagenet_job(job))
    manifest = {"generated": True, "generator": "snc.corruptions", "preset": preset,
                "seed": int(seed), "num_images": len(items), "source": str(source),
                "generator_version": GENERATOR_VERSION,
                "source_listing_sha256": folder_digest(Path(source)),
                "layout": "imagenet", "corruptions": list(corruptions), "jpeg_quality": 85,
                **({"backend": backend, "random_blocks": _random_blocks(),
                    "batch_size": int(chunk)} if backend else {}),
                "note": "generated by snc; not the published ImageNet-C set"}
    _atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def default_workers() -> Optional[int]:
    """Processes to use by default: the available cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
