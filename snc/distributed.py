"""Multi-process training with PyTorch's own engine (``torchrun``, or SLURM through submitit).

``torchrun --nproc_per_node=N train.py ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; on a
SLURM allocation launched by the submitit launcher, the SLURM variables are translated. Rank 0
alone logs, checkpoints and talks to W&B; every rank evaluates its shard and the wrong/total
counts are summed, so the errors equal the single-process ones exactly.

CrossNorm under DDP: every rank seeds its controller with the run seed, so the same units fire
in the same step on every rank (balanced per-step work, and the same activation schedule as a
single-process run); partners and boxes are drawn from that same stream and applied to each
rank's local batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.distributed as dist


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


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
