"""The training transform as one batched warp on the training device (``task.augment=device``).

Scale, rotation about the centre, flip, centred padding and the random crop of
:class:`~snc.data.segmentation.transforms.TrainTransform` compose into one affine map from crop
pixels to source pixels, so a whole batch is transformed by a single ``grid_sample`` (bilinear
for the image, nearest for the label), with the 5x5 Gaussian blur as a batched convolution of
the warped crop (blur commutes with the crop window: the official blur also runs on the final
pixel grid, after scale and rotation). The workers then only decode PNGs. Measured on one CPU
thread for a 1914x1052 GTA5-size pair: decode 86 ms, the per-sample v2 transform 438 ms, the
batched warp 93 ms per sample (on that same CPU), so ~80% of the workers' time leaves them.

The draws are the same seven uniforms, in the same order, from the same per-sample generator as
the CPU transform, so both paths pick the same scale, angle, flip and crop for a sample. The
results differ only by interpolation (one bilinear resampling instead of resize-then-rotate,
and blur border handling at the crop edge); without scale and rotation they are identical.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from snc.data.segmentation.transforms import BLUR_SIGMA, TrainTransform, mean_fill


def draw_uniforms(generator: torch.Generator) -> torch.Tensor:
    """The seven uniforms of one sample (as :meth:`TrainTransform.__call__` draws them)."""
    return torch.rand(7, generator=generator, dtype=torch.float64)


class RawSample:
    """A worker's output in device mode: the decoded pair and its uniforms (no transform)."""

    def __init__(self, transform: TrainTransform) -> None:
        self.transform = transform

    def __call__(self, image: np.ndarray, label: np.ndarray, generator: torch.Generator,
                 name: str = "") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        lab = torch.from_numpy(np.ascontiguousarray(label))
        u = draw_uniforms(generator)
        t = self.transform
        if not t.pad:  # the check of the CPU path, on this sample's scale
            lo, hi = t.scale
            s = lo + (hi - lo) * float(u[0])
            h, w = label.shape
            if round(h * s) < t.crop or round(w * s) < t.crop:
                from snc.data.segmentation.base import SegmentationDataError

                raise SegmentationDataError(
                    f"crop {t.crop} is larger than {name or 'the image'} ({w}x{h}) scaled by "
                    f"{s:.3f} and padding is off (task.pad=false): use task.pad=true")
        return img, lab, u


def collate_raw(items, fill: Sequence[int], ignore: int = 255) -> Dict[str, torch.Tensor]:
    """Pads a list of raw samples to the largest size (image: ``fill``, label: ``ignore``)."""
    images, labels, us = zip(*items, strict=True)
    hm = max(x.shape[1] for x in images)
    wm = max(x.shape[2] for x in images)
    out_img = torch.empty((len(images), 3, hm, wm), dtype=torch.uint8)
    out_img[:] = torch.tensor(fill, dtype=torch.uint8).view(1, 3, 1, 1)
    out_lab = torch.full((len(images), hm, wm), ignore, dtype=torch.uint8)
    for k, (x, y) in enumerate(zip(images, labels, strict=True)):
        out_img[k, :, :x.shape[1], :x.shape[2]] = x
        out_lab[k, :y.shape[0], :y.shape[1]] = y
    sizes = torch.tensor([[x.shape[1], x.shape[2]] for x in images], dtype=torch.long)
    return {"images": out_img, "labels": out_lab, "sizes": sizes, "u": torch.stack(us)}


def _affine(t: TrainTransform, h: int, w: int, u: List[float]) -> Tuple[np.ndarray, bool]:
    """``A (2x3)`` with ``[x0, y0] = A @ [x, y, 1]``: crop pixel centre -> source pixel centre;
    and whether the sample is blurred."""
    lo, hi = t.scale
    s = lo + (hi - lo) * u[0]
    h2, w2 = max(1, int(round(h * s))), max(1, int(round(w * s)))
    sx, sy = w2 / w, h2 / h
    angle = (-t.rotate + 2 * t.rotate * u[2]) if (t.rotate > 0 and u[1] < t.rotate_p) else 0.0
    blur = t.blur_p > 0 and u[3] < t.blur_p
    flip = t.flip and u[4] < 0.5
    ph, pw = max(t.crop - h2, 0), max(t.crop - w2, 0)
    hp, wp = h2 + ph, w2 + pw
    top = min(int(u[5] * (hp - t.crop + 1)), hp - t.crop)
    left = min(int(u[6] * (wp - t.crop + 1)), wp - t.crop)
    # crop -> padded -> rotated+flipped scaled image (xr, yr)
    m = np.array([[1.0, 0.0, left - pw // 2], [0.0, 1.0, top - ph // 2], [0, 0, 1]])
    if flip:  # xr -> w2 - 1 - xr
        m = np.array([[-1.0, 0, w2 - 1], [0, 1, 0], [0, 0, 1]]) @ m
    if angle:  # rotated -> unrotated about the centre (y down; positive = counter-clockwise)
        a = math.radians(angle)
        c, sn = math.cos(a), math.sin(a)
        cx, cy = (w2 - 1) / 2, (h2 - 1) / 2
        rot = np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1]])
        shift = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
        unshift = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
        m = shift @ rot @ unshift @ m
    # scaled -> source (half-pixel centres, as cv2.resize INTER_LINEAR)
    m = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]]) @ m
    return m[:2], blur


def _blur(x: torch.Tensor) -> torch.Tensor:
    r = torch.arange(5, dtype=torch.float32, device=x.device) - 2
    k = torch.exp(-r ** 2 / (2 * BLUR_SIGMA ** 2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def warp_batch(batch: Dict[str, torch.Tensor], t: TrainTransform, device: torch.device
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A raw batch (:func:`collate_raw`) -> ``(images (B, 3, crop, crop) float 0-255,
    labels (B, crop, crop) int64)`` on ``device``."""
    images = batch["images"].to(device, non_blocking=True).float()
    labels = batch["labels"].to(device, non_blocking=True).float()[:, None]
    b, _, hm, wm = images.shape
    mats, blurs = [], []
    for (h, w), u in zip(batch["sizes"].tolist(), batch["u"].tolist(), strict=True):
        a, blur = _affine(t, h, w, u)
        mats.append(a)
        blurs.append(blur)
    a = torch.tensor(np.stack(mats), dtype=torch.float32, device=device)  # (B, 2, 3)
    ys, xs = torch.meshgrid(torch.arange(t.crop, device=device, dtype=torch.float32),
                            torch.arange(t.crop, device=device, dtype=torch.float32),
                            indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)  # (1, P, 3)
    src = pix @ a.transpose(1, 2)  # (B, P, 2): source pixel centres (x0, y0)
    sizes = batch["sizes"].to(device)
    inside = ((src[..., 0] >= -0.5) & (src[..., 0] <= sizes[:, 1:2] - 0.5)
              & (src[..., 1] >= -0.5) & (src[..., 1] <= sizes[:, 0:1] - 0.5))
    grid = torch.stack([(src[..., 0] + 0.5) / wm * 2 - 1, (src[..., 1] + 0.5) / hm * 2 - 1], -1)
    grid = grid.view(b, t.crop, t.crop, 2)
    inside = inside.view(b, 1, t.crop, t.crop)
    img = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    fill = torch.tensor(mean_fill(t.mean), device=device, dtype=torch.float32).view(1, 3, 1, 1)
    img = torch.where(inside, img, fill)
    lab = F.grid_sample(labels, grid, mode="nearest", padding_mode="border",
                        align_corners=False)
    lab = torch.where(inside, lab, torch.full_like(lab, float(t.ignore)))
    blur = torch.tensor(blurs, device=device)
    if blur.any():
        img = torch.where(blur.view(-1, 1, 1, 1), _blur(img), img)
    return img.round().clamp(0, 255), lab[:, 0].round().long()
