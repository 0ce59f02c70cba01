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

from snc.errors import ConfigError
from snc.precision import autocast_context

log = logging.getLogger("snc")


def use_tqdm(setting) -> bool:
    """``progress=auto``: tqdm bars on a terminal, periodic log lines otherwise."""
    if setting in (True, "true", "on"):
        return True
    if setting in (False, "false", "off"):
        return False
    return sys.stderr.isatty()


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class CompiledStep:
    """The training step compiled: the task's forward and loss as one graph (``fullgraph``: a
    graph break is an error, not a silent fallback), its backward as the graph the compiler
    derives from it, and the optimizer update compiled too (learning rates become device
    tensors the scheduler fills, so a new rate does not recompile).

    ``mode`` is ``torch.compile``'s: ``default``, ``reduce-overhead`` (CUDA graphs) or
    ``max-autotune``. The task's draws for the step are made before the graph runs
    (``task.before_step``), outside it.
    """

    def __init__(self, task, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, amp: str, mode: str = "default",
                 backend: str = "inductor", compile_update: bool = True) -> None:
        def forward_loss(batch):
            with autocast_context(device, amp):
                return task.training_step(model, batch)

        options = {"mode": None if mode == "default" else mode}
        if backend != "inductor":
            options = {"backend": backend}
        self._forward_loss = torch.compile(forward_loss, fullgraph=True, **options)
        self._checked = False
        self.update = optimizer.step
        if compile_update:
            for group in optimizer.param_groups:
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), device=device)
            self.update = torch.compile(optimizer.step, **options)

    def forward_loss(self, batch):
        """``(loss, logs)`` of ``batch`` through the compiled graph.

        Raises:
            ConfigError: at the first step, when the step cannot be captured as one graph,
                naming where it breaks and the eager fallback.
        """
        if self._checked:
            return self._forward_loss(batch)
        try:
            out = self._forward_loss(batch)
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError) as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            frames = [i for i, line in enumerate(lines) if line.startswith("File ")]
            where = " ".join(lines[frames[-1]:frames[-1] + 2]) if frames else ""
            raise ConfigError(
                f"compile=true: the training step cannot be captured as one graph: "
                f"{lines[0] if lines else type(err).__name__} (at {where or 'see above'}); "
                "train eagerly with compile=false") from err
        self._checked = True
        return out


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
    compiled: Optional[CompiledStep] = None,
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
        compiled: the compiled step (``compile=true``), else the eager one.
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
    before_step = getattr(task, "before_step", None)
    for batch in bar:
        if before_step is not None:  # draws made outside the (compiled) step
            before_step()
        if compiled is not None:
            loss, extras = compiled.forward_loss(batch)
        else:
            with autocast_context(device, amp):
                loss, extras = task.training_step(model, batch)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            (compiled.update if compiled is not None else optimizer.step)()
        scheduler.step()
        step += 1
        task.after_step(raw_model, step)
        total_loss += loss.detach()
        window += loss.detach()
        count += 1
        window_count += 1
        if step % log_every == 0:
            metrics = {"train/loss": float(window) / window_count,
                       "train/lr": float(optimizer.param_groups[0]["lr"]),
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
