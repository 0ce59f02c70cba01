"""FixMatch data: the labeled split and the infinite, resumable stream of training batches.

Reference: kekmodel/FixMatch-pytorch @040be3b (``dataset/cifar.py``: ``x_u_split``,
``TransformFixMatch``; ``train.py``: the two loaders).

- Labeled subset: NumPy's legacy RNG seeded with ``seed`` right before the draw; per class
  ``c = 0 .. C-1`` in order, ``labels / C`` indices drawn **without replacement** from that
  class's indices (``np.random.choice(idx, k, False)``). Every training image is also
  unlabeled, the labeled ones included (FixMatch-pytorch issue #10).
- Each step: ``batch_size`` labeled images (weak view) and ``mu * batch_size`` unlabeled images,
  each with a weak and a strong view. Both streams walk through seeded permutations of their
  index sets, one after the other, and a batch may straddle two permutations. The reference
  instead tiles the labeled list to ``64 * 1024`` entries and drops the incomplete last
  batch of each pass; the draws have the same distribution up to those boundary effects.

The images live on the training device as uint8 once; augmentations run on whole batches
(:mod:`snc.augment.randaugment`), all draws from seeded CPU generators.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from snc.atomic import atomic_open
from snc.augment.augmix import normalize
from snc.augment.randaugment import RandAugmentMC, weak_augment
from snc.data.loader import IndexStream
from snc.errors import ConfigError

STRONG = ("randaugment", "weak")


def labeled_split(labels: Sequence[int], num_labeled: int, num_classes: int, seed: int
                  ) -> np.ndarray:
    """The reference labeled draw (``x_u_split`` after ``set_seed``), in draw order.

    Args:
        labels: ``(N,)`` training labels.
        num_labeled: total labeled images, divisible by ``num_classes``.
        num_classes: classes ``0 .. C-1``.
        seed: the seed of ``np.random.seed`` before the draw (the paper: 1).

    Returns:
        ``(num_labeled,)`` int64 indices, class 0's first.

    Raises:
        ConfigError: if ``num_labeled`` is not a positive multiple of ``num_classes`` or a
            class has fewer images than ``num_labeled / num_classes``.
    """
    labels = np.asarray(labels)
    if num_labeled < num_classes or num_labeled % num_classes:
        raise ConfigError(f"task.labels={num_labeled} must be a positive multiple of the "
                          f"{num_classes} classes (e.g. task.labels={num_classes * 25})")
    per_class = num_labeled // num_classes
    rng = np.random.RandomState(seed)  # == np.random.seed(seed) + np.random.choice
    out: List[np.ndarray] = []
    for c in range(num_classes):
        idx = np.where(labels == c)[0]
        if len(idx) < per_class:
            raise ConfigError(f"task.labels={num_labeled} asks for {per_class} images of class "
                              f"{c}, which has only {len(idx)}: use task.labels <= "
                              f"{num_classes * min(np.bincount(labels, minlength=num_classes))}")
        out.append(rng.choice(idx, per_class, False))
    return np.concatenate(out).astype(np.int64)


def indices_digest(indices: np.ndarray) -> str:
    """SHA-256 of the int64 index array (identifies a labeled subset)."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def save_split(path: Union[str, Path], indices: np.ndarray, labels: np.ndarray, *,
               seed: int, num_classes: int) -> None:
    """Writes the labeled subset as JSON: indices in draw order, their labels, seed, digest."""
    record = {"num_labeled": int(len(indices)), "seed": int(seed),
              "num_classes": int(num_classes),
              "rule": "FixMatch-pytorch x_u_split: np.random.seed(seed), then per class "
                      "np.random.choice(class indices, labels // classes, replace=False)",
              "sha256": indices_digest(indices), "indices": [int(i) for i in indices],
              "labels": [int(labels[i]) for i in indices]}
    with atomic_open(path, "w") as f:
        json.dump(record, f, indent=1)


class FixMatchBatch(NamedTuple):
    """One training step's inputs (normalized float on the device).

    Attributes:
        labeled: ``(B, 3, H, W)`` weak views of the labeled images.
        targets: ``(B,)`` their labels.
        weak: ``(mu B, 3, H, W)`` weak views of the unlabeled images.
        strong: ``(mu B, 3, H, W)`` strong views of the same images.
        unlabeled_targets: ``(mu B,)`` their true labels (for logging only).
    """

    labeled: torch.Tensor
    targets: torch.Tensor
    weak: torch.Tensor
    strong: torch.Tensor
    unlabeled_targets: torch.Tensor


class FixMatchStream:
    """The infinite stream of :class:`FixMatchBatch` (``iter(stream)`` is the stream itself).

    Args:
        images: uint8 ``(N, H, W, 3)`` training images (all of them are unlabeled data).
        labels: ``(N,)`` their labels.
        labeled_indices: the labeled subset.
        batch_size: labeled images per step (reference: 64).
        mu: unlabeled images per labeled image (reference: 7).
        mean, std: normalization (0-1 scale).
        strong: ``randaugment`` (RandAugmentMC(2, 10) + Cutout, FixMatch "RA") or ``weak``
            (the strong branch is a second weak view: the paper's "WA").
        padding: weak crop padding (reference: ``int(32 * 0.125)`` = 4, reflect).
        device: where the images live and batches are made.
        seed: seed of the order and augmentation generators.
        rank, world: this process's shard: each rank gets every ``world``-th image of each
            global batch (same order on every rank, augmentation draws per rank).
        steps_per_epoch: ``len(stream)``; default one pass over the unlabeled set.

    ``state_dict()`` between two batches and ``load_state_dict()`` into a fresh stream over
    the same data give the same following batches.
    """

    def __init__(self, images: Union[np.ndarray, torch.Tensor], labels, labeled_indices,
                 batch_size: int = 64, mu: int = 7, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), strong: str = "randaugment",
                 padding: int = 4, device: Union[str, torch.device] = "cpu", seed: int = 0,
                 rank: int = 0, world: int = 1, steps_per_epoch: Optional[int] = None) -> None:
        if strong not in STRONG:
            raise ConfigError(f"task.strong={strong!r}; choose one of {', '.join(STRONG)}")
        if not torch.is_tensor(images):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"FixMatchStream takes uint8 (N, H, W, C) images, got "
                             f"{images.dtype} {tuple(images.shape)}")
        self.device = torch.device(device)
        # (N, C, H, W) once, so that batches need no permute
        self.images = images.to(self.device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.labeled_indices = torch.as_tensor(np.asarray(labeled_indices, dtype=np.int64))
        self.batch_size, self.mu, self.strong, self.padding = batch_size, mu, strong, padding
        self.rank, self.world = rank, world
        self._mean = torch.tensor(list(mean), device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(list(std), device=self.device).view(1, -1, 1, 1)
        self.randaugment = RandAugmentMC(2, 10) if strong == "randaugment" else None
        n = len(self.images)
        self.steps_per_epoch = steps_per_epoch or max(1, n // (mu * batch_size))
        # order streams are identical on every rank; augmentation draws differ per rank
        self.labeled_stream = IndexStream(len(self.labeled_indices), seed)
        self.unlabeled_stream = IndexStream(n, seed + 1)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed + 2 + 7919 * rank)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> "FixMatchStream":
        return self

    def _shard(self, idx: torch.Tensor) -> torch.Tensor:
        return idx[self.rank::self.world] if self.world > 1 else idx

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self._mean, self._std)

    def __next__(self) -> FixMatchBatch:
        lab = self.labeled_indices[self._shard(self.labeled_stream.take(self.batch_size))]
        unl = self._shard(self.unlabeled_stream.take(self.mu * self.batch_size))
        lab, unl = lab.to(self.device), unl.to(self.device)
        g = self.generator
        xl = weak_augment(self.images[lab], g, self.padding)
        xu = self.images[unl]
        weak = weak_augment(xu, g, self.padding)
        strong = weak_augment(xu, g, self.padding)
        if self.randaugment is not None:
            strong = self.randaugment(strong, g)
        return FixMatchBatch(self._norm(xl), self.labels[lab], self._norm(weak),
                             self._norm(strong), self.labels[unl])

    def state_dict(self) -> Dict[str, object]:
        """Both streams' positions and permutations and the augmentation generator."""
        return {"labeled": self.labeled_stream.state_dict(),
                "unlabeled": self.unlabeled_stream.state_dict(),
                "generator": self.generator.get_state(),
                "labeled_sha256": indices_digest(self.labeled_indices.numpy())}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        digest = indices_digest(self.labeled_indices.numpy())
        if state.get("labeled_sha256", digest) != digest:
            raise ValueError("the saved stream was drawn over a different labeled subset "
                             "(task.labels / task.label_seed changed): start a new run")
        self.labeled_stream.load_state_dict(state["labeled"])
        self.unlabeled_stream.load_state_dict(state["unlabeled"])
        self.generator.set_state(state["generator"])


__all__ = ["FixMatchBatch", "FixMatchStream", "STRONG", "indices_digest", "labeled_split",
           "save_split"]
