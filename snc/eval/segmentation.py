"""Semantic-segmentation metrics and inference protocols (paper Table 3).

Counting (SEMSEG/CNSN ``util/util.py`` ``intersectionAndUnion``): one ``K x K`` confusion
matrix (rows: ground truth, columns: prediction) over **every pixel of the whole split**,
pixels labelled 255 ignored; under ``torch.distributed`` each rank counts its shard and the
matrices are summed (exact, no padding). From it, per class k:
``IoU_k = I_k / (U_k + 1e-10)`` with ``I_k = cm[k, k]``, ``U_k = sum_j cm[k, j] + sum_j cm[j, k]
- I_k``; ``mIoU`` = the mean over all K classes (a class absent from both prediction and ground
truth counts 0, as the reference); ``mAcc`` = mean of ``I_k / (gt_k + 1e-10)``; ``acc`` =
``sum_k I_k / sum_k gt_k`` (allAcc). All in percent.

Protocols:
- ``center`` (what CNSN's training script measures): the centred ``crop`` x ``crop`` window of
  each image (padded with the mean / 255 when smaller), one forward, no flip.
- ``sliding`` (SEMSEG ``tool/test.py``, what the configs' TEST block implies; our primary): the
  full image (optionally resized so its long side is ``base_size``), padded (centred, mean) to at
  least ``crop``, windows of ``crop`` at stride ``ceil(crop * 2/3)`` (476 for 713), the last
  window of each row/column flush with the border; per window the softmax, averaged with that of
  the h-flipped window; probabilities averaged over overlapping windows, cropped back, resized
  to the label size, argmax.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from snc.data.segmentation.labels import CLASS_KEYS, IGNORE, NUM_CLASSES
from snc.distributed import all_reduce_sum

EPS = 1e-10


# ----- counting --------------------------------------------------------------------------------

def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES,
                     ignore: int = IGNORE) -> torch.Tensor:
    """``(K, K + 1)`` int64 counts over pixels whose label is not ``ignore``: rows = ground
    truth, columns = prediction, and a last column for predictions outside ``0..K-1`` (a value
    such as 255 in a saved prediction map). Those pixels are misses of their true class and a
    false positive of none, as semseg's ``intersectionAndUnion`` counts them (its histogram of
    predictions has no bin for them). ``pred``, ``target``: integer tensors of one shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    valid = target != ignore
    target, pred = target[valid], pred[valid]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1} or {ignore}")
    outside = (pred < 0) | (pred >= num_classes)
    idx = target * (num_classes + 1) + torch.where(outside, num_classes, pred)
    return torch.bincount(idx, minlength=num_classes * (num_classes + 1)).reshape(
        num_classes, num_classes + 1)


def reduce_confusion(cm: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sums a confusion matrix over ranks (identity in a single process)."""
    total = all_reduce_sum(cm.reshape(-1).tolist(), device)
    return torch.tensor(total, dtype=torch.long).reshape(cm.shape)


def scores(cm: torch.Tensor) -> Dict[str, object]:
    """``{"miou", "macc", "acc", "iou": [K]}`` in percent from a ``(K, K)`` confusion matrix or
    the ``(K, K + 1)`` one of :func:`confusion_matrix` (its last column: misses only)."""
    cm = cm.double()
    k = cm.shape[0]
    inter = cm[:, :k].diag()
    gt, pred = cm.sum(1), cm[:, :k].sum(0)
    union = gt + pred - inter
    iou = inter / (union + EPS)
    acc_k = inter / (gt + EPS)
    return {"miou": 100 * iou.mean().item(), "macc": 100 * acc_k.mean().item(),
            "acc": 100 * (inter.sum() / (gt.sum() + EPS)).item(),
            "iou": [100 * v for v in iou.tolist()]}


def metric_dict(cm: torch.Tensor, domain: str, suffix: str = "",
                class_keys: Sequence[str] = CLASS_KEYS, per_class: bool = True
                ) -> Dict[str, float]:
    """Flat metrics ``<domain>/miou<suffix>``, ``/macc``, ``/acc`` and, with ``per_class``,
    ``/iou<suffix>/<class>``."""
    s = scores(cm)
    out = {f"{domain}/miou{suffix}": s["miou"], f"{domain}/macc{suffix}": s["macc"],
           f"{domain}/acc{suffix}": s["acc"]}
    if per_class:
        for key, v in zip(class_keys, s["iou"], strict=True):
            out[f"{domain}/iou{suffix}/{key}"] = v
    return out


# ----- inference -------------------------------------------------------------------------------

def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def window_starts(size: int, crop: int, stride: int) -> list:
    """SEMSEG's grid: ``ceil((size - crop) / stride) + 1`` windows, the last flush with the end."""
    n = int(math.ceil(max(size - crop, 0) / stride)) + 1
    return [min(i * stride + crop, size) - crop for i in range(n)]


def sliding_window_probs(model: torch.nn.Module, image: torch.Tensor, crop: int,
                         stride: Optional[int] = None, flip: bool = True,
                         window_batch: int = 4) -> torch.Tensor:
    """Class probabilities ``(K, H, W)`` of one normalized image ``(3, H, W)``.

    The image is padded (centred) with 0, i.e. the mean in normalized space, to at least
    ``crop``; ``stride`` defaults to ``ceil(crop * 2 / 3)``.
    """
    stride = stride or int(math.ceil(crop * 2 / 3))
    _, h, w = image.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    top, left = ph // 2, pw // 2
    x = F.pad(image, (left, pw - left, top, ph - top)) if ph or pw else image
    hh, ww = x.shape[-2:]
    rows, cols = window_starts(hh, crop, stride), window_starts(ww, crop, stride)
    boxes = [(r, c) for r in rows for c in cols]
    probs = None
    count = torch.zeros((1, hh, ww), device=image.device)
    for i in range(0, len(boxes), window_batch):
        chunk = boxes[i:i + window_batch]
        windows = torch.stack([x[:, r:r + crop, c:c + crop] for r, c in chunk])
        p = logits_of(model, windows).float().softmax(1)
        if flip:
            p = (p + logits_of(model, windows.flip(-1)).float().softmax(1).flip(-1)) / 2
        if probs is None:
            probs = torch.zeros((p.shape[1], hh, ww), device=image.device)
        for (r, c), pk in zip(chunk, p, strict=True):
            probs[:, r:r + crop, c:c + crop] += pk
            count[:, r:r + crop, c:c + crop] += 1
    return (probs / count)[:, top:top + h, left:left + w]


def predict_full(model: torch.nn.Module, image: torch.Tensor, crop: int,
                 stride: Optional[int] = None, flip: bool = True,
                 base_size: Optional[int] = None, window_batch: int = 4) -> torch.Tensor:
    """``(H, W)`` prediction of one normalized image ``(3, H, W)`` by the sliding-window
    protocol, optionally at the scale where the long side is ``base_size``."""
    _, h, w = image.shape
    x = image
    if base_size and max(h, w) != base_size:
        s = base_size / max(h, w)
        x = F.interpolate(image[None], size=(int(round(h * s)), int(round(w * s))),
                          mode="bilinear", align_corners=False)[0]
    probs = sliding_window_probs(model, x, crop, stride, flip, window_batch)
    if probs.shape[-2:] != (h, w):
        probs = F.interpolate(probs[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return probs.argmax(0)


@torch.inference_mode()
def evaluate_segmentation(
    model: torch.nn.Module,
    batches,
    protocol: str,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    crop: int = 713,
    stride: Optional[int] = None,
    flip: bool = True,
    base_size: Optional[int] = None,
    window_batch: int = 4,
    num_classes: int = NUM_CLASSES,
    expected: Optional[int] = None,
    on_prediction: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None,
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The confusion matrix of ``model`` over ``batches`` (this rank's shard), summed over ranks.

    Args:
        batches: ``(uint8 images (B, 3, H, W), labels (B, H, W))``; for ``sliding``, one image
            per batch (full images differ in size).
        protocol: ``center`` (one forward per batch) or ``sliding``.
        normalize: uint8 batch -> model input (on ``device``).
        expected: the split size; the summed image count must equal it.
        on_prediction: called as ``f(k, image, label, pred)`` for each image of this rank
            (``k`` counts from 0), e.g. to save colourised predictions.

    Returns:
        ``(cm, {"images": n, "seconds": t, "images_per_s": n / t})``.
    """
    if protocol not in ("center", "sliding"):
        raise ValueError(f"unknown protocol {protocol!r}; choose center or sliding")
    was_training = model.training
    model.eval()
    cm = torch.zeros((num_classes, num_classes + 1), dtype=torch.long, device=device)
    n = 0
    start = time.perf_counter()
    try:
        for images, labels in batches:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            x = normalize(images)
            if protocol == "center":
                pred = logits_of(model, x).argmax(1)
            else:
                pred = torch.stack([predict_full(model, xi, crop, stride, flip, base_size,
                                                 window_batch) for xi in x])
            cm += confusion_matrix(pred, labels, num_classes)
            if on_prediction is not None:
                for k in range(len(images)):
                    on_prediction(n + k, images[k], labels[k], pred[k])
            n += len(images)
    finally:
        model.train(was_training)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    cm = reduce_confusion(cm.cpu(), device)
    total = all_reduce_sum([n], device)[0]
    if expected is not None and total != expected:
        raise RuntimeError(f"evaluated {total} images but the split has {expected}")
    return cm, {"images": total, "seconds": seconds, "images_per_s": n / max(seconds, 1e-9)}


def colorized_panel(image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """``image | ground truth | prediction`` side by side, ``(H, 3W, 3)`` uint8 (Cityscapes
    palette, ignore black)."""
    from snc.data.segmentation.labels import colorize

    img = image.permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    return np.concatenate([img, colorize(label.cpu().numpy().clip(0, 255)),
                           colorize(pred.cpu().numpy())], axis=1)
