"""Domain-generalization training data as DomainBed and Dassl run it (PIL files, DataLoaders).

- **DomainBed** (facebookresearch/DomainBed, commit b93c22a): ``domainbed/datasets.py``
  ``MultipleEnvironmentImageFolder`` reads every domain with ``torchvision.datasets.ImageFolder``
  and, for training domains, the transform ``RandomResizedCrop(224, scale=(0.7, 1.0))``,
  ``RandomHorizontalFlip()``, ``ColorJitter(0.3, 0.3, 0.3, 0.3)``, ``RandomGrayscale()``
  (p = 0.1), ``ToTensor()``, ``Normalize(ImageNet mean, std)``, on the file as decoded (PACS:
  227 x 227). ``domainbed/scripts/train.py`` splits each domain with ``misc.split_dataset``
  (the *in* split trains), builds one ``InfiniteDataLoader`` per training domain
  (``domainbed/lib/fast_data_loader.py``: ``RandomSampler(replacement=True)``, a
  ``BatchSampler`` of ``hparams['batch_size']`` (32) with ``drop_last``, wrapped to never end,
  ``num_workers=dataset.N_WORKERS`` = 8, no pinned memory), and per step takes
  ``next(zip(*train_loaders))``, moves each domain's batch to the device and runs
  ``ERM.update``: ``torch.cat`` of the batches, cross-entropy, ``zero_grad``, ``backward``,
  ``step``, ``loss.item()``. Its ResNet keeps BatchNorm in evaluation mode while training
  (``networks.ResNet.train`` calls ``freeze_bn``).
- **Dassl** (KaiyangZhou/Dassl.pytorch, commit c61a1b5; the MixStyle runs,
  KaiyangZhou/mixstyle-release ``imcls/scripts/dg.sh``, use its
  ``configs/datasets/dg/pacs.yaml``): ``INPUT.TRANSFORMS = [random_flip, random_translation,
  normalize]`` at ``INPUT.SIZE = (224, 224)``, which ``dassl/data/transforms/transforms.py``
  ``_build_transform_train`` makes ``Resize((224, 224))`` (no crop is chosen),
  ``Random2DTranslation(224, 224)`` (half the time: resize to 252 x 252 and a random 224 crop),
  ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize``; ``dassl/data/data_manager.py``
  reads each file with ``PIL.Image.open(path).convert("RGB")`` (``DatasetWrapper``), draws
  ``RandomSampler`` batches of the union of the source domains (``imcls/configs/trainers/
  mixstyle/pacs_random.yaml``: 64 images, ``NUM_WORKERS: 4``, ``drop_last``, pinned memory on
  CUDA); the ``Vanilla`` trainer's step: ``model(input)``, cross-entropy, the finite-loss check,
  ``zero_grad``, ``backward``, ``step``, ``loss.item()`` and the batch accuracy ``.item()``.

snc does not train with them (its path: :class:`snc.data.dg.DomainBatches`, the images decoded
once and augmented in batches on the device). They are the baselines of ``scripts/bench.py
task=dg``. The crop scale, jitter and greyscale probability are parameters (DomainBed's values by
default) so that the same pipeline runs on the generated 32-px set.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from snc.reference.cifar import use_official_ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOMAINBED_WORKERS = 8  # MultipleDomainDataset.N_WORKERS
DASSL_WORKERS = 4      # mixstyle-release pacs_random.yaml DATALOADER.NUM_WORKERS


# ----------------------------------------------------------------------------- DomainBed

def domainbed_transform(size: int = 224, scale: Sequence[float] = (0.7, 1.0),
                        jitter: float = 0.3, grayscale: float = 0.1,
                        mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, flip: bool = True):
    """``MultipleEnvironmentImageFolder``'s ``augment_transform`` (defaults: DomainBed's).
    ``jitter=0`` or ``grayscale=0`` leaves that transform out."""
    import torchvision.transforms as T

    ops = [T.RandomResizedCrop(size, scale=tuple(scale))]
    if flip:
        ops.append(T.RandomHorizontalFlip())
    if jitter > 0:
        ops.append(T.ColorJitter(jitter, jitter, jitter, jitter))
    if grayscale > 0:
        ops.append(T.RandomGrayscale(grayscale))
    ops += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    return T.Compose(ops)


class _InfiniteSampler(torch.utils.data.Sampler):
    """``fast_data_loader._InfiniteSampler``: another sampler's batches without end."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def __iter__(self):
        while True:
            yield from self.sampler


class InfiniteDataLoader:
    """``fast_data_loader.InfiniteDataLoader`` without class weights (DomainBed's default
    ``class_balanced=False``): ``RandomSampler(replacement=True)``, batches of ``batch_size``
    with ``drop_last``, one DataLoader iterator kept for the whole run."""

    def __init__(self, dataset, batch_size: int, num_workers: int) -> None:
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True)
        batch_sampler = torch.utils.data.BatchSampler(sampler, batch_size=batch_size,
                                                      drop_last=True)
        self._infinite_iterator = iter(torch.utils.data.DataLoader(
            dataset, num_workers=num_workers, batch_sampler=_InfiniteSampler(batch_sampler)))

    def __iter__(self):
        while True:
            yield next(self._infinite_iterator)


def domainbed_loaders(root: str, domains: Sequence[str], in_splits: Dict[str, Sequence[int]],
                      transform, batch_size: int = 32,
                      num_workers: int = DOMAINBED_WORKERS) -> Iterator[Tuple]:
    """``zip(*train_loaders)`` of ``train.py``: one :class:`InfiniteDataLoader` per training
    domain over ``ImageFolder(root/<domain>)`` restricted to its *in* split (``misc.
    _SplitDataset``: a subset by index)."""
    from torchvision.datasets import ImageFolder

    loaders = []
    for domain in domains:
        env = ImageFolder(os.path.join(str(root), domain), transform=transform)
        in_ = torch.utils.data.Subset(env, [int(i) for i in in_splits[domain]])
        loaders.append(InfiniteDataLoader(in_, batch_size, num_workers))
    return zip(*loaders, strict=True)  # endless iterators


class ERMStep:
    """``train.py``'s step with ``ERM.update``: each domain's batch moved to the device, then
    one forward of their concatenation, cross-entropy, the update and ``loss.item()``.

    Args:
        model: the network, on ``device`` (SelfNorm, if any, runs the official unfused ops).
        optimizer: over ``model``'s parameters.
        minibatches: the iterator of :func:`domainbed_loaders`.
        device: the training device.
        freeze_bn: BatchNorm kept in evaluation mode (DomainBed's ResNet).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 minibatches: Iterator[Tuple], device: torch.device,
                 freeze_bn: bool = True) -> None:
        self.model, self.optimizer, self.device = use_official_ops(model), optimizer, device
        self.minibatches = minibatches
        model.train()
        if freeze_bn:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self.last_loss: Optional[float] = None

    def data(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """The data part of a step: the next batch of every domain, on the device."""
        return [(x.to(self.device), y.to(self.device)) for x, y in next(self.minibatches)]

    def step(self) -> None:
        minibatches = self.data()
        all_x = torch.cat([x for x, _ in minibatches])
        all_y = torch.cat([y for _, y in minibatches])
        loss = F.cross_entropy(self.model(all_x), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.item()


# ----------------------------------------------------------------------------- Dassl

class Random2DTranslation:
    """Dassl's ``Random2DTranslation(height, width, p=0.5)``: with probability ``1 - p`` a
    resize to ``(height, width)``; else a resize to 1.125 times that and a random crop of
    ``(height, width)`` (Python's ``random``, as Dassl)."""

    def __init__(self, height: int, width: int, p: float = 0.5) -> None:
        self.height, self.width, self.p = height, width, p

    def __call__(self, img):
        import random

        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        bilinear = InterpolationMode.BILINEAR
        if random.uniform(0, 1) > self.p:
            return TF.resize(img, [self.height, self.width], interpolation=bilinear)
        new_width, new_height = int(round(self.width * 1.125)), int(round(self.height * 1.125))
        resized = TF.resize(img, [new_height, new_width], interpolation=bilinear)
        x1 = int(round(random.uniform(0, new_width - self.width)))
        y1 = int(round(random.uniform(0, new_height - self.height)))
        return TF.crop(resized, top=y1, left=x1, height=self.height, width=self.width)


def dassl_transform(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD):
    """``_build_transform_train`` for ``[random_flip, random_translation, normalize]``."""
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    return T.Compose([T.Resize((size, size), interpolation=InterpolationMode.BILINEAR),
                      Random2DTranslation(size, size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean=list(mean), std=list(std))])


class DasslDataset(torch.utils.data.Dataset):
    """``DatasetWrapper`` over ``[(path, label, domain)]``: the file read with
    ``Image.open(path).convert("RGB")``, transformed; a dict per item as Dassl returns it."""

    def __init__(self, items: Sequence[Tuple[str, int, int]], transform) -> None:
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        from PIL import Image

        path, label, domain = self.items[idx]
        img0 = Image.open(path).convert("RGB")
        return {"label": label, "domain": domain, "impath": path, "index": idx,
                "img": self.transform(img0)}


def dassl_loader(items: Sequence[Tuple[str, int, int]], transform, batch_size: int = 64,
                 num_workers: int = DASSL_WORKERS, pin_memory: bool = False):
    """``build_data_loader`` for the training set: ``RandomSampler`` over the union of the
    source domains, ``drop_last``."""
    data = DasslDataset(items, transform)
    return torch.utils.data.DataLoader(
        data, batch_size=batch_size, sampler=torch.utils.data.RandomSampler(data),
        num_workers=num_workers, drop_last=len(data) >= batch_size, pin_memory=pin_memory)


class VanillaStep:
    """Dassl's ``Vanilla.forward_backward`` with the batches of :func:`dassl_loader`, epoch
    after epoch (the loader's iterator is made anew per epoch, as Dassl's ``run_epoch``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader,
                 device: torch.device) -> None:
        self.model, self.optimizer, self.device = use_official_ops(model), optimizer, device
        self.loader = loader
        self._it = iter(loader)
        model.train()
        self.last = (None, None)

    def _next(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def data(self) -> Tuple[torch.Tensor, torch.Tensor]:
        batch = self._next()
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def step(self) -> None:
        x, y = self.data()
        output = self.model(x)
        loss = F.cross_entropy(output, y)
        self.optimizer.zero_grad()
        if not torch.isfinite(loss).all():  # detect_anomaly
            raise FloatingPointError("Loss is infinite or NaN!")
        loss.backward()
        self.optimizer.step()
        acc = (output.argmax(1) == y).float().mean() * 100
        self.last = (loss.item(), acc.item())
