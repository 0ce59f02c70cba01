"""FixMatch training as kekmodel/FixMatch-pytorch runs it (``train.py``, ``dataset/cifar.py``,
``dataset/randaugment.py``, ``models/ema.py``).

Per-sample PIL augmentation in DataLoader workers (a labeled loader of weak views, an
unlabeled loader of weak + strong views: flip, reflect-padded crop, RandAugmentMC(2, 10),
Cutout 16), ``interleave``/``de_interleave`` around one forward of all images, fp32, the
pseudo-label loss with the confidence mask, and the per-tensor ``state_dict`` EMA. snc's
device pipeline (:mod:`snc.augment.randaugment`, :mod:`snc.tasks.fixmatch`) is compared with it.
"""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snc.augment.randaugment import OPS, PARAMETER_MAX, POOL
from snc.data.loader import forever
from snc.reference.cifar import cn_forward


def interleave(x: torch.Tensor, size: int) -> torch.Tensor:
    """``train.py``'s ``interleave``: rows reordered so each BatchNorm chunk mixes the sets."""
    s = list(x.shape)
    return x.reshape([-1, size] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


def de_interleave(x: torch.Tensor, size: int) -> torch.Tensor:
    """The inverse of :func:`interleave`."""
    s = list(x.shape)
    return x.reshape([size, -1] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


def pil_reference_op(op: str, img, v: int, sign: float = 1.0):
    """``fixmatch_augment_pool`` op ``op`` at magnitude ``v`` on one PIL image, as
    ``dataset/randaugment.py`` computes it (``sign`` replaces its ``random.random() < 0.5``
    negation)."""
    import PIL.ImageEnhance as E
    import PIL.ImageOps as O
    from PIL import Image

    max_v, bias = {name: (mv, b) for name, mv, b in POOL}[op]
    fval = float(v) * max_v / PARAMETER_MAX + bias
    ival = int(v * max_v / PARAMETER_MAX) + bias
    if op == "identity":
        return img
    if op == "autocontrast":
        return O.autocontrast(img)
    if op == "equalize":
        return O.equalize(img)
    if op == "brightness":
        return E.Brightness(img).enhance(fval)
    if op == "color":
        return E.Color(img).enhance(fval)
    if op == "contrast":
        return E.Contrast(img).enhance(fval)
    if op == "sharpness":
        return E.Sharpness(img).enhance(fval)
    if op == "posterize":
        return O.posterize(img, int(ival))
    if op == "solarize":
        return O.solarize(img, 256 - int(ival))
    if op == "rotate":
        return img.rotate(int(ival) * sign)
    value = float(v) * max_v / PARAMETER_MAX * sign
    if op == "shear_x":
        return img.transform(img.size, Image.AFFINE, (1, value, 0, 0, 1, 0))
    if op == "shear_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, value, 1, 0))
    if op == "translate_x":
        return img.transform(img.size, Image.AFFINE, (1, 0, int(value * img.size[0]), 0, 1, 0))
    if op == "translate_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, int(value * img.size[1])))
    raise ValueError(op)


def pil_cutout(img, x0: float, y0: float, size: int = 16):
    """``CutoutAbs`` with the centre ``(x0, y0)`` given."""
    from PIL import ImageDraw

    w, h = img.size
    x0 = int(max(0, x0 - size / 2.0))
    y0 = int(max(0, y0 - size / 2.0))
    x1 = int(min(w, x0 + size))
    y1 = int(min(h, y0 + size))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (127, 127, 127))
    return img


def pil_randaugment_mc(img, rng, n: int = 2, m: int = 10, cutout_size: int = 16):
    """``RandAugmentMC`` on one PIL image with a ``random.Random``-like ``rng`` (the public
    code draws from Python's and NumPy's global RNGs)."""
    for _ in range(n):
        op = OPS[rng.randrange(len(OPS))]
        v = rng.randrange(1, m)
        if rng.random() < 0.5:
            img = pil_reference_op(op, img, v, -1.0 if rng.random() < 0.5 else 1.0)
    w, h = img.size
    return pil_cutout(img, rng.uniform(0, w), rng.uniform(0, h), cutout_size)


class FixMatchReferenceSet(torch.utils.data.Dataset):
    """``CIFAR10SSL`` + ``TransformFixMatch``: PIL weak (flip, reflect-padded crop) and strong
    (weak + RandAugmentMC(2, 10) + Cutout 16) views, ToTensor + Normalize."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, mean, std,
                 strong: Optional[str], padding: int) -> None:
        import torchvision.transforms as T

        self.images, self.labels, self.indices = images, labels, indices
        self.weak = T.Compose([T.RandomHorizontalFlip(),
                               T.RandomCrop(size=32, padding=padding, padding_mode="reflect")])
        self.normalize = T.Compose([T.ToTensor(), T.Normalize(mean=mean, std=std)])
        self.strong = strong  # None: labeled set (one weak view)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        from PIL import Image

        k = int(self.indices[i])
        img, y = Image.fromarray(self.images[k]), int(self.labels[k])
        if self.strong is None:
            return self.normalize(self.weak(img)), y
        weak = self.weak(img)
        strong = self.weak(img)
        if self.strong == "randaugment":  # Python's global RNG, as the public code
            strong = pil_randaugment_mc(strong, random, n=2, m=10)
        return (self.normalize(weak), self.normalize(strong)), y


class ModelEMA:
    """``models/ema.py``'s ``ModelEMA.update``: per tensor over ``state_dict()``."""

    def __init__(self, ema: torch.nn.Module, decay: float) -> None:
        self.ema, self.decay = ema, decay
        self.param_keys = [k for k, _ in ema.named_parameters()]
        self.buffer_keys = [k for k, _ in ema.named_buffers()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        msd, esd = model.state_dict(), self.ema.state_dict()
        for k in self.param_keys:
            esd[k].copy_(esd[k] * self.decay + (1.0 - self.decay) * msd[k].detach())
        for k in self.buffer_keys:
            esd[k].copy_(msd[k])


class FixMatchReference:
    """``train.py``'s training step: a labeled and an unlabeled batch from their loaders,
    one interleaved forward of all ``(1 + 2 mu) * batch_size`` images, the supervised loss
    plus ``lambda_u`` times the masked pseudo-label loss, the update and the EMA update.

    Args:
        model, ema_model: the network and its EMA copy (on ``device``).
        optimizer: over ``model``'s parameters.
        images, labels: the training set (uint8 ``(N, 32, 32, 3)``, int labels).
        labeled: indices of the labeled images.
        mean, std: normalization.
        opts: ``mu``, ``strong``, ``crop_padding``, ``temperature``, ``threshold``,
            ``lambda_u``, ``ema_decay`` (the FixMatch task options).
        batch_size: labeled images per step.
        workers: DataLoader workers per loader.
    """

    def __init__(self, model: torch.nn.Module, ema_model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, images: np.ndarray, labels: np.ndarray,
                 labeled: np.ndarray, mean, std, opts, batch_size: int, workers: int,
                 device: torch.device) -> None:
        b, mu = batch_size, int(opts.mu)
        common = dict(num_workers=workers, pin_memory=device.type == "cuda", drop_last=True,
                      persistent_workers=workers > 0)
        labeled_loader = torch.utils.data.DataLoader(
            FixMatchReferenceSet(images, labels, labeled, mean, std, None, opts.crop_padding),
            batch_size=b, sampler=torch.utils.data.RandomSampler(
                range(len(labeled)), replacement=True, num_samples=b * 10_000), **common)
        unlabeled_loader = torch.utils.data.DataLoader(
            FixMatchReferenceSet(images, labels, np.arange(len(images)), mean, std, opts.strong,
                                 opts.crop_padding),
            batch_size=b * mu, shuffle=True, **common)
        self.labeled, self.unlabeled = forever(labeled_loader), forever(unlabeled_loader)
        self.model, self.optimizer, self.device = model, optimizer, device
        self.ema = ModelEMA(ema_model, float(opts.ema_decay))
        self.b, self.mu, self.opts = b, mu, opts

    def step(self) -> None:
        b, mu, o = self.b, self.mu, self.opts
        inputs_x, targets_x = next(self.labeled)
        (inputs_w, inputs_s), _ = next(self.unlabeled)
        inputs = interleave(torch.cat((inputs_x, inputs_w, inputs_s)), 2 * mu + 1)
        inputs, targets_x = inputs.to(self.device), targets_x.to(self.device)
        logits = de_interleave(cn_forward(self.model, inputs), 2 * mu + 1)
        logits_x = logits[:b]
        logits_w, logits_s = logits[b:].chunk(2)
        lx = F.cross_entropy(logits_x, targets_x, reduction="mean")
        probs = torch.softmax(logits_w.detach() / o.temperature, dim=-1)
        max_probs, targets_u = torch.max(probs, dim=-1)
        mask = max_probs.ge(o.threshold).float()
        lu = (F.cross_entropy(logits_s, targets_u, reduction="none") * mask).mean()
        loss = lx + o.lambda_u * lu
        loss.backward()
        self.optimizer.step()
        self.ema.update(self.model)
        self.model.zero_grad()
