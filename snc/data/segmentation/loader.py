"""Resumable batches of image/label pairs, decoded and transformed by worker processes.

Each epoch is a permutation drawn from a generator seeded with ``(seed, epoch)``; each sample's
augmentation from a generator seeded with ``(seed, epoch, index)``. So the batches of an epoch
are a pure function of (seed, epoch): they do not depend on the number of workers or their
scheduling, and :meth:`SegmentationLoader.load_state_dict` (epoch, batches already consumed)
restarts mid-epoch on exactly the batch that comes next. The heavy work (PNG decode, scale,
rotation, blur, crop) runs per sample in ``workers`` processes on uint8 data; normalization
runs on the training device on the whole batch (see :func:`transforms.normalize`).

Batches: ``(images (B, 3, crop, crop) uint8, labels (B, crop, crop) int64)``. Under DDP,
in training ``batch_size`` is the global batch and each rank takes every ``world``-th sample of
it; in evaluation each rank takes every ``world``-th sample of the set (no padding, so summed
counts are exact).
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
               % (2**63 - 1))


class _Samples(torch.utils.data.Dataset):
    """Index ``(i, seed)`` -> the transformed pair ``i`` drawn with ``seed``."""

    def __init__(self, dataset, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        i, seed = key
        image, label = self.dataset[i]
        g = torch.Generator()
        g.manual_seed(seed)
        name = self.dataset.pairs[i].image if hasattr(self.dataset, "pairs") else str(i)
        return self.transform(image, label, g, name=str(name))


def _collate(items):
    images, labels = zip(*items, strict=True)
    return torch.stack(images), torch.stack(labels)


class SegmentationLoader:
    """Training (shuffled, ``drop_last``) or evaluation (in order) batches of ``dataset``.

    Args:
        dataset: ``ds[i] -> (image (H, W, 3) uint8, label (H, W) uint8)``.
        transform: ``transform(image, label, generator, name) -> (image, label)`` tensors of one
            size per batch.
        batch_size: the global batch (training) or this rank's batch (evaluation).
        seed: the run seed.
        train: shuffle and drop the last incomplete batch (official).
        workers: DataLoader worker processes (0: in the calling process).
        rank, world: this process's shard.
        pin_memory: pin batches (CUDA training).
        collate: batch maker (default: stack equal-size tensors); device-side augmentation
            passes :func:`device_transforms.collate_raw`.
    """

    def __init__(self, dataset, transform: Callable, batch_size: int, seed: int = 0,
                 train: bool = True, workers: int = 0, rank: int = 0, world: int = 1,
                 pin_memory: bool = False, collate: Optional[Callable] = None) -> None:
        if train and len(dataset) < batch_size:
            raise ValueError(f"{len(dataset)} training samples but batch_size={batch_size}: "
                             "lower batch_size or use more data")
        self.dataset, self.transform = dataset, transform
        self.batch_size, self.seed, self.train = int(batch_size), int(seed), train
        self.workers, self.rank, self.world, self.pin_memory = workers, rank, world, pin_memory
        self.collate = collate or _collate
        self.epoch = 0
        self.position = 0  # batches of ``epoch`` already handed out

    def __len__(self) -> int:
        if self.train:
            return len(self.dataset) // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def batches(self, epoch: int) -> List[List[Tuple[int, int]]]:
        """This rank's ``(index, sample seed)`` lists of every batch of ``epoch``."""
        n = len(self.dataset)
        if self.train:  # the global batch, then this rank's share of it
            g = torch.Generator()
            g.manual_seed(_seed(self.seed, epoch))
            order = torch.randperm(n, generator=g).tolist()
            chunks = [order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
                      for b in range(len(self))]
        else:  # this rank's shard of the set, in order, then local batches (no padding)
            order = shard(range(n), self.rank, self.world)
            chunks = [order[b * self.batch_size:(b + 1) * self.batch_size]
                      for b in range(len(self))]
        return [[(i, _seed(self.seed, epoch, i)) for i in idx] for idx in chunks]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """One epoch from the current position (0 unless restored mid-epoch)."""
        epoch, start = self.epoch, self.position
        todo = [b for b in self.batches(epoch)[start:] if b]
        loader = DataLoader(_Samples(self.dataset, self.transform), batch_sampler=todo,
                            num_workers=self.workers, collate_fn=self.collate,
                            pin_memory=self.pin_memory,
                            persistent_workers=False, prefetch_factor=2 if self.workers else None)
        for k, batch in enumerate(loader):
            self.position = start + k + 1
            yield batch
        self.epoch, self.position = epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"loader state of seed {state['seed']} loaded into seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    @property
    def num_samples(self) -> int:
        return len(range(self.rank, len(self.dataset), self.world))


def shard(indices: Sequence[int], rank: int, world: int) -> List[int]:
    """Every ``world``-th index from ``rank`` (evaluation sharding, no padding)."""
    return list(indices)[rank::world]
