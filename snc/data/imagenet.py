"""ImageNet-style class folders: a worker-based loader that hands uint8 batches to the device.

Layout: ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` (the official script's
``validation`` also works); ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``.
Decoding and the PIL geometry (``RandomResizedCrop(224)`` + flip for training,
``Resize(256)`` + ``CenterCrop(224)`` for evaluation, as the official ``imagenet.py``) run in
DataLoader workers with pinned memory; normalization and AugMix run on the device, on whole
batches, as for the array datasets.

Sharding: training uses a ``DistributedSampler`` (seeded, ``set_epoch`` every epoch);
evaluation gives rank ``r`` the samples ``r, r + W, ...`` with no padding, so summed counts are
exact.

Augmentation randomness differs per rank (as :class:`~snc.data.loader.ArrayLoader`'s): the
loader's generator is seeded with ``seed + 7919 * rank``; it draws the AugMix parameters and,
once per epoch, a base seed from which every training sample's crop and flip are drawn
(``(base, index)`` seeds the sample's transform, in the worker or in the main process alike),
so ranks never repeat each other's crops and the draws do not depend on the worker count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import torch

from snc.augment.augmix import AugMix
from snc.data.loader import model_inputs

TRAIN_DIRS = ("train",)
VAL_DIRS = ("val", "validation")


def split_dir(root: Path, names: Sequence[str]) -> Path:
    """The first of ``root/<name>`` that exists, or a FileNotFoundError describing the layout."""
    for name in names:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    raise FileNotFoundError(
        f"no {' or '.join(names)} folder under {root}: ImageNet is read from "
        f"<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (set dataset.root). "
        "The ILSVRC-2012 images come from https://image-net.org (registration required); "
        "sort the validation images into class folders first."
    )


def eval_geometry(size: int = 224, resize: int = 256):
    """``Resize(resize)`` + ``CenterCrop(size)`` on PIL images: ImageNet evaluation, and the
    preprocessing the published ImageNet-C was made with."""
    import torchvision.transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(size)])


def imagenet_transform(train: bool, size: int = 224, resize: int = 256):
    """PIL transforms ending in a uint8 CHW tensor (normalization happens on the device)."""
    import torchvision.transforms as T

    if train:
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])
    return T.Compose([eval_geometry(size, resize), T.PILToTensor()])


RANK_SEED_STRIDE = 7919  # as ArrayLoader: rank r's augmentation stream is seed + 7919 * r


class SeededSamples(torch.utils.data.Dataset):
    """``dataset[(index, seed)]``: ``dataset[index]`` with the global torch generator (which
    torchvision's random transforms use) seeded with ``seed`` for that sample only."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class SeededSampler(torch.utils.data.Sampler):
    """Yields ``(index, seed)`` for the indices of ``sampler``; the seeds follow from one base
    drawn from ``generator`` per pass and the sample index."""

    def __init__(self, sampler, generator: torch.Generator) -> None:
        self.sampler, self.generator = sampler, generator

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        base = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        for index in self.sampler:
            yield int(index), (base * 6364136223846793005 + int(index)) % 2**63


class FolderLoader:
    """Batches of an image-folder dataset, normalized (and AugMix-ed) on ``device``.

    Args:
        dataset: a dataset returning ``(uint8 CHW tensor, label)``.
        batch_size: per-process batch size.
        mean, std: normalization (0-1 scale).
        train: shuffle (seeded, per epoch) and, with ``augmix``, return 3 views.
        device: where batches go.
        seed: the run seed: the shuffle order (the same on every rank) and, offset by the
            rank, the augmentation draws.
        workers: DataLoader worker processes.
        rank, world: this process's shard.
        augmix: AugMix views for training.
        channels_last: channels-last batches.
        drop_last: drop the last incomplete training batch.
    """

    def __init__(self, dataset, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 *, train: bool = False, device="cpu", seed: int = 0, workers: int = 4,
                 rank: int = 0, world: int = 1, augmix: Optional[AugMix] = None,
                 channels_last: bool = False, drop_last: bool = False) -> None:
        self.dataset, self.train, self.device = dataset, train, torch.device(device)
        self.augmix, self.channels_last = augmix, channels_last
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.epoch = 0
        # the order is the same on every rank (the sampler's seed); augmentation differs
        self.generator = torch.Generator()
        self.generator.manual_seed(seed + RANK_SEED_STRIDE * rank)
        if train:
            self.sampler = torch.utils.data.DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                drop_last=drop_last)
            samples, sampler = SeededSamples(dataset), SeededSampler(self.sampler,
                                                                     self.generator)
        else:
            self.sampler = list(range(rank, len(dataset), world))
            samples, sampler = dataset, self.sampler
        self.loader = torch.utils.data.DataLoader(
            samples, batch_size=batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", drop_last=drop_last and train,
            persistent_workers=workers > 0 and train, generator=self.generator)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per pass."""
        return len(self.sampler)

    @property
    def total_samples(self) -> int:
        """Samples over all ranks per pass (the dataset size, for evaluation)."""
        return len(self.dataset)

    def __iter__(self) -> Iterator:
        if self.train:
            self.sampler.set_epoch(self.epoch)
            self.epoch += 1
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            augmix = self.augmix if self.train else None
            yield model_inputs(x, self.mean, self.std, augmix, self.generator,
                               self.channels_last), y

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"])
