"""The training loop: functions, not an engine (torchvision references / DeiT ``engine.py``)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Dict, Optional

import torch

from snc.eval.robustness import autocast_context, count_errors, error_percent
from snc.ops import CrossNormController
from snc.train.objectives import ObjectiveConfig

log = logging.getLogger("snc")


def use_tqdm(setting) -> bool:
    """``progress=auto``: tqdm bars on a terminal, periodic log lines otherwise."""
    if setting in (True, "true", "on"):
        return True
    if setting in (False, "false", "off"):
        return False
    return sys.stderr.isatty()


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    objective: Callable,
    controller: CrossNormController,
    objective_cfg: ObjectiveConfig,
    *,
    epoch: int,
    step: int,
    amp: str = "none",
    log_every: int = 50,
    on_log: Optional[Callable[[Dict[str, float], int], None]] = None,
    progress: bool = False,
) -> tuple:
    """One pass over ``loader``. Returns ``(step, epoch_metrics)``.

    Losses are accumulated on the device and read once per ``log_every`` steps, so the loop does
    not synchronize with the device at every step.
    """
    from tqdm.auto import tqdm

    model.train()
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    window = torch.zeros((), device=device)
    count = window_count = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress,
               dynamic_ncols=True)
    for batch in bar:
        with autocast_context(device, amp):
            loss, extras = objective(model, batch, controller, objective_cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        total += loss.detach()
        window += loss.detach()
        count += 1
        window_count += 1
        if step % log_every == 0:
            metrics = {"train/loss": float(window) / window_count,
                       "train/lr": optimizer.param_groups[0]["lr"],
                       **{f"train/{k}": float(v) for k, v in extras.items()}}
            if on_log is not None:
                on_log(metrics, step)
            if progress:
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            else:
                log.info("epoch %d step %d loss %.4f lr %.5f", epoch, step,
                         metrics["train/loss"], metrics["train/lr"])
            window.zero_()
            window_count = 0
    bar.close()
    elapsed = time.perf_counter() - start
    if count == 0:
        raise RuntimeError("the training loader produced no batch (batch_size > dataset size "
                           "with drop_last?)")
    return step, {"train_epoch/loss": float(total) / count, "train_epoch/seconds": elapsed,
                  "train_epoch/images_per_second": loader.num_samples / elapsed}


def clean_error(model: torch.nn.Module, loader, num_classes: int, amp: str = "none"
                ) -> Dict[str, float]:
    """Top-1 (and top-5 when there are more than 5 classes) clean error in percent."""
    topk = (1, 5) if num_classes > 5 else (1,)
    wrong, total = count_errors(model, loader, amp, topk=topk)
    if total != loader.total_samples:
        raise RuntimeError(f"evaluated {total} samples, the test set has {loader.total_samples}")
    out = {"clean/error": error_percent(wrong[1], total)}
    if 5 in wrong:
        out["clean/top5_error"] = error_percent(wrong[5], total)
    return out
