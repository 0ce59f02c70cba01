"""The training pipeline as the official CrossNorm/SelfNorm (and AugMix) CIFAR scripts run it.

Follows google-research/augmix ``cifar.py`` and ``augmentations.py`` (the CIFAR scripts of
the official CrossNorm/SelfNorm code build on them).

PIL images, torchvision transforms (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
``ToTensor``, ``Normalize``), per-sample AugMix with PIL ops and NumPy's global generator, a
``DataLoader`` with 2 worker processes, and SelfNorm computed with the official unfused ops
(``var`` and ``mean`` as separate autograd ops, then ``x * g``). snc does not train with it: it
is the baseline of ``scripts/bench.py`` and the reference of equivalence tests.

The SelfNorm and CrossNorm units of a model built by snc run here as the official code runs
them: :func:`use_official_ops` and :func:`cn_forward`.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import torch
from PIL import Image, ImageOps

from snc.augment.augmix import OPS
from snc.ops import SelfNorm


def official_selfnorm_forward(self: SelfNorm, x: torch.Tensor) -> torch.Tensor:
    """The official ``SelfNorm.forward`` (``calc_ins_mean_std`` + gate), for timing only."""
    n, c = x.shape[:2]
    flat = x.view(n, c, -1)
    std = (flat.var(dim=2) + self.eps).sqrt().view(n, c, 1)
    mean = flat.mean(dim=2).view(n, c, 1)
    g = torch.sigmoid(self.g_bn(self.g_fc(torch.cat((mean, std), -1)))).view(n, c, 1, 1)
    if self.gates == 1:
        return x * g.expand_as(x)
    f = torch.sigmoid(self.f_bn(self.f_fc(torch.cat((mean, std), -1)))).view(n, c, 1, 1)
    return x * g + mean.view(n, c, 1, 1) * (f - g)


def use_official_ops(model: torch.nn.Module) -> torch.nn.Module:
    """Makes every SelfNorm of ``model`` compute as the official code does."""
    for m in model.modules():
        if isinstance(m, SelfNorm):
            m.forward = types.MethodType(official_selfnorm_forward, m)
    return model


def pil_reference_op(op: str, img, level: float, sign: float):
    """AugMix op ``op`` at ``level`` on one PIL image, as ``augmentations.py`` computes it
    (``sign`` replaces its ``np.random.uniform() > 0.5`` negation)."""
    w, h = img.size
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "posterize":
        return ImageOps.posterize(img, 4 - int(level * 4 / 10))
    if op == "solarize":
        return ImageOps.solarize(img, 256 - int(level * 256 / 10))
    if op == "rotate":
        return img.rotate(int(level * 30 / 10) * sign, resample=Image.BILINEAR)
    shear = level * 0.3 / 10 * sign
    if op == "shear_x":
        return img.transform((w, h), Image.AFFINE, (1, shear, 0, 0, 1, 0), resample=Image.BILINEAR)
    if op == "shear_y":
        return img.transform((w, h), Image.AFFINE, (1, 0, 0, shear, 1, 0), resample=Image.BILINEAR)
    if op == "translate_x":
        t = int(level * (w / 3) / 10) * sign
        return img.transform((w, h), Image.AFFINE, (1, 0, t, 0, 1, 0), resample=Image.BILINEAR)
    if op == "translate_y":
        t = int(level * (h / 3) / 10) * sign
        return img.transform((w, h), Image.AFFINE, (1, 0, 0, 0, 1, t), resample=Image.BILINEAR)
    raise ValueError(op)


def cn_forward(model: torch.nn.Module, x: torch.Tensor):
    """``model(x)`` inside one step of the model's CrossNorm controller, if it has units."""
    ctrl = getattr(model, "cn_controller", None)
    with ctrl.step() if ctrl is not None and len(ctrl) else contextlib.nullcontext():
        return model(x)


def augmix_pil(image: Image.Image, preprocess, severity: int = 3, width: int = 3,
               depth: int = -1, alpha: float = 1.0) -> torch.Tensor:
    """AugMix of one PIL image as in google-research/augmix ``cifar.py``'s ``aug``."""
    ws = np.float32(np.random.dirichlet([alpha] * width))
    m = np.float32(np.random.beta(alpha, alpha))
    mix = torch.zeros_like(preprocess(image))
    for i in range(width):
        image_aug = image.copy()
        for _ in range(depth if depth > 0 else np.random.randint(1, 4)):
            op = OPS[np.random.randint(len(OPS))]
            level = np.random.uniform(0.1, severity)
            sign = -1.0 if np.random.uniform() > 0.5 else 1.0
            image_aug = pil_reference_op(op, image_aug, level, sign)
        mix += ws[i] * preprocess(image_aug)
    return (1 - m) * preprocess(image) + m * mix


class ReferenceDataset(torch.utils.data.Dataset):
    """uint8 ``(N, 32, 32, 3)`` arrays served as PIL images through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, augmix: bool = False,
                 severity: int = 3):
        import torchvision.transforms as T

        self.images, self.labels = images, labels
        self.preprocess = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        if augmix:  # official AugMix order: flip then crop on PIL, then the 3 views
            self.geometric = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4)])
        else:
            self.geometric = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
        self.augmix, self.severity = augmix, severity

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        img = self.geometric(Image.fromarray(self.images[i]))
        y = int(self.labels[i])
        if self.augmix:
            return (self.preprocess(img), augmix_pil(img, self.preprocess, self.severity),
                    augmix_pil(img, self.preprocess, self.severity)), y
        return self.preprocess(img), y


def reference_loader(images: np.ndarray, labels: np.ndarray, cfg, workers: int = 2):
    """The official-style training loader for ``cfg`` (batch size, normalization, AugMix).

    Like the official ``cifar.py`` loader it keeps the last, partial batch (``drop_last``
    false: 391 steps of an epoch at batch 128, the last of 80 images)."""
    ds = ReferenceDataset(images, labels, list(cfg.dataset.mean), list(cfg.dataset.std),
                          augmix=bool(cfg.augmix.enabled), severity=cfg.augmix.severity)
    return torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
        pin_memory=torch.cuda.is_available(), drop_last=False,
        persistent_workers=workers > 0)
