"""Image/label pairs on disk: reading, labelId -> trainId mapping, size checks.

Every failure names the file: a missing or truncated PNG, a label with values that are not
Cityscapes labelIds, an image whose size differs from its label's (never silently cropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from snc.data.segmentation.labels import to_train_ids
from snc.errors import ConfigError


class SegmentationDataError(ConfigError):
    """A dataset file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Pair:
    """One sample: ``name`` (a GTA5 id ``00001`` or a Cityscapes ``<city>/<stem>``)."""

    name: str
    image: Path
    label: Path


def read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable (torch.from_numpy)
    except FileNotFoundError:
        raise SegmentationDataError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated / not an image
        raise SegmentationDataError(f"cannot read image {path}: {err} (truncated or not a "
                                    "PNG/JPEG? re-download or remove it from the list)") from None


def read_label(path: Path) -> np.ndarray:
    """``(H, W)`` uint8 trainIds (255 = ignore) from a labelId PNG (palette or grey)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I;16", "I"):
                raise SegmentationDataError(
                    f"label {path} is a {im.mode} image; a single-channel labelIds PNG is "
                    "expected (GTA5 labels/*.png, Cityscapes *_gtFine_labelIds.png)")
            array = np.asarray(im)
    except FileNotFoundError:
        raise SegmentationDataError(f"label {path} does not exist") from None
    except SegmentationDataError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise SegmentationDataError(f"cannot read label {path}: {err} (truncated or not a "
                                    "PNG? re-download or remove it from the list)") from None
    try:
        return to_train_ids(array, source=str(path))
    except ValueError as err:
        raise SegmentationDataError(str(err)) from None


def image_size(path: Path) -> Tuple[int, int]:
    """``(width, height)`` from the file header (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise SegmentationDataError(f"{path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise SegmentationDataError(f"cannot read {path}: {err}") from None


def size_mismatches(pairs: Sequence[Pair]) -> List[Tuple[str, Tuple[int, int], Tuple[int, int]]]:
    """``(name, image size, label size)`` of every pair whose sizes differ (headers only)."""
    out = []
    for p in pairs:
        a, b = image_size(p.image), image_size(p.label)
        if a != b:
            out.append((p.name, a, b))
    return out


class PairDataset:
    """Random access to ``pairs``: ``ds[i] -> (image (H, W, 3) uint8, trainIds (H, W) uint8)``.

    Raises:
        SegmentationDataError: on a missing/truncated file, values outside the labelId table,
            or an image whose size differs from its label's.
    """

    def __init__(self, pairs: Sequence[Pair], domain: str = "") -> None:
        self.pairs = list(pairs)
        self.domain = domain

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        p = self.pairs[i]
        image, label = read_image(p.image), read_label(p.label)
        if image.shape[:2] != label.shape:
            raise SegmentationDataError(
                f"{p.image} is {image.shape[1]}x{image.shape[0]} but its label {p.label} is "
                f"{label.shape[1]}x{label.shape[0]}: drop the pair (dataset.mismatch=drop "
                "checks every pair at start) or fix the files")
        return image, label

    def names(self) -> List[str]:
        return [p.name for p in self.pairs]


def choose_subset(names: Sequence[str], fraction: float, seed: int) -> List[str]:
    """A seeded random ``fraction`` of ``names`` (``round(fraction * N)``, at least 1), in the
    original order. The paper's GTA5 quarter was never published; this is our stand-in and the
    run directory records the chosen list."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"dataset.subset must be in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return list(names)
    n = max(1, int(round(fraction * len(names))))
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(names), size=n, replace=False))
    return [names[i] for i in keep]


def read_list(path: Path) -> List[str]:
    """Names from a list file (one per line; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"list file {path} does not exist")
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln]


def write_list(path: Path, names: Sequence[str], header: str = "") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {h}\n" for h in header.splitlines() if h) + "".join(f"{n}\n" for n in names)
    path.write_text(text)
