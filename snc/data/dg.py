"""Multi-domain image folders for domain generalization: ``<root>/<domain>/<class>/<image>``.

The five benchmarks (PACS, OfficeHome, VLCS, TerraIncognita, DomainNet; registry and downloads
in :mod:`snc.data.dg_sources`) and any folder of that shape are read the same way:

- **Listing** (:func:`scan_domains`): per domain, the files in torchvision ``ImageFolder``
  order (classes sorted, ``os.walk`` sorted, file names sorted), so a split drawn here selects
  the images DomainBed's split selects.
- **Splits** (:func:`split_domain`): DomainBed's ``misc.split_dataset``: the indices
  ``0..n-1`` shuffled by ``np.random.RandomState(seed_hash(trial_seed, domain_index))``; the
  first ``int(n * holdout)`` are the *out* split (validation), the rest the *in* split.
- **Decoding** (:func:`decode_domains`): every image decoded once with Pillow (RGB), resized to
  ``size x size`` (bilinear, antialiased: torchvision's ``Resize((size, size))``) and kept as
  one uint8 ``(N, size, size, 3)`` array, cached atomically as ``.npy`` under the data folder
  and keyed by the folder's digest and the size. Evaluation batches are these images (DomainBed
  and Dassl evaluate at ``Resize((224, 224))``); training crops are drawn from them on the
  device (:class:`DomainBatches`).
- **Training batches** (:class:`DomainBatches`): ``balanced`` (DomainBed: every step takes
  ``batch_size`` images from each training domain, drawn with replacement, concatenated in
  domain order) or ``random`` (Dassl: seeded permutations of the union of the training
  domains). The augmentation runs on whole batches where the images live: random resized crop
  (torchvision's box distribution: 10 tries of area and log-ratio, then the centre crop), a
  horizontal flip, and optionally DomainBed's colour jitter and random greyscale, then ImageNet
  normalization.

The one difference from the reference pipelines: the random resized crop is taken from the image
already resized to ``size x size`` instead of the original file (same box distribution relative
to the image; the aspect ratio of non-square originals is not kept). Documented in docs/dg.md.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from snc.data.loader import IndexStream
from snc.errors import ConfigError

log = logging.getLogger("snc")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLINGS = ("balanced", "random")


# ----------------------------------------------------------------------------- listing

@dataclass(frozen=True)
class DomainFolder:
    """The images of a multi-domain folder.

    Attributes:
        root: the folder.
        domains: the domain folder names, in the order given (or sorted).
        classes: the class names (sorted; the same in every domain).
        files: per domain, ``[(path relative to root, label)]`` in ImageFolder order.
    """

    root: Path
    domains: Tuple[str, ...]
    classes: Tuple[str, ...]
    files: Dict[str, List[Tuple[str, int]]]

    def count(self, domain: str) -> int:
        return len(self.files[domain])

    def digest(self) -> str:
        """SHA-256 over every listed file's relative path and size (what a run depends on)."""
        h = hashlib.sha256()
        for domain in self.domains:
            for rel, label in self.files[domain]:
                h.update(f"{rel}\0{label}\0{(self.root / rel).stat().st_size}\n".encode())
        return h.hexdigest()


def _class_dirs(path: Path) -> List[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def scan_domains(root: Union[str, Path], domains: Optional[Sequence[str]] = None,
                 classes: Optional[Sequence[str]] = None, *, missing: str = "") -> DomainFolder:
    """Lists ``root/<domain>/<class>/<image>``.

    Args:
        root: the dataset folder.
        domains: the expected domains (default: every sub-folder, sorted).
        classes: the expected classes (default: those of the first domain).
        missing: the message when ``root`` does not exist (e.g. the download command).

    Raises:
        ConfigError: ``root`` or a domain folder is missing, a domain's classes differ from the
            others', or a domain has no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(missing or f"{root} not found: a domain-generalization dataset is a "
                          "folder <domain>/<class>/<image>")
    found = _class_dirs(root)
    domains = tuple(domains) if domains is not None else tuple(found)
    absent = [d for d in domains if d not in found]
    if absent:
        raise ConfigError(f"{root} has no domain folder {', '.join(absent)} (found: "
                          f"{', '.join(found) or 'none'}); the download is incomplete: delete "
                          f"{root} and download it again")
    if not domains:
        raise ConfigError(f"{root} has no domain folder: expected <domain>/<class>/<image>")
    files: Dict[str, List[Tuple[str, int]]] = {}
    want = tuple(classes) if classes is not None else None
    for domain in domains:
        names = tuple(_class_dirs(root / domain))
        if want is None:
            want = names
        extra, lost = sorted(set(names) - set(want)), sorted(set(want) - set(names))
        if extra or (lost and classes is None):
            raise ConfigError(f"{root / domain}: its classes differ from the dataset's "
                              f"(missing {', '.join(lost) or 'none'}; unexpected "
                              f"{', '.join(extra) or 'none'})")
        if lost:  # a registered set whose domain has no image of a class (TerraIncognita)
            log.warning("%s has no image of %s; the labels follow the dataset's class list",
                        root / domain, ", ".join(lost))
        listed: List[Tuple[str, int]] = []
        for label, cls in enumerate(want):
            if cls in lost:
                continue
            for dirpath, _, fnames in sorted(os.walk(root / domain / cls, followlinks=True)):
                for fname in sorted(fnames):
                    if fname.lower().endswith(IMAGE_EXTENSIONS):
                        listed.append((os.path.relpath(os.path.join(dirpath, fname), root), label))
        if not listed:
            raise ConfigError(f"{root / domain} has no image ({', '.join(IMAGE_EXTENSIONS)})")
        files[domain] = listed
    return DomainFolder(root, domains, want, files)


# ----------------------------------------------------------------------------- splits

def seed_hash(*args) -> int:
    """DomainBed's ``misc.seed_hash``: an int in ``[0, 2^31)`` from the arguments' text."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2 ** 31)


def split_domain(n: int, holdout: float, trial_seed: int, domain_index: int
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """``(in, out)`` indices of a domain of ``n`` images: DomainBed's ``split_dataset(env,
    int(n * holdout), seed_hash(trial_seed, domain_index))``; *out* (validation) is the first
    ``int(n * holdout)`` of the shuffled indices."""
    keys = list(range(n))
    np.random.RandomState(seed_hash(trial_seed, domain_index)).shuffle(keys)
    k = int(n * holdout)
    return np.asarray(keys[k:], dtype=np.int64), np.asarray(keys[:k], dtype=np.int64)


# ----------------------------------------------------------------------------- decoding

def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def decode_domains(folder: DomainFolder, size: int, cache_dir: Optional[Path] = None,
                   progress: bool = False) -> Dict[str, np.ndarray]:
    """Per domain, its images decoded and resized to ``size x size``: uint8 ``(n, size, size,
    3)``. With ``cache_dir``, each domain's array is read from (or written atomically to)
    ``<cache_dir>/<domain>-<size>-<digest12>.npy`` (memory-mapped when read)."""
    from tqdm.auto import tqdm

    from snc.atomic import atomic_open

    out: Dict[str, np.ndarray] = {}
    digest = folder.digest()[:12]
    for domain in folder.domains:
        path = (Path(cache_dir) / f"{domain.replace(' ', '_')}-{size}-{digest}.npy"
                if cache_dir is not None else None)
        if path is not None and path.exists():
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (folder.count(domain), size, size, 3):
                out[domain] = arr
                continue
        files = folder.files[domain]
        arr = np.empty((len(files), size, size, 3), np.uint8)
        for i, (rel, _) in enumerate(tqdm(files, desc=f"decoding {domain}", leave=False,
                                          disable=not progress)):
            try:
                arr[i] = _decode(folder.root / rel, size)
            except OSError as err:
                raise ConfigError(f"{folder.root / rel} cannot be read as an image ({err}); "
                                  "delete it or download the dataset again") from None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb", fsync=False) as f:
                np.save(f, arr)
        out[domain] = arr
    return out


# ----------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class CropOptions:
    """The training augmentation (torchvision's names and defaults)."""

    size: int = 224
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.0       # ColorJitter(j, j, j, j) when > 0 (DomainBed: 0.3)
    grayscale: float = 0.0    # RandomGrayscale(p) (DomainBed: 0.1)


def resized_crop_boxes(n: int, height: int, width: int, scale: Sequence[float],
                       ratio: Sequence[float], generator: torch.Generator
                       ) -> torch.Tensor:
    """``(n, 4)`` boxes ``(top, left, h, w)`` (float) from torchvision's
    ``RandomResizedCrop.get_params``: 10 tries of ``area ~ U(scale) * H * W`` and
    ``log(ratio) ~ U(log ratio)``, the first that fits; else the centre crop of the ratio
    clamped to ``ratio``. Drawn on the generator's device."""
    dev = generator.device
    area = height * width
    tries = 10
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator,
                                                                   device=dev))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(n, tries, generator=generator, device=dev))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    any_ok = ok.any(dim=1)
    pick_w = w.gather(1, first[:, None])[:, 0]
    pick_h = h.gather(1, first[:, None])[:, 0]
    u_top = torch.rand(n, generator=generator, device=dev)
    u_left = torch.rand(n, generator=generator, device=dev)
    top = torch.floor(u_top * (height - pick_h + 1))
    left = torch.floor(u_left * (width - pick_w + 1))
    # fallback (torchvision): the whole image's ratio clamped into [ratio], centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    fb = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=top.dtype,
                      device=dev)
    boxes = torch.stack([top, left, pick_h, pick_w], 1)
    return torch.where(any_ok[:, None], boxes, fb)


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``(B, C, H, W)`` images cropped to ``boxes`` (``(top, left, h, w)`` in pixels) and
    resized to ``size x size`` bilinearly (pixel centres aligned, as ``F.interpolate`` with
    ``align_corners=False`` on the crop), in one ``grid_sample``."""
    b, _, height, width = x.shape
    top, left, h, w = (boxes[:, i].to(x.dtype) for i in range(4))
    t = (torch.arange(size, device=x.device, dtype=x.dtype) + 0.5) / size
    ys = top[:, None] + t[None] * h[:, None]  # pixel coordinates of the output centres
    xs = left[:, None] + t[None] * w[:, None]
    gy = ys / height * 2 - 1
    gx = xs / width * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)],
                       -1)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    mask = i[:, None] == torch.arange(6, device=x.device)[None, :, None, None]
    a1 = torch.stack((v, q, p, p, t, v), 1)
    a2 = torch.stack((t, v, v, q, p, p), 1)
    a3 = torch.stack((p, p, t, v, v, q), 1)
    a4 = torch.stack((a1, a2, a3), 1)
    return (mask[:, None].to(x.dtype) * a4).sum(2)


def jitter_op(op: int, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """One of ColorJitter's four adjustments per image of a float ``(B, 3, H, W)`` batch in
    ``[0, 1]``, ``factor`` ``(B,)``: 0 brightness, 1 contrast, 2 saturation (torchvision's
    ``adjust_*`` formulas), 3 hue (a shift of the HSV hue by ``factor``)."""
    f = factor[:, None, None, None]
    if op == 0:
        return (img * f).clamp(0, 1)
    if op == 1:
        mean = _grey(img).mean((1, 2, 3), keepdim=True)
        return (f * img + (1 - f) * mean).clamp(0, 1)
    if op == 2:
        return (f * img + (1 - f) * _grey(img)).clamp(0, 1)
    hsv = _rgb_to_hsv(img)
    return _hsv_to_rgb(torch.cat([torch.remainder(hsv[:, :1] + f, 1.0), hsv[:, 1:]], 1))


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision ``ColorJitter(s, s, s, s)`` per image of a float ``(B, 3, H, W)`` batch in
    ``[0, 1]``: brightness, contrast, saturation factors ``~ U(1 - s, 1 + s)``, hue shift
    ``~ U(-s, s)`` (``s`` at most 0.5), applied in a random order drawn per image."""
    b, dev = len(x), generator.device
    factors = 1 - strength + 2 * strength * torch.rand(b, 3, generator=generator, device=dev)
    hue = (2 * torch.rand(b, generator=generator, device=dev) - 1) * min(strength, 0.5)
    order = torch.argsort(torch.rand(b, 4, generator=generator, device=dev), dim=1)
    factors = torch.cat([factors, hue[:, None]], 1).to(x.device)
    order = order.to(x.device)
    for k in range(4):  # each image through the adjustment it drew for this place
        out = x.clone()
        for op in range(4):
            sel = order[:, k] == op
            out[sel] = jitter_op(op, x[sel], factors[sel, op])
        x = out
    return x


def augment_batch(images: torch.Tensor, options: CropOptions, generator: torch.Generator
                  ) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` images -> float ``(B, 3, size, size)`` in ``[0, 1]``: random
    resized crop, flip, optional colour jitter and greyscale (draws from ``generator``)."""
    b, height, width, _ = images.shape
    x = images.permute(0, 3, 1, 2).float() / 255
    boxes = resized_crop_boxes(b, height, width, options.scale, options.ratio, generator)
    x = crop_resize(x, boxes.to(x.device), options.size)
    if options.flip:
        flip = (torch.rand(b, generator=generator, device=generator.device) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if options.jitter > 0:
        x = color_jitter(x, options.jitter, generator)
    if options.grayscale > 0:
        grey = (torch.rand(b, generator=generator, device=generator.device)
                < options.grayscale).to(x.device)
        x = torch.where(grey[:, None, None, None], _grey(x).expand_as(x), x)
    return x


# ----------------------------------------------------------------------------- batches

class DomainBatches:
    """The training stream of a DG run: ``(inputs, labels)`` batches (``len()``: one pass over
    the training images).

    Args:
        images: per training domain, uint8 ``(n_d, S, S, 3)`` (on ``device`` or pinned CPU).
        labels: per training domain, ``(n_d,)`` int64.
        indices: per training domain, the rows of ``images`` trained on (its *in* split; the
            images are not copied); default: every row.
        sampling: ``balanced``: ``batch_size`` images of every domain per step, with
            replacement, in domain order (``[A; B; C]``: MixStyle's ``crossdomain`` pairs the
            domain halves of two-domain batches); ``random``: ``batch_size`` images per step
            from seeded permutations of the union.
        options: the augmentation.
        mean, std: normalization.
        device: where batches are made.
        seed: seed of the index and augmentation streams.
        channels_last: channels-last batches.
        endless: ``iter()`` never ends (step-based training); else it yields ``len()`` batches
            (one epoch).
    """

    def __init__(self, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                 sampling: str, batch_size: int, options: CropOptions, mean: Sequence[float],
                 std: Sequence[float], device: torch.device, seed: int,
                 channels_last: bool = False, endless: bool = False,
                 indices: Optional[Sequence[torch.Tensor]] = None) -> None:
        self.endless = endless
        if sampling not in SAMPLINGS:
            raise ConfigError(f"task.sampling={sampling!r}; choose balanced or random")
        self.images, self.labels = list(images), list(labels)
        self.sampling, self.batch_size, self.options = sampling, int(batch_size), options
        self.device, self.channels_last = torch.device(device), channels_last
        self.rows = ([torch.as_tensor(i, dtype=torch.int64).cpu() for i in indices]
                     if indices is not None else [torch.arange(len(x)) for x in self.images])
        sizes = [len(r) for r in self.rows]
        if sampling == "balanced":
            self.draws = [IndexStream(n, seed + 1009 * i, replace=True)
                          for i, n in enumerate(sizes)]
        else:
            self.offsets = np.cumsum([0] + sizes)
            self.draws = [IndexStream(sum(sizes), seed)]
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed) + 7919)
        self._mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        total = sum(len(r) for r in self.rows)
        per_step = self.batch_size * (len(self.images) if self.sampling == "balanced" else 1)
        return max(1, total // per_step)

    def __iter__(self) -> Iterator:
        steps = itertools.count() if self.endless else range(len(self))
        return (next(self) for _ in steps)

    def _gather(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.sampling == "balanced":
            xs, ys = [], []
            for images, labels, rows, draws in zip(self.images, self.labels, self.rows,
                                                   self.draws, strict=True):
                idx = rows[draws.take(self.batch_size)]
                xs.append(images[idx.to(images.device)])
                ys.append(labels[idx.to(labels.device)])
            return torch.cat(xs), torch.cat(ys)
        idx = self.draws[0].take(self.batch_size).numpy()
        domain = np.searchsorted(self.offsets, idx, side="right") - 1
        xs = torch.empty((len(idx),) + tuple(self.images[0].shape[1:]), dtype=torch.uint8,
                         device=self.images[0].device)
        ys = torch.empty(len(idx), dtype=torch.int64, device=self.labels[0].device)
        for d in np.unique(domain):
            rows = np.nonzero(domain == d)[0]
            local = self.rows[d][torch.as_tensor(idx[rows] - self.offsets[d])]
            images, labels = self.images[d], self.labels[d]
            xs[torch.as_tensor(rows).to(xs.device)] = images[local.to(images.device)]
            ys[torch.as_tensor(rows).to(ys.device)] = labels[local.to(labels.device)]
        return xs, ys

    def __next__(self) -> Tuple[torch.Tensor, torch.Tensor]:
        x, y = self._gather()
        x = augment_batch(x.to(self.device, non_blocking=True), self.options, self.generator)
        x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def state_dict(self) -> Dict[str, object]:
        return {"draws": [d.state_dict() for d in self.draws],
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        for d, s in zip(self.draws, state["draws"], strict=True):
            d.load_state_dict(s)
        self.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------- generated data

GENERATED_DOMAINS = ("photo", "painting", "sketch", "noise")
GENERATED_CLASSES = ("circle", "cross", "square", "triangle")


def _shape_mask(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.4, 0.6, 2)
    r = rng.uniform(0.25, 0.35)
    if cls == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    if cls == "square":
        return (abs(yy - cy) < r * 0.85) & (abs(xx - cx) < r * 0.85)
    if cls == "cross":
        return ((abs(yy - cy) < r * 0.3) & (abs(xx - cx) < r)) | \
            ((abs(xx - cx) < r * 0.3) & (abs(yy - cy) < r))
    return (yy > cy - r) & (yy < cy + r) & (abs(xx - cx) < (yy - (cy - r)) / 2)


def _render(mask: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    size = mask.shape[0]
    dark, light = rng.uniform(0, 90, 3), rng.uniform(165, 255, 3)
    fg, bg = (dark, light) if rng.random() < 0.5 else (light, dark)
    if domain == "photo":
        img = np.where(mask[..., None], fg, bg) + rng.normal(0, 8, (size, size, 3))
    elif domain == "painting":
        yy = np.linspace(0, 1, size)[:, None, None]
        img = np.where(mask[..., None], fg, bg * yy + (255 - bg) * (1 - yy))
        img = img + 40 * np.sin(np.arange(size)[None, :, None] / 2.0)
    elif domain == "sketch":
        edge = mask ^ np.roll(mask, 1, 0) | mask ^ np.roll(mask, 1, 1)
        img = np.where(edge[..., None], 0.0, 245.0) + np.zeros((1, 1, 3))
    else:
        img = np.where(mask[..., None], fg, bg) + rng.normal(0, 60, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_domain_folder(root: Union[str, Path], per_class: int = 30, size: int = 32,
                        seed: int = 0, domains: Sequence[str] = GENERATED_DOMAINS,
                        classes: Sequence[str] = GENERATED_CLASSES) -> Path:
    """Writes a generated multi-domain set ``root/<domain>/<class>/<i>.png``: each class a
    shape at a random place, each domain a rendering (flat colours with sensor noise, painted
    gradients and stripes, a pen outline, heavy noise). The offline default of the ``dg`` task
    and the tests' data. Written atomically; returns ``root``."""
    from PIL import Image

    from snc.atomic import new_folders

    root = Path(root)
    if root.is_dir() and (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".partial")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for domain in domains:
        for cls in classes:
            folder = tmp / domain / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = _render(_shape_mask(cls, size, rng), domain, rng)
                Image.fromarray(img).save(folder / f"{i:04d}.png")
    (tmp / ".complete").write_text("generated\n")
    with new_folders(root.parent):
        shutil.rmtree(root, ignore_errors=True)
        tmp.replace(root)
    return root
