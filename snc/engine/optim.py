"""The optimizer of a run: ``optimizer.name`` over the task's parameter groups."""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from snc.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")


def base_learning_rate(opt_cfg, batch_size: int) -> float:
    """``optimizer.lr``, times ``batch_size / scale_lr_by_batch`` when that is set (official
    ImageNet: lr 0.1 per 256 images)."""
    lr = float(opt_cfg.lr)
    if opt_cfg.get("scale_lr_by_batch"):
        lr = lr * batch_size / float(opt_cfg.scale_lr_by_batch)
    return lr


def build_optimizer(opt_cfg, groups: List[Dict[str, Any]], base_lr: float
                    ) -> torch.optim.Optimizer:
    """``sgd`` (momentum, nesterov), ``adam`` or ``adamw`` over ``groups``; a group's
    ``lr_scale`` multiplies the base rate (e.g. segmentation heads x10)."""
    name = str(opt_cfg.get("name", "sgd"))
    groups = [dict(g) for g in groups]
    for g in groups:
        g["lr"] = base_lr * float(g.pop("lr_scale", 1.0))
    wd = float(opt_cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=float(opt_cfg.momentum),
                               nesterov=bool(opt_cfg.nesterov), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(groups, lr=base_lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr, weight_decay=wd)
    raise ConfigError(f"unknown optimizer.name={name!r}; choose one of {', '.join(OPTIMIZERS)}")
