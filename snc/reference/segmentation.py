"""Semantic segmentation as hszhao/semseg runs it (``util/transform.py``, ``tool/train.py``,
``tool/test.py``).

Training: per-sample float32 OpenCV scale, rotate, blur, flip and crop, normalization in
DataLoader workers, fp32, the cross-entropy of the main (+ auxiliary) head. Evaluation: the
centre crop, and the sliding window + flip with one window (and its flip) per forward and the
probabilities accumulated in NumPy. snc's pipeline (:mod:`snc.tasks.segment`,
:func:`snc.eval.segmentation.evaluate_segmentation`) is compared with it.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from snc.data.loader import forever
from snc.eval.segmentation import logits_of
from snc.reference.cifar import cn_forward


class SemsegReferenceSet(torch.utils.data.Dataset):
    """``util/transform.py``'s training chain on float32 OpenCV arrays: RandScale,
    RandRotate (p 0.5, mean / 255 fill), RandomGaussianBlur 5x5 (p 0.5), RandomHorizontalFlip,
    Crop (rand, padded), ToTensor, Normalize (mean * 255, std * 255)."""

    def __init__(self, dataset, crop: int, scale, rotate: float, rotate_p: float,
                 blur_p: float, mean, std, train: bool = True) -> None:
        self.dataset, self.crop, self.scale, self.train = dataset, crop, scale, train
        self.rotate, self.rotate_p, self.blur_p = rotate, rotate_p, blur_p
        self.mean = [255 * m for m in mean]
        self.std = [255 * s for s in std]

    def __len__(self) -> int:
        return len(self.dataset)

    def _crop(self, image, label, center: bool):
        import cv2

        h, w = label.shape
        ph, pw = max(self.crop - h, 0), max(self.crop - w, 0)
        if ph or pw:
            t, le = ph // 2, pw // 2
            image = cv2.copyMakeBorder(image, t, ph - t, le, pw - le, cv2.BORDER_CONSTANT,
                                       value=self.mean)
            label = cv2.copyMakeBorder(label, t, ph - t, le, pw - le, cv2.BORDER_CONSTANT,
                                       value=255)
        h, w = label.shape
        if center:
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
        else:
            top, left = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
        return (image[top:top + self.crop, left:left + self.crop],
                label[top:top + self.crop, left:left + self.crop])

    def __getitem__(self, i: int):
        import cv2

        image, label = self.dataset[i]
        image = np.float32(image)  # cv2.imread -> RGB -> float32
        if self.train:
            s = self.scale[0] + (self.scale[1] - self.scale[0]) * random.random()
            image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
            if random.random() < self.rotate_p:
                angle = -self.rotate + 2 * self.rotate * random.random()
                h, w = label.shape
                m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
                image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=self.mean)
                label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=255)
            if random.random() < self.blur_p:
                image = cv2.GaussianBlur(image, (5, 5), 0)
            if random.random() < 0.5:
                image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        image, label = self._crop(image, label, center=not self.train)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose((2, 0, 1)))).float()
        for t, m, s in zip(x, self.mean, self.std, strict=True):
            t.sub_(m).div_(s)
        return x, torch.from_numpy(np.ascontiguousarray(label)).long()


def semseg_sliding(model, image: np.ndarray, crop: int, mean, std, device) -> np.ndarray:
    """``tool/test.py``'s ``scale_process`` + ``net_process`` (flip) of one float32 image."""
    import cv2

    h0, w0 = image.shape[:2]
    ph, pw = max(crop - h0, 0), max(crop - w0, 0)
    t, le = ph // 2, pw // 2
    if ph or pw:
        image = cv2.copyMakeBorder(image, t, ph - t, le, pw - le, cv2.BORDER_CONSTANT,
                                   value=mean)
    h, w = image.shape[:2]
    stride = int(math.ceil(crop * 2 / 3))
    gh, gw = int(math.ceil(float(h - crop) / stride) + 1), int(math.ceil(float(w - crop) /
                                                                         stride) + 1)
    pred, count = None, np.zeros((h, w), dtype=float)
    for r in range(gh):
        for c in range(gw):
            sh = min(r * stride, h - crop)
            sw = min(c * stride, w - crop)
            window = image[sh:sh + crop, sw:sw + crop].copy()
            x = torch.from_numpy(window.transpose((2, 0, 1))).float()
            for ch, m, s in zip(x, mean, std, strict=True):
                ch.sub_(m).div_(s)
            x = x.unsqueeze(0).to(device)
            x = torch.cat([x, x.flip(3)], 0)
            with torch.no_grad():
                out = F.softmax(logits_of(model, x), dim=1)
            out = ((out[0] + out[1].flip(2)) / 2).cpu().numpy().transpose(1, 2, 0)
            if pred is None:
                pred = np.zeros((h, w, out.shape[2]), dtype=float)
            pred[sh:sh + crop, sw:sw + crop] += out
            count[sh:sh + crop, sw:sw + crop] += 1
    pred /= np.expand_dims(count, 2)
    return pred[t:t + h0, le:le + w0].argmax(axis=2)


class SemsegReference:
    """``tool/train.py``'s training step and ``tool/test.py``'s evaluation of ``model``.

    Args:
        model: the network (on ``device``), its SelfNorm units with the official ops.
        optimizer: over ``model``'s parameters.
        train_set: ``(image, label)`` pairs (uint8 RGB, uint8 labels).
        val: the evaluation pairs.
        opts: the segmentation task options (``crop``, ``scale``, ``rotate``, ``rotate_p``,
            ``blur_p``, ``aux_weight``, ``eval.batch_size``).
        mean, std: normalization (of images in [0, 1]).
        batch_size: training images per step.
        workers: DataLoader workers.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_set,
                 val, opts, mean, std, batch_size: int, workers: int,
                 device: torch.device) -> None:
        self.crop, self.aux_weight = int(opts.crop), float(opts.aux_weight)
        train = SemsegReferenceSet(train_set, self.crop, tuple(float(v) for v in opts.scale),
                                   float(opts.rotate), float(opts.rotate_p),
                                   float(opts.blur_p), list(mean), list(std))
        self.batches = forever(torch.utils.data.DataLoader(
            train, batch_size=batch_size, shuffle=True, num_workers=workers,
            pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0))
        self.center = torch.utils.data.DataLoader(
            SemsegReferenceSet(val, self.crop, (1.0, 1.0), 0.0, 0.0, 0.0, list(mean), list(std),
                               train=False),
            batch_size=int(opts.eval.batch_size), num_workers=workers,
            persistent_workers=workers > 0)
        self.val, self.mean255, self.std255 = val, [255 * m for m in mean], [255 * s for s in std]
        self.model, self.optimizer, self.device = model, optimizer, device

    def train_step(self) -> None:
        x, y = next(self.batches)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        out = cn_forward(self.model, x)
        loss = F.cross_entropy(out["out"], y, ignore_index=255)
        if "aux" in out:
            loss = loss + self.aux_weight * F.cross_entropy(out["aux"], y, ignore_index=255)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def eval_center(self) -> None:
        """The centre crops, batched, and the confusion counts."""
        self.model.eval()
        with torch.no_grad():
            for x, y in self.center:
                pred = logits_of(self.model, x.to(self.device)).argmax(1)
                keep = y.to(self.device) != 255
                torch.bincount(y.to(self.device)[keep] * 19 + pred[keep], minlength=19 * 19)
        self.model.train()

    def eval_sliding(self) -> None:
        """The sliding window + flip of each image (:func:`semseg_sliding`) and the counts."""
        self.model.eval()
        for k in range(len(self.val)):
            image, label = self.val[k]
            pred = semseg_sliding(self.model, np.float32(image), self.crop, self.mean255,
                                  self.std255, self.device)
            keep = label != 255
            np.bincount(label[keep].astype(np.int64) * 19 + pred[keep], minlength=19 * 19)
        self.model.train()
