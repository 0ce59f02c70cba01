"""Batches of an in-memory uint8 image set, augmented and normalized where the data lives.

The whole set (CIFAR: 150 MB) sits on the training device once; each epoch is a seeded
permutation; random crop with zero padding, horizontal flip, AugMix and normalization run on
whole batches. No worker processes and no per-sample Python, so the same code is fast on a GPU
and deterministic on CPU. The augmentation distribution equals torchvision's
``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()`` (offsets uniform in
``[0, 2 * padding]``, flip with probability 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from snc.augment.augmix import AugMix, normalize

Inputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]
Batch = Tuple[Inputs, torch.Tensor]


def forever(loader: Iterable) -> Iterator:
    """The batches of ``loader``, epoch after epoch, without end."""
    while True:
        yield from loader


def model_inputs(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 augmix: Optional[AugMix], generator: torch.Generator,
                 channels_last: bool = False) -> Inputs:
    """A uint8 ``(B, C, H, W)`` batch as the model takes it: normalized, or with ``augmix`` the
    views ``(clean, augmix1, augmix2)``; channels-last on request. Shared by every loader."""
    if augmix is None:
        views: Tuple[torch.Tensor, ...] = (normalize(x, mean, std),)
    else:
        views = (normalize(x, mean, std), augmix(x, generator), augmix(x, generator))
    if channels_last:
        views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
    return views[0] if augmix is None else views


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
                     ) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip of a uint8 ``(B, H, W, C)`` batch."""
    b, h, w, _ = x.shape
    if padding > 0:
        x = torch.nn.functional.pad(x, (0, 0, padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)
        cols = ox[:, None] + torch.arange(w, device=x.device)
        x = x[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(2), x)
    return x


class IndexStream:
    """Index batches of ``n`` items: seeded permutations back to back, or (``replace=True``)
    uniform draws with replacement (``RandomSampler(replacement=True)``). Its state resumes a
    stream mid-permutation."""

    def __init__(self, n: int, seed: int, replace: bool = False) -> None:
        self.n, self.replace = n, replace
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))
        self.order = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def take(self, k: int) -> torch.Tensor:
        if self.replace:
            return torch.randint(0, self.n, (k,), generator=self.generator)
        parts = []
        while k > 0:
            if self.pos == self.n:
                self.order = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            step = min(k, self.n - self.pos)
            parts.append(self.order[self.pos:self.pos + step])
            self.pos += step
            k -= step
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.clone(),
                "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        if len(state["order"]) != self.n:
            raise ValueError(f"stream state is for {len(state['order'])} items, not {self.n}")
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.pos = int(state["pos"])


@dataclass
class ArrayLoader:
    """Iterates ``(inputs, labels)`` batches over uint8 ``(N, H, W, 3)`` images.

    Args:
        images: uint8 images (NumPy or tensor); moved to ``device`` once.
        labels: ``(N,)`` integer labels.
        batch_size: batch size.
        mean, std: normalization (0-1 scale).
        train: shuffle and augment (crop/flip); evaluation batches come in order, unaugmented.
        padding: crop padding (0: no crop).
        flip: random horizontal flip.
        augmix: if given, training batches are ``((clean, augmix1, augmix2), labels)``.
        drop_last: drop the last incomplete batch (default False, as the official loader).
        device: where the data lives and batches are made.
        seed: seed of the loader's generators (order; crops, flips and AugMix draws).
        channels_last: return batches in channels-last memory format.
        rank, world: this process's shard. ``batch_size`` is the global batch; each rank gets
            every ``world``-th sample of it (training) or of the set (evaluation, no padding).
    """

    images: Union[np.ndarray, torch.Tensor]
    labels: Union[np.ndarray, torch.Tensor]
    batch_size: int
    mean: Sequence[float]
    std: Sequence[float]
    train: bool = False
    padding: int = 4
    flip: bool = True
    augmix: Optional[AugMix] = None
    drop_last: bool = False
    device: Union[str, torch.device] = "cpu"
    seed: int = 0
    channels_last: bool = False
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.images):
            array = np.asarray(self.images)
            # memory-mapped or read-only arrays are copied: torch needs writable memory
            self.images = torch.from_numpy(array if array.flags.writeable else array.copy())
        # pinned host memory (a corrupted block read ahead) is copied without blocking
        self.images = self.images.to(self.device, non_blocking=self.images.is_pinned())
        self.labels = torch.as_tensor(np.asarray(self.labels, dtype=np.int64)
                                      if not torch.is_tensor(self.labels)
                                      else self.labels).long().to(self.device)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"ArrayLoader takes uint8 (N, H, W, C) images, got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self._mean = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)
        # the order is drawn identically on every rank; augmentation draws differ per rank
        self.order_generator = torch.Generator()
        self.order_generator.manual_seed(self.seed)
        self.generator = torch.Generator()
        self.generator.manual_seed(self.seed + 7919 * self.rank)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per pass."""
        return len(range(self.rank, len(self.images), self.world))

    @property
    def total_samples(self) -> int:
        """Samples over all ranks per pass (the dataset size)."""
        return len(self.images)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.images)
        order = (torch.randperm(n, generator=self.order_generator).to(self.device)
                 if self.train else torch.arange(n, device=self.device))
        for i in range(len(self)):
            idx = order[i * self.batch_size:min(n, (i + 1) * self.batch_size)]
            if self.world > 1:
                idx = idx[self.rank::self.world]
                if len(idx) == 0:
                    continue
            x, y = self.images[idx], self.labels[idx]
            if self.train:
                x = random_crop_flip(x, self.padding, self.flip, self.generator)
            augmix = self.augmix if self.train else None
            yield model_inputs(x.permute(0, 3, 1, 2), self._mean, self._std, augmix,
                               self.generator, self.channels_last), y

    def state_dict(self) -> dict:
        """The generator states: order, crops, flips and AugMix draws of the next epoch."""
        return {"order": self.order_generator.get_state(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order_generator.set_state(state["order"])
        self.generator.set_state(state["generator"])
