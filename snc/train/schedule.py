"""Learning-rate schedules, as multipliers of the base rate per optimizer step.

- ``cosine`` (official CIFAR, stepped every iteration):
  ``lr(t) = min_lr + (lr0 - min_lr) * (1 + cos(pi * t / T)) / 2`` with ``t`` the steps already
  taken (0 at the first) and ``T = epochs * steps_per_epoch``; ``min_lr`` = 1e-6 (absolute).
- ``step`` (official ImageNet, set per epoch): ``lr0 * {1, 0.1, 0.01}`` for epoch ``< E//3``,
  ``< 2 * (E//3)``, else.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def cosine_factor(total_steps: int, base_lr: float, min_lr: float = 1e-6) -> Callable[[int], float]:
    def factor(step: int) -> float:
        lr = min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        return lr / base_lr
    return factor


def step_factor(epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    third = epochs // 3

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        return 1.0 if epoch < third else (0.1 if epoch < 2 * third else 0.01)
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, *, epochs: int,
                    steps_per_epoch: int, base_lr: float, min_lr: float = 1e-6
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped after every optimizer step."""
    if name == "cosine":
        fn = cosine_factor(epochs * steps_per_epoch, base_lr, min_lr)
    elif name == "step":
        fn = step_factor(epochs, steps_per_epoch)
    else:
        raise ValueError(f"unknown schedule {name!r}; choose cosine or step")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
