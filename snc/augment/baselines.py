"""Table 1 baseline augmentations on normalized training batches, on the batch's device.

The ``augment`` config group (``none`` | ``cutout`` | ``mixup`` | ``cutmix`` | ``autoaugment``
| ``adversarial``) acts on the ``(B, C, H, W)`` float batch the loader yields (after random
crop, flip and normalization), in ``Classify.training_step``, before the objective. Every draw
comes from one seeded ``torch.Generator`` (checkpointed by the task), never from the global
torch or NumPy RNG; ``augment=none`` builds nothing and draws nothing.

- ``cutout``: DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with
  Cutout", arXiv:1708.04552; reference uoguelph-mlrg/Cutout ``util/cutout.py``: one
  ``size x size`` square per image, centre uniform over all pixels, clipped at the border,
  zeroed *after* normalization (the reference appends Cutout after ``Normalize``).
- ``mixup``: Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018; reference
  facebookresearch/mixup-cifar10 ``train.py``: one ``lam ~ Beta(alpha, alpha)`` per batch,
  ``x = lam * x + (1 - lam) * x[perm]``, loss ``lam * CE(y) + (1 - lam) * CE(y[perm])``.
- ``cutmix``: Yun et al., "CutMix", ICCV 2019; reference clovaai/CutMix-PyTorch ``train.py``:
  with probability ``prob`` one ``lam ~ Beta(alpha, alpha)`` per batch, a box of side
  ``int(side * sqrt(1 - lam))`` centred uniformly, clipped, pasted from ``x[perm]``; ``lam`` is
  then recomputed as ``1 - box area / image area``.
- ``autoaugment``: Cubuk et al., "AutoAugment", CVPR 2019, the CIFAR-10 policy (25 sub-policies)
  as torchvision.transforms.v2.AutoAugment defines it, ops and magnitudes included; applied on
  the uint8 image recovered exactly from the normalized batch, then normalized again.
- ``adversarial``: PGD l_inf (Madry et al., "Towards Deep Learning Models Resistant to
  Adversarial Attacks", ICLR 2018) in pixel units, within the valid image range.

Why our own code rather than torchvision.transforms.v2 ``MixUp`` / ``CutMix`` / ``AutoAugment``
called on the batch: those draw from the global torch RNG (no generator argument, so resume
and DDP per-rank streams are not ours to control), v2 ``AutoAugment`` applies *one* sub-policy
to a whole batch (the method draws one per image), and v2 ``MixUp``/``CutMix`` return one-hot
soft targets, where the references' ``lam * CE(a) + (1 - lam) * CE(b)`` is the same loss and
keeps integer labels (CN objectives, label smoothing-free CE). The AutoAugment ops themselves
*are* torchvision's (``_apply_image_or_video_transform`` on each group of images that drew the
same sub-policy step and sign).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

AUGMENTS = ("none", "cutout", "mixup", "cutmix", "autoaugment", "adversarial")
# options that turn the labels into MixedLabels (need an objective that takes them)
MIXED_LABEL_AUGMENTS = ("mixup", "cutmix")


class MixedLabels(NamedTuple):
    """Labels of a mixed batch: the loss is ``lam * CE(logits, a) + (1 - lam) * CE(logits, b)``
    (equal to CE against the soft target ``lam * onehot(a) + (1 - lam) * onehot(b)``)."""

    a: torch.Tensor
    b: torch.Tensor
    lam: float

    def soft(self, num_classes: int) -> torch.Tensor:
        """The ``(B, num_classes)`` soft target."""
        return (self.lam * F.one_hot(self.a, num_classes).float()
                + (1 - self.lam) * F.one_hot(self.b, num_classes).float())


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A NumPy generator seeded from ``generator`` (for Beta draws, which torch cannot seed)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """One ``lam ~ Beta(alpha, alpha)``."""
    return float(_numpy_rng(generator).beta(alpha, alpha))


# ----- Cutout ----------------------------------------------------------------------------------
def cutout_boxes(batch: int, height: int, width: int, size: int, generator: torch.Generator
                 ) -> torch.Tensor:
    """``(B, 4)`` boxes ``(y1, y2, x1, x2)`` (end exclusive) as the reference draws them: centre
    uniform in the image, ``y1 = clip(cy - size // 2, 0, H)``, ``y2 = clip(cy + size // 2, 0, H)``
    (same for x)."""
    cy = torch.randint(0, height, (batch,), generator=generator)
    cx = torch.randint(0, width, (batch,), generator=generator)
    half = size // 2
    return torch.stack(((cy - half).clamp(0, height), (cy + half).clamp(0, height),
                        (cx - half).clamp(0, width), (cx + half).clamp(0, width)), dim=1)


def box_mask(boxes: torch.Tensor, height: int, width: int, device=None) -> torch.Tensor:
    """``(B, 1, H, W)`` bool mask, True inside each image's box ``(y1, y2, x1, x2)``."""
    boxes = boxes.to(device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_y = (rows[None] >= boxes[:, 0:1]) & (rows[None] < boxes[:, 1:2])  # (B, H)
    inside_x = (cols[None] >= boxes[:, 2:3]) & (cols[None] < boxes[:, 3:4])  # (B, W)
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None]


class Cutout:
    """Zeroes one ``size x size`` square (clipped at the border) of each normalized image.

    Args:
        size: side of the square in pixels (16: the Cutout paper's CIFAR-10 setting).
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x: (B, C, H, W)`` float -> the same with the squares set to 0."""
        b, _, h, w = x.shape
        mask = box_mask(cutout_boxes(b, h, w, self.size, generator), h, w, x.device)
        return x.masked_fill(mask, 0.0)


# ----- Mixup / CutMix --------------------------------------------------------------------------
class Mixup:
    """``x = lam * x + (1 - lam) * x[perm]`` with one ``lam ~ Beta(alpha, alpha)`` per batch."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                 ) -> Tuple[torch.Tensor, MixedLabels]:
        lam = sample_lambda(self.alpha, generator)
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        return lam * x + (1 - lam) * x[perm], MixedLabels(y, y[perm], lam)


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator
               ) -> Tuple[int, int, int, int]:
    """The reference ``rand_bbox``: ``(y1, y2, x1, x2)`` of side ``int(side * sqrt(1 - lam))``
    centred uniformly in the image, clipped at the border."""
    ratio = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y1, y2 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    x1, x2 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return y1, y2, x1, x2


class CutMix:
    """With probability ``prob``: one box of ``x[perm]`` pasted into every image of the batch,
    ``lam = 1 - box area / image area``; otherwise the batch and labels are unchanged."""

    def __init__(self, alpha: float = 1.0, prob: float = 1.0) -> None:
        self.alpha, self.prob = alpha, prob

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                 ) -> Tuple[torch.Tensor, object]:
        if float(torch.rand((), generator=generator)) >= self.prob:
            return x, y
        lam = sample_lambda(self.alpha, generator)
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        h, w = x.shape[-2:]
        y1, y2, x1, x2 = cutmix_box(h, w, lam, generator)
        x = x.clone()
        x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
        lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
        return x, MixedLabels(y, y[perm], lam)


# ----- AutoAugment -----------------------------------------------------------------------------
def to_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`snc.augment.augmix.normalize`: exact for batches it produced (the float
    error is far below half a grey level)."""
    return ((x.float() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


class AutoAugment:
    """The CIFAR-10 AutoAugment policy, one sub-policy drawn per image.

    Per image: a sub-policy uniform over the 25; each of its two ops applied with the op's
    probability, signed ops negated with probability 1/2 — torchvision v2 ``AutoAugment.forward``
    per image, with nearest interpolation and zero fill (its defaults).
    """

    def __init__(self, policy: str = "cifar10") -> None:
        from torchvision.transforms.v2 import AutoAugment as TVAutoAugment
        from torchvision.transforms.v2 import AutoAugmentPolicy

        policies = {"cifar10": AutoAugmentPolicy.CIFAR10, "imagenet": AutoAugmentPolicy.IMAGENET,
                    "svhn": AutoAugmentPolicy.SVHN}
        if policy not in policies:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; choose from "
                             f"{', '.join(policies)}")
        self.transform = TVAutoAugment(policies[policy])
        self.policies = self.transform._policies

    def draw(self, batch: int, generator: torch.Generator
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sub_policy (B,), applied (B, 2) bool, negated (B, 2) bool)``."""
        sub = torch.randint(len(self.policies), (batch,), generator=generator)
        probs = torch.tensor([[op[1] for op in p] for p in self.policies])[sub]
        applied = torch.rand(batch, 2, generator=generator) <= probs
        negated = torch.rand(batch, 2, generator=generator) <= 0.5
        return sub, applied, negated

    def augment_uint8(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> uint8, each image through its own sub-policy."""
        sub, applied, negated = self.draw(len(x), generator)
        h, w = x.shape[-2:]
        out = x.clone()
        tf = self.transform
        for step in range(2):
            for k, policy in enumerate(self.policies):
                name, _, magnitude_idx = policy[step]
                magnitudes_fn, signed = tf._AUGMENTATION_SPACE[name]
                magnitudes = magnitudes_fn(10, h, w)
                magnitude = 0.0 if magnitudes is None else float(magnitudes[magnitude_idx])
                chosen = (sub == k) & applied[:, step]
                for sign in ((False, True) if signed and magnitude != 0.0 else (None,)):
                    sel = chosen if sign is None else chosen & (negated[:, step] == sign)
                    idx = torch.nonzero(sel).flatten()
                    if len(idx) == 0:
                        continue
                    m = -magnitude if sign else magnitude
                    idx = idx.to(x.device)
                    out[idx] = tf._apply_image_or_video_transform(
                        out[idx], name, m, interpolation=tf.interpolation, fill=tf._fill)
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator, mean: torch.Tensor,
                 std: torch.Tensor) -> torch.Tensor:
        """Normalized float ``(B, 3, H, W)`` -> normalized float, augmented."""
        images = self.augment_uint8(to_uint8(x, mean, std), generator)
        return (images.float() / 255 - mean) / std


# ----- PGD -------------------------------------------------------------------------------------
def pgd_linf(model, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float,
             steps: int, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator,
             random_start: bool = True) -> torch.Tensor:
    """PGD l_inf adversarial examples of a normalized batch (Madry et al. 2018).

    ``epsilon``/``step_size`` are in pixel units on the 0-1 scale (8/255: 8 grey levels); the
    perturbation is kept within ``epsilon`` of ``x`` and the image within [0, 1], both in the
    normalized space the model takes. The loss maximized is CE of ``model(x + delta)``; only
    ``delta`` gets gradients (``torch.autograd.grad``: parameter ``.grad`` untouched). The model
    is used in its current mode (training: as Madry et al. train).

    Args:
        x: ``(B, C, H, W)`` normalized images; y: ``(B,)`` labels.
        mean, std: ``(1, C, 1, 1)`` normalization of ``x`` (0-1 scale).

    Returns:
        The ``(B, C, H, W)`` adversarial batch (detached).
    """
    x = x.detach()
    eps = epsilon / std
    step = step_size / std
    lo, hi = (0 - mean) / std, (1 - mean) / std
    if random_start:
        noise = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1
        delta = noise * eps
    else:
        delta = torch.zeros_like(x)
    delta = (torch.max(torch.min(x + delta, hi), lo) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach() + step * grad.sign()
        delta = torch.max(torch.min(delta, eps), -eps)
        delta = (torch.max(torch.min(x + delta, hi), lo) - x).detach()
    return (x + delta).detach()


# ----- the config option -----------------------------------------------------------------------
class BatchAugment:
    """The ``augment`` option applied to a training batch ``(x, y)``.

    Args:
        name: one of AUGMENTS except ``none``.
        options: the group's fields (size, alpha, prob, policy, epsilon, step_size, steps).
        mean, std: the dataset's normalization (0-1 scale).
        seed: seed of the augmentation generator.
        channels_last: return inputs in channels-last memory format.
    """

    def __init__(self, name: str, options: dict, mean: Sequence[float], std: Sequence[float],
                 seed: int, device, channels_last: bool = False) -> None:
        self.name = name
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.channels_last = channels_last
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.options = options
        if name == "cutout":
            self.op = Cutout(int(options["size"]))
        elif name == "mixup":
            self.op = Mixup(float(options["alpha"]))
        elif name == "cutmix":
            self.op = CutMix(float(options["alpha"]), float(options["prob"]))
        elif name == "autoaugment":
            self.op = AutoAugment(options["policy"])
        elif name == "adversarial":
            self.op = None
        else:
            raise ValueError(f"unknown augment {name!r}")

    def __call__(self, model, batch) -> Tuple[torch.Tensor, object]:
        x, y = batch
        g = self.generator
        if self.name == "cutout":
            x = self.op(x, g)
        elif self.name in MIXED_LABEL_AUGMENTS:
            x, y = self.op(x, y, g)
        elif self.name == "autoaugment":
            x = self.op(x, g, self.mean, self.std)
        else:
            o = self.options
            # the attack's forwards/backwards bypass DDP (no gradient all-reduce for them)
            if isinstance(model, torch.nn.parallel.DistributedDataParallel):
                model = model.module
            x = pgd_linf(model, x, y, epsilon=float(o["epsilon"]),
                         step_size=float(o["step_size"]), steps=int(o["steps"]),
                         mean=self.mean, std=self.std, generator=g,
                         random_start=bool(o.get("random_start", True)))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def check_options(name: str, options: dict) -> Optional[str]:
    """The problem with an ``augment`` option's values (a message naming the fix), or None."""
    if name not in AUGMENTS:
        return f"unknown augment {name!r}; choose one of {', '.join(AUGMENTS)} (augment=<name>)"
    if name == "cutout" and not int(options.get("size", 0)) > 0:
        return f"augment.size must be a positive number of pixels, got {options.get('size')}"
    if name in ("mixup", "cutmix") and not float(options.get("alpha", 0)) > 0:
        return (f"augment={name} needs augment.alpha > 0 (Beta(alpha, alpha)), got "
                f"{options.get('alpha')}; the references use alpha=1")
    if name == "cutmix" and not 0 < float(options.get("prob", -1)) <= 1:
        return f"augment.prob must lie in (0, 1], got {options.get('prob')}"
    if name == "autoaugment" and options.get("policy") not in ("cifar10", "imagenet", "svhn"):
        return (f"unknown augment.policy {options.get('policy')!r}; choose cifar10, imagenet "
                "or svhn")
    if name == "adversarial":
        eps, step, steps = (options.get(k) for k in ("epsilon", "step_size", "steps"))
        if eps is None or step is None or steps is None or float(eps) <= 0 \
                or float(step) <= 0 or int(steps) < 1:
            return ("augment=adversarial needs epsilon > 0, step_size > 0 and steps >= 1, got "
                    f"epsilon={eps}, step_size={step}, steps={steps}")
    return None


__all__ = ["AUGMENTS", "MIXED_LABEL_AUGMENTS", "AutoAugment", "BatchAugment", "CutMix",
           "Cutout", "MixedLabels", "Mixup", "check_options", "cutmix_box", "cutout_boxes",
           "pgd_linf", "sample_lambda", "to_uint8"]
