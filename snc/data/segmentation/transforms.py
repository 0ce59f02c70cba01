"""Paired image/label transforms of the official training recipe (SEMSEG ``util/transform.py``
as used by CNSN ``tool/train_cnsn.py``), with torchvision.transforms.v2 kernels on
``tv_tensors.Image`` / ``tv_tensors.Mask`` (bilinear for the image, nearest for the mask).

Training, in the official order:
    1. random scale, factor ~ U[0.5, 2.0], aspect kept (output size rounded as cv2 does);
    2. with p = 0.5, rotation by U[-10, 10] degrees about the centre, image filled with the
       ImageNet mean, label with 255;
    3. with p = 0.5, Gaussian blur 5x5 (sigma 1.1: what cv2 derives from ksize 5, sigma 0);
    4. horizontal flip, p = 0.5;
    5. random 713 crop; a smaller image is first padded (centred) with the mean / 255.
Evaluation (official in-training protocol): the centred 713 crop with the same padding.

Every draw comes from the ``torch.Generator`` passed in; the loader seeds one per sample from
(run seed, epoch, index), so an epoch's augmentations do not depend on worker scheduling and a
resumed run draws the same ones. Normalization happens on the training device, on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from snc.data.segmentation.base import SegmentationDataError
from snc.data.segmentation.labels import IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# cv2.GaussianBlur(img, (5, 5), 0) uses sigma = 0.3 * ((5 - 1) / 2 - 1) + 0.8
BLUR_SIGMA = 1.1


def mean_fill(mean: Sequence[float] = IMAGENET_MEAN) -> Tuple[int, ...]:
    """The uint8 fill value of padded / rotated-in image pixels (the mean, as the official)."""
    return tuple(int(round(255 * m)) for m in mean)


def to_tv(image: np.ndarray, label: np.ndarray) -> Tuple[tv_tensors.Image, tv_tensors.Mask]:
    """``(H, W, 3)`` uint8 and ``(H, W)`` uint8 arrays -> ``(3, H, W)`` Image, ``(1, H, W)``
    Mask."""
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label))[None])
    return img, mask


def pad_to(image: torch.Tensor, mask: torch.Tensor, size: int, fill: Sequence[int],
           ignore: int = IGNORE) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pads (centred, as the official ``Crop``) to at least ``size`` x ``size``."""
    h, w = image.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return image, mask
    padding = [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2]  # left, top, right, bottom
    image = F.pad(image, padding, fill=list(fill))
    mask = F.pad(mask, padding, fill=ignore)
    return image, mask


def _crop(image, mask, size: int, top: int, left: int):
    return F.crop(image, top, left, size, size), F.crop(mask, top, left, size, size)


def _check_size(image: torch.Tensor, size: int, name: str) -> None:
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise SegmentationDataError(
            f"crop {size} is larger than {name or 'the image'} ({w}x{h}) and padding is off "
            f"(task.pad=false): use a crop <= {min(h, w)}, or task.pad=true")


@dataclass(frozen=True)
class TrainTransform:
    """The training transform (see the module docstring).

    Args:
        crop: crop side (713).
        scale: scale range.
        rotate: maximum rotation in degrees (0: off); ``rotate_p`` its probability.
        blur_p: probability of the 5x5 Gaussian blur (0: off).
        flip: random horizontal flip.
        pad: pad an image smaller than the crop (official); False raises instead.
        mean: image fill (0-1 scale), ignore: label fill.
    """

    crop: int = 713
    scale: Tuple[float, float] = (0.5, 2.0)
    rotate: float = 10.0
    rotate_p: float = 0.5
    blur_p: float = 0.5
    flip: bool = True
    pad: bool = True
    mean: Tuple[float, ...] = IMAGENET_MEAN
    ignore: int = IGNORE

    def __call__(self, image: np.ndarray, label: np.ndarray, generator: torch.Generator,
                 name: str = "") -> Tuple[torch.Tensor, torch.Tensor]:
        """``(H, W, 3)``, ``(H, W)`` uint8 -> ``(3, crop, crop)`` uint8, ``(crop, crop)`` int64.
        Draws, in order: scale, rotate?, angle, blur?, flip?, crop offsets (always all of them,
        so the stream's position does not depend on the outcomes)."""
        g = generator
        u = torch.rand(7, generator=g, dtype=torch.float64).tolist()
        img, mask = to_tv(image, label)
        fill = mean_fill(self.mean)
        lo, hi = self.scale
        s = lo + (hi - lo) * u[0]
        h, w = img.shape[-2:]
        size = [max(1, int(round(h * s))), max(1, int(round(w * s)))]
        if size != [h, w]:
            img = F.resize(img, size, InterpolationMode.BILINEAR, antialias=False)
            mask = F.resize(mask, size, InterpolationMode.NEAREST)
        if self.rotate > 0 and u[1] < self.rotate_p:
            angle = -self.rotate + 2 * self.rotate * u[2]
            img = F.rotate(img, angle, InterpolationMode.BILINEAR, fill=list(fill))
            mask = F.rotate(mask, angle, InterpolationMode.NEAREST, fill=self.ignore)
        if self.blur_p > 0 and u[3] < self.blur_p:
            img = F.gaussian_blur(img, [5, 5], [BLUR_SIGMA, BLUR_SIGMA])
        if self.flip and u[4] < 0.5:
            img, mask = F.horizontal_flip(img), F.horizontal_flip(mask)
        if self.pad:
            img, mask = pad_to(img, mask, self.crop, fill, self.ignore)
        else:
            _check_size(img, self.crop, name)
        h, w = img.shape[-2:]
        top = min(int(u[5] * (h - self.crop + 1)), h - self.crop)
        left = min(int(u[6] * (w - self.crop + 1)), w - self.crop)
        img, mask = _crop(img, mask, self.crop, top, left)
        return img.as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor).long()


@dataclass(frozen=True)
class CenterCrop:
    """The official in-training evaluation: the centred ``crop`` (padded with mean / 255)."""

    crop: int = 713
    pad: bool = True
    mean: Tuple[float, ...] = IMAGENET_MEAN
    ignore: int = IGNORE

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 generator: Optional[torch.Generator] = None, name: str = ""
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        img, mask = to_tv(image, label)
        if self.pad:
            img, mask = pad_to(img, mask, self.crop, mean_fill(self.mean), self.ignore)
        else:
            _check_size(img, self.crop, name)
        h, w = img.shape[-2:]
        img, mask = _crop(img, mask, self.crop, (h - self.crop) // 2, (w - self.crop) // 2)
        return img.as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor).long()


def full_image(image: np.ndarray, label: np.ndarray, generator=None, name: str = ""
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """No transform: ``(3, H, W)`` uint8 and ``(H, W)`` int64 (sliding-window evaluation)."""
    img, mask = to_tv(image, label)
    return img.as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor).long()


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float ``(x / 255 - mean) / std`` (the official ``ToTensor`` +
    ``Normalize(mean * 255, std * 255)`` on the 0-255 scale is the same map)."""
    m = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s
