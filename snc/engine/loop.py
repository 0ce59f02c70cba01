"""The training loop: one function for every task (torchvision references / DeiT ``engine.py``).

The task turns a batch into a loss; this loop owns precision, the optimizer and schedule steps,
the per-step hook, loss accumulation and the periodic log lines.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from typing import Callable, Dict, Iterator, Optional

import torch

from snc.engine.precision import autocast_context

log = logging.getLogger("snc")


def use_tqdm(setting) -> bool:
    """``progress=auto``: tqdm bars on a terminal, periodic log lines otherwise."""
    if setting in (True, "true", "on"):
        return True
    if setting in (False, "false", "off"):
        return False
    return sys.stderr.isatty()


def train_steps(
    model: torch.nn.Module,
    batches: Iterator,
    task,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    raw_model: torch.nn.Module,
    step: int,
    num_steps: Optional[int] = None,
    total: Optional[int] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp: str = "none",
    log_every: int = 50,
    on_log: Optional[Callable[[Dict[str, float], int], None]] = None,
    progress: bool = False,
    desc: str = "",
) -> tuple:
    """Runs ``num_steps`` steps (None: until ``batches`` ends). Returns ``(step, metrics)`` with
    the mean loss and timing of this period.

    Losses are accumulated on the device and read once per ``log_every`` steps, so the loop does
    not synchronize with the device at every step.

    Args:
        model: the forward model (DDP/compiled wrapper); ``raw_model`` the plain module, for
            ``task.after_step``.
        batches: an iterator of the task's batches.
        task: a :class:`snc.tasks.base.Task`.
        step: optimizer steps taken before this period.
        total: length for the progress bar.
    """
    from tqdm.auto import tqdm

    model.train()
    device = next(raw_model.parameters()).device
    total_loss = torch.zeros((), device=device)
    window = torch.zeros((), device=device)
    count = window_count = 0
    start = time.perf_counter()
    bar = tqdm(itertools.islice(batches, num_steps), total=total, desc=desc, leave=False,
               disable=not progress, dynamic_ncols=True)
    for batch in bar:
        with autocast_context(device, amp):
            loss, extras = task.training_step(model, batch)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        step += 1
        task.after_step(raw_model, step)
        total_loss += loss.detach()
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
                log.info("%s step %d loss %.4f lr %.5f", desc, step, metrics["train/loss"],
                         metrics["train/lr"])
            window.zero_()
            window_count = 0
    bar.close()
    elapsed = time.perf_counter() - start
    if count == 0:
        raise RuntimeError("the training loader produced no batch (batch_size > dataset size "
                           "with drop_last?)")
    return step, {"loss": float(total_loss) / count, "seconds": elapsed, "steps": count,
                  "steps_per_second": count / elapsed}
