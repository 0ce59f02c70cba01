"""Multi-process training with PyTorch's own engine (``torchrun``, or SLURM through submitit).

``torchrun --nproc_per_node=N train.py ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; on a
SLURM allocation launched by the submitit launcher, the SLURM variables are translated. Rank 0
alone logs, checkpoints and talks to W&B; every rank evaluates its shard and the wrong/total
counts are summed, so the errors equal the single-process ones exactly.

CrossNorm under DDP: every rank seeds its controller with the run seed, so the same units fire
in the same step on every rank (balanced per-step work, and the same activation schedule as a
single-process run); partners and boxes are drawn from that same stream and applied to each
rank's local batch.

BatchNorm under DDP: with ``distributed.bn_batch`` every BatchNorm (and SelfNorm's
BatchNorm1d) sees as many rows as on one GPU of the official ``nn.DataParallel`` run, whatever
the number of processes (:func:`prepare_batch_norm`, which the engine calls before wrapping
the model in DDP); ``distributed.augmix_bn=official`` also lays the AugMix views out as the
official 3-view batch was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from snc.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _from_slurm() -> None:
    """Exports torchrun-style variables from a SLURM task (submitit), when present."""
    if "WORLD_SIZE" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except ImportError as err:  # pragma: no cover - only on clusters
        raise RuntimeError("multi-task SLURM jobs need the submitit package "
                           "(pip install hydra-submitit-launcher)") from err


def init_distributed(device_name: str, backend: str = "auto") -> DistInfo:
    """Joins the process group when launched with several processes; otherwise a no-op."""
    _from_slurm()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def all_reduce_sum(values: Sequence[int], device: torch.device) -> List[int]:
    """Sums integer counts over all ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [int(v) for v in values]
    t = torch.tensor([int(v) for v in values], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [int(v) for v in t.tolist()]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (a download into a shared folder), the other processes after
    it, so they find its files instead of writing the same ones at once. One process: just the
    block."""
    first = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if not first:
        barrier()
    try:
        yield
    finally:  # also when rank 0 fails: the others then run the block and fail alike
        if first:
            barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# BatchNorm batches that equal the official runs' (``distributed.bn_batch``)
#
# The official ImageNet scripts run ``nn.DataParallel``: the batch of one forward is cut into
# contiguous chunks, one per GPU, each BatchNorm (and SelfNorm's BatchNorm1d) normalizes its
# chunk with the chunk's statistics, and the running statistics kept are those of GPU 0, i.e.
# of the first chunk. SN/CN/SNCN ran on one GPU at batch 128 (BN batch 128); the consistency
# script on 4 GPUs at 128 (32 per GPU); SNCN+AugMix on 8 GPUs at 256, whose 3-view batch
# ``cat(clean, aug1, aug2)`` of 768 rows gives 96-row chunks that mostly hold one view.
#
# ``ChunkBatchNorm`` reproduces that under any number of DDP processes: the rows of one forward
# over all ranks are put in the order DataParallel would have had them (rank-major; or, for
# the AugMix views, view-major: every rank's clean rows, then every rank's first AugMix view,
# ...), cut into chunks of ``bn_batch`` rows, and every row is normalized with the statistics
# of its chunk (summed over the ranks that hold part of it: SyncBatchNorm over groups of
# ranks). The running statistics come from chunk 0 on every rank.
# --------------------------------------------------------------------------------------------

# the differentiable all_reduce (its deprecation names a replacement without autograd)
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is "
                        "deprecated", category=FutureWarning)
log = logging.getLogger("snc")
AUGMIX_BN = ("per_rank", "official")
_FORWARD_VIEWS = [1]  # views stacked in the current forward (set by :func:`forward_views`)


@contextlib.contextmanager
def forward_views(views: int) -> Iterator[None]:
    """Declares that the forwards inside stack ``views`` equal-sized views along the batch
    (AugMix: ``cat(clean, aug1, aug2)``, 3). Only :class:`ChunkBatchNorm` layers built with
    ``follow_views=True`` (``distributed.augmix_bn=official``) act on it; elsewhere a no-op."""
    _FORWARD_VIEWS.append(int(views))
    try:
        yield
    finally:
        _FORWARD_VIEWS.pop()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over all ranks (identity in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t, op=dist.ReduceOp.SUM)


class ChunkBatchNorm(_BatchNorm):
    """BatchNorm over chunks of ``bn_batch`` rows of the batch of all ranks (DataParallel
    semantics); eval mode is the plain BatchNorm with running statistics.

    Args:
        num_features, eps, momentum, affine, track_running_stats: as ``nn.BatchNorm2d``.
        bn_batch: rows per BatchNorm batch (the official per-GPU batch).
        rank, world: this process and the number of processes.
        rows_per_rank: rows of one BatchNorm call per rank and view under DDP (the layout
            stride: a smaller last batch leaves a gap, it does not shift the other ranks).
        follow_views: honour :func:`forward_views` (view-major order of the AugMix views).

    Inputs ``(N, C, *)`` of any rank (BatchNorm1d's ``(N, C)`` and ``(N, C, L)`` included).
    The global row index of local row ``j`` of view ``v`` on rank ``r`` is
    ``(v * world + r) * rows_per_rank + j``; its chunk is that index ``// bn_batch``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, bn_batch: int,
                 rank: int = 0, world: int = 1, follow_views: bool = False,
                 rows_per_rank: int = 0) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.bn_batch, self.rank, self.world = int(bn_batch), int(rank), int(world)
        self.rows_per_rank = int(rows_per_rank)
        self.follow_views = follow_views

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", bn_batch={self.bn_batch}, world={self.world}, "
                f"follow_views={self.follow_views}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = _FORWARD_VIEWS[-1] if self.follow_views else 1
        rows = x.shape[0]
        if not self.training or (self.world == 1 and views == 1 and rows == self.bn_batch):
            return super().forward(x)
        if rows % views:
            raise ValueError(f"{rows} rows do not split into {views} views")
        # under DDP every rank takes this path in every training forward (the collectives
        # match), with a chunk count that does not depend on its own (last, partial) batch
        per_view = rows // views
        stride = max(self.rows_per_rank, 1) if self.world > 1 else per_view
        chunks = -(-views * self.world * stride // self.bn_batch)
        v = torch.arange(views, device=x.device).repeat_interleave(per_view)
        j = torch.arange(per_view, device=x.device).repeat(views)
        ids = (((v * self.world + self.rank) * stride + j) // self.bn_batch).clamp_(
            max=chunks - 1)
        c = x.shape[1]
        # statistics in fp32 at least (also under autocast)
        flat = x.reshape(rows, c, -1).to(torch.promote_types(x.dtype, torch.float32))
        per_row = flat.shape[2]
        counts = torch.zeros(chunks, device=x.device, dtype=flat.dtype).index_add_(
            0, ids, torch.full((rows,), float(per_row), device=x.device, dtype=flat.dtype))
        counts = _all_reduce(counts.detach()).clamp_min(1)
        sums = _all_reduce(torch.zeros(chunks, c, device=x.device, dtype=flat.dtype)
                           .index_add(0, ids, flat.sum(2)))
        mean = sums / counts[:, None]
        centred = flat - mean[ids][:, :, None]
        sq = _all_reduce(torch.zeros(chunks, c, device=x.device, dtype=flat.dtype)
                         .index_add(0, ids, (centred * centred).sum(2)))
        var = sq / counts[:, None]  # biased, as BatchNorm normalizes
        out = centred * torch.rsqrt(var + self.eps)[ids][:, :, None]
        if self.affine:
            out = out * self.weight[None, :, None] + self.bias[None, :, None]
        if self.track_running_stats:
            with torch.no_grad():  # chunk 0: GPU 0 of the official DataParallel run
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                n = counts[0]
                unbiased = var[0].detach() * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean[0].detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return out.reshape(x.shape).to(x.dtype)


@dataclass(frozen=True)
class BNPlan:
    """How BatchNorm batches of ``bn_batch`` rows come about.

    Attributes:
        bn_batch: rows per BatchNorm batch (None: each rank's batch, unchanged).
        rows_per_rank: rows of one BatchNorm call on one rank (per view with
            ``follow_views``; the largest, when the batch does not split evenly).
        world: processes.
        follow_views: AugMix views in the official (view-major) order.
        group_size: ranks per SyncBatchNorm group when chunks are whole ranks' batches
            (``0``: chunks are not whole ranks; ``1``: each rank is its own chunk).
    """

    bn_batch: Optional[int]
    rows_per_rank: int
    world: int
    follow_views: bool = False
    group_size: int = 0

    @property
    def needed(self) -> bool:
        return self.bn_batch is not None and not (self.group_size == 1
                                                   and not self.follow_views)


def plan_bn(bn_batch: Optional[int], batch_size: int, world: int, *, views: int = 1,
            follow_views: bool = False) -> BNPlan:
    """Checks that BatchNorm batches of ``bn_batch`` rows can be formed and how.

    Args:
        bn_batch: rows per BatchNorm batch, or None (each rank's batch as it is).
        batch_size: the global batch (``cfg.batch_size``), split over ``world`` processes.
        world: processes.
        views: rows per sample in one forward (3 for the joint AugMix forward).
        follow_views: the AugMix views in the official view-major order.

    Raises:
        ConfigError: the batch of one step over all ranks is smaller than ``bn_batch``, or
            ``bn_batch`` < 2 (BatchNorm cannot train on one row), naming the fix.
    """
    rows = max(1, batch_size // world)
    if bn_batch is None:
        return BNPlan(None, rows, world)
    bn_batch = int(bn_batch)
    per_forward = rows * (1 if follow_views else views)  # rows in one BN call, per view
    total = rows * views * world
    if bn_batch < 2:
        raise ConfigError(f"distributed.bn_batch={bn_batch}: BatchNorm needs >= 2 rows per "
                          "batch; use null or a larger value")
    if bn_batch > total:
        raise ConfigError(
            f"distributed.bn_batch={bn_batch} cannot be met: one step holds {total} rows over "
            f"all {world} process(es) (batch_size={batch_size}"
            f"{f' x {views} views' if views > 1 else ''}); raise batch_size, or set "
            "distributed.bn_batch=null to normalize each process's batch as it is")
    group = 0
    if not follow_views or views == 1:
        if bn_batch % per_forward == 0 and world % (bn_batch // per_forward) == 0:
            group = bn_batch // per_forward
    if total % bn_batch:
        log.warning("distributed.bn_batch=%d does not divide the %d rows of a step: the last "
                    "BatchNorm batch of every step holds %d rows", bn_batch, total,
                    total % bn_batch)
    return BNPlan(bn_batch, -(-batch_size // world) * (1 if follow_views else views), world,
                  follow_views and views > 1, group)


def bn_rank_groups(world: int, group_size: int) -> List[List[int]]:
    """Consecutive ranks whose local batches add up to one BatchNorm batch."""
    if group_size < 1 or world % group_size:
        raise ValueError(f"{world} ranks do not split into groups of {group_size}")
    return [list(range(s, s + group_size)) for s in range(0, world, group_size)]


def convert_batch_norm(module: torch.nn.Module, plan: BNPlan, rank: int) -> torch.nn.Module:
    """Replaces every BatchNorm of ``module`` (in place; returns the root) by a
    :class:`ChunkBatchNorm` holding the same parameter and buffer tensors, so an optimizer
    built before and the checkpoint keys are unchanged."""
    if isinstance(module, _BatchNorm) and not isinstance(module, ChunkBatchNorm):
        new = ChunkBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats, bn_batch=plan.bn_batch, rank=rank,
                             world=plan.world, follow_views=plan.follow_views,
                             rows_per_rank=plan.rows_per_rank)
        new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_batch_norm(child, plan, rank)
        if converted is not child:
            setattr(module, name, converted)
    return module


def prepare_batch_norm(model: torch.nn.Module, cfg, info: DistInfo,
                       device: Optional[torch.device] = None) -> torch.nn.Module:
    """The model with BatchNorm batches of ``cfg.distributed.bn_batch`` rows (the engine calls
    it before wrapping the model in DDP); ``distributed.sync_bn=true`` without a
    ``bn_batch`` keeps its meaning (one SyncBatchNorm over all ranks).

    On CUDA, when every BatchNorm batch is the batches of whole consecutive ranks, torch's
    ``SyncBatchNorm`` runs over those process groups (every rank creates every group, in the
    same order); otherwise (CPU/gloo, several chunks per rank, the AugMix view order) the
    layers become :class:`ChunkBatchNorm`.

    Raises:
        ConfigError: the BatchNorm batch cannot be met (see :func:`plan_bn`).
    """
    d = cfg.get("distributed") or {}
    bn_batch = d.get("bn_batch")
    if bn_batch is None:
        if info.enabled and d.get("sync_bn", False):
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model
    augmix_bn = d.get("augmix_bn", "per_rank")
    if augmix_bn not in AUGMIX_BN:
        raise ConfigError(f"distributed.augmix_bn={augmix_bn!r}; choose one of "
                          f"{', '.join(AUGMIX_BN)}")
    augmix = bool((cfg.get("augmix") or {}).get("enabled", False))
    plan = plan_bn(bn_batch, int(cfg.batch_size), info.world, views=3 if augmix else 1,
                   follow_views=augmix and augmix_bn == "official")
    log.info("BatchNorm batches of %d rows (%d process(es), %d rows per process%s)",
             plan.bn_batch, info.world, plan.rows_per_rank,
             ", AugMix views in the official order" if plan.follow_views else "")
    if not plan.needed:
        return model
    cuda = device is not None and device.type == "cuda"
    if cuda and info.enabled and plan.group_size > 1 and not plan.follow_views:
        mine = None
        for ranks in bn_rank_groups(info.world, plan.group_size):
            group = dist.new_group(ranks)  # collective: every rank creates every group
            if info.rank in ranks:
                mine = group
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=mine)
    return convert_batch_norm(model, plan, info.rank)
