"""Learning-rate schedules, as multipliers of each group's base rate per optimizer step.

With ``t`` the steps already taken (0 at the first) and ``T`` the run's total steps:

- ``cosine`` (official CIFAR, stepped every iteration):
  ``lr(t) = min_lr + (lr0 - min_lr) * (1 + cos(pi * t / T)) / 2``; ``min_lr`` = 1e-6 (absolute).
- ``step`` (official ImageNet, set per epoch): ``lr0 * {1, 0.1, 0.01}`` for epoch ``< E//3``,
  ``< 2 * (E//3)``, else.
- ``poly`` (segmentation, per iteration): ``lr0 * (1 - t / T) ** power`` (power 0.9).
- ``fixmatch`` (FixMatch, per step, no warm-up): ``lr0 * cos(7 * pi * t / (16 * T))``.
- ``constant``: ``lr0``.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from snc.errors import ConfigError


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


def poly_factor(total_steps: int, power: float = 0.9) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return max(0.0, 1.0 - step / total_steps) ** power
    return factor


def fixmatch_factor(total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return math.cos(7.0 * math.pi * step / (16.0 * total_steps))
    return factor


SCHEDULES = ("cosine", "step", "poly", "fixmatch", "constant")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, *, total_steps: int,
                    steps_per_epoch: int, epochs: int, base_lr: float, min_lr: float = 1e-6,
                    power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped after every optimizer step."""
    factors: Dict[str, Callable[[], Callable[[int], float]]] = {
        "cosine": lambda: cosine_factor(total_steps, base_lr, min_lr),
        "step": lambda: step_factor(epochs, steps_per_epoch),
        "poly": lambda: poly_factor(total_steps, power),
        "fixmatch": lambda: fixmatch_factor(total_steps),
        "constant": lambda: (lambda step: 1.0),
    }
    if name not in factors:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[name]())
