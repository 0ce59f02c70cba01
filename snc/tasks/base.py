"""The task interface: what a task gives the engine, and what the engine gives a task.

A task is one small class that reads top to bottom like a recipe: it builds its data and model,
turns a batch into a loss, and evaluates a model into a flat metrics dict. Everything that is the
same for every task — run identity, resume, atomic checkpoints, trackers (W&B + local files),
DDP, progress, timing, optimizer and schedule, epochs or steps, periodic evaluation with
best/last bookkeeping, ``results.json`` and the summary line — belongs to :mod:`snc.engine`.

The engine calls, in this order::

    task = TaskClass(cfg)               # validate options (task.units: the unit options, parsed
                                        # once; build_model checked on the meta device); no file
                                        # is written, nothing is built
    task.fetch()                        # download missing inputs (dataset.download=true)
    task.identity()                     # load + check the inputs; their digests join the run hash
    task.run_name()                     # readable part of the run directory's name
    task.setup(ctx)                     # build data (self.train: the training batches) + model
    task.param_groups(model)            # optimizer groups (optional "lr_scale")
    loop over steps:
        loss, logs = task.training_step(forward_model, batch)
        task.after_step(model, step)    # e.g. FixMatch's EMA update
      every period:  task.evaluate(forward_model)         -> metrics (periodic, cheap)
    task.final_evaluate(forward_model, best_state)         -> results (full evaluation)
    task.summary(results)                                  -> the one-line summary

``task.state_dict()`` / ``task.load_state_dict()`` carry task-owned state (an EMA model, a
labeled-index digest, ...) through checkpoints; the engine saves model, optimizer, scheduler,
``task.train`` (the loader), the CN controller and every RNG itself.

Register a task with :func:`register_task`; ``task=<name>`` on the command line selects it.
``snc/tasks/classify.py`` is the example to read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

import torch
from torch import nn

from snc.errors import ConfigError

Logs = Dict[str, torch.Tensor]


@dataclass
class RunContext:
    """What the engine hands a task in :meth:`Task.setup`.

    Attributes:
        device: the training device (``cuda:<local_rank>`` under DDP).
        rank, world: this process and the number of processes (1 without DDP).
        progress: show tqdm bars (else periodic log lines).
        run_dir: the run directory (rank 0 writes it; other ranks must not write).
        seed: the run seed.
    """

    device: torch.device
    run_dir: Path
    seed: int = 0
    rank: int = 0
    world: int = 1
    progress: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Task:
    """Base class of the tasks (see the module docstring for the call order).

    Class attributes:
        name: the ``task=`` option.
        monitor: ``(metric, "min" | "max")`` the engine uses to keep ``ckpt/best.pt`` after
            each periodic evaluation, or None (no best checkpoint).

    Attributes set by :meth:`setup`:
        model: the network (``nn.Module``), with ``model.cn_controller`` when it has CN units.
        train: the training batches: an iterable with ``__len__`` (batches per epoch; step-based
            tasks may return a large number), ``state_dict()`` and ``load_state_dict()``. In
            epoch mode the engine iterates it once per epoch; in step mode
            (``max_steps`` set) it keeps one iterator and the loader must resume mid-stream
            from its ``state_dict()``.
        info: extra fields for ``results.json`` (dataset sizes, where data came from, ...).
    """

    name: ClassVar[str] = ""
    monitor: ClassVar[Optional[Tuple[str, str]]] = None

    def __init__(self, cfg) -> None:
        from snc.config import unit_options

        self.cfg = cfg
        # the SN/CN/position options, parsed and checked once per run, before anything is
        # built; every builder of the task reads them from here
        self.units = unit_options(cfg)
        self.check_augment()
        self.check_style()
        self.model: Optional[nn.Module] = None
        self.train: Any = None
        self.info: Dict[str, Any] = {}

    # ----- identity --------------------------------------------------------------------------
    def run_name(self) -> str:
        """Readable part of the run directory name (the engine appends seed and a hash)."""
        raise NotImplementedError

    def fetch(self) -> None:
        """Downloads the inputs that are missing and may be downloaded (``dataset.download``):
        the explicit fetch step of a launch, before :meth:`identity`, which only reads. Under
        torchrun every process calls it; one downloads while the others wait. Default:
        nothing to fetch."""

    def identity(self) -> Dict[str, Any]:
        """What the results depend on besides the config — digests of the data actually used
        (file digests, a published set's checksums) — checked and computed before the run
        directory exists. Input errors raise :class:`ConfigError` here, so a bad input leaves no
        run folder. The engine adds the world size. Default: nothing beyond the config."""
        return {}

    def method(self) -> str:
        """Short method label (W&B ``job_type``): the units' label (``basic``, ``sn``, ``se``,
        ``cn``, ``sncn``, ``secn``: :func:`snc.config.unit_label`); tasks append their own
        parts (e.g. ``-augmix``)."""
        return self.units.label

    augments: ClassVar[bool] = False
    """Whether the task applies the ``augment`` option (the Table 1 baselines); a task that
    does not refuses ``augment != none`` when it is built."""

    def check_augment(self) -> None:
        augment = (self.cfg.get("augment") or {}).get("name", "none")
        if augment != "none" and not self.augments:
            raise ConfigError(f"augment={augment} is a classification baseline (Table 1); "
                              f"task={self.cfg.task.name} has its own augmentation: use "
                              "augment=none")

    styles: ClassVar[bool] = False
    """Whether the task takes a style method of related work (``style=``) in CrossNorm's slot;
    a task that does not refuses it when it is built."""

    def check_style(self) -> None:
        """The ``style`` option against the task and its data: the task takes style methods,
        the step is not compiled (the units draw on the host), ``mix=crossdomain`` has
        domain-labelled data, DSU has batches of two or more."""
        from snc.config import style_name
        from snc.ops import DSUOptions

        style, cfg = self.units.style, self.cfg
        if style is None:
            return
        name = style_name(style)
        if not self.styles:
            raise ConfigError(f"style={name} is compared on classification; task="
                              f"{cfg.task.name} takes CrossNorm only: use style=none")
        if cfg.get("compile", False):
            raise ConfigError(f"compile=true captures the whole training step, but style={name} "
                              "draws on the host: use compile=false with it")
        if getattr(style, "mix", "random") == "crossdomain" and not cfg.dataset.get("domains"):
            raise ConfigError(f"style.mix=crossdomain pairs the two domain halves of a batch, "
                              f"but dataset={cfg.dataset.name} has no domain labels: use "
                              "style.mix=random, or task=dg with a multi-domain dataset "
                              "(dataset=pacs ... and two balanced source domains)")
        if isinstance(style, DSUOptions) and int(cfg.batch_size) < 2:
            raise ConfigError(f"batch_size={cfg.batch_size}: DSU estimates the variance of the "
                              "statistics over the batch; use batch_size >= 2")

    def describe(self, model: nn.Module) -> Dict[str, Any]:
        """The run's description beyond what the engine knows (task, dataset, backbone, seed,
        length, device, parameters): merged into ``results.json``, the run header and the W&B
        tags. Default: the paper's units (position, crop, SN/CN/SE counts, the CN controller's
        ``active_num`` and ``prob``, IBN) and the preset's published cells."""
        from omegaconf import OmegaConf

        from snc.config import style_name
        from snc.models import count_units
        from snc.ops.style import StyleUnit

        cfg = self.cfg
        cn, placement, style = self.units.cn, self.units.placement, self.units.style
        units = count_units(model)
        paper = cfg.get("paper") or {}
        return {
            "position": placement.name or "default",
            "crop": cn.crop if cn is not None else None,
            "sn_units": units["sn"], "cn_units": units["cn"], "se_units": units["se"],
            "ibn": cfg.ibn.name,
            "style": style_name(style) if style is not None else "none",
            "style_units": sum(isinstance(m, StyleUnit) for m in model.modules()),
            "cn_active_num": cn.active_num if cn is not None else None,
            "cn_prob": cn.prob if cn is not None else None,
            "paper_cells": (OmegaConf.to_container(paper.cells, resolve=True)
                            if paper.get("cells") else []),
            # the official run script's (active_num, prob): the report says whether a grid's
            # chosen setting is it
            "paper_official": (OmegaConf.to_container(paper.official, resolve=True)
                               if paper.get("official") else None),
        }

    def units_text(self, meta: Mapping[str, Any]) -> str:
        """The units of the built model for the run header, from the parsed options and the
        unit counts of :meth:`describe` (in ``meta``), e.g. ``SN x16 (gates 1), CN x16
        (two_instance, crop neither, active_num 1, prob 0.5)``."""
        from snc.ops import SqueezeExcitationOptions

        sn, cn, style = self.units.sn, self.units.cn, self.units.style
        parts = []
        if isinstance(sn, SqueezeExcitationOptions) and meta.get("se_units"):
            parts.append(f"SE x{meta['se_units']} (reduction {sn.reduction})")
        elif sn is not None and meta.get("sn_units"):
            parts.append(f"SN x{meta['sn_units']} (gates {sn.gates})")
        if cn is not None and meta.get("cn_units"):
            parts.append(f"CN x{meta['cn_units']} ({cn.mode}, crop {cn.crop}, active_num "
                         f"{cn.active_num}, prob {cn.prob})")
        if style is not None and meta.get("style_units"):
            options = ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(style).items())
            parts.append(f"{meta['style']} x{meta['style_units']} ({options})")
        return ", ".join(parts) or "no SN/CN units"

    # ----- building --------------------------------------------------------------------------
    def build_model(self, *, pretrained: bool = True) -> nn.Module:
        """The task's network with the units of ``self.units`` and its controller, on the
        current default device. ``pretrained=False`` skips every weight file and download
        (the structure check below, and builds whose weights come from a checkpoint)."""
        raise NotImplementedError

    def check_model(self) -> None:
        """Builds the model's structure on the meta device (no memory, no weights, no draws):
        an unknown position, bad blocks or too large an ``active_num`` fail as a
        :class:`ConfigError` before any file is written. Each task calls it at the end of its
        ``__init__``, once its own options are read."""
        try:
            with torch.device("meta"):
                self.build_model(pretrained=False)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def setup(self, ctx: RunContext) -> None:
        """Builds ``self.train``, the evaluation data and ``self.model`` (on ``ctx.device``)."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]:
        """Optimizer parameter groups. A group may set ``lr_scale`` (multiplies the base lr, e.g.
        segmentation heads x10) and ``weight_decay``.

        Default: every trainable parameter decayed (the official runs decay BN and SN too);
        ``optimizer.no_decay_bn_bias=true`` exempts the 1-D ones (norms, biases)."""
        exempt = bool(self.cfg.optimizer.get("no_decay_bn_bias", False))
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if exempt and p.ndim <= 1 else decay).append(p)
        return [{"params": decay}] + ([{"params": no_decay, "weight_decay": 0.0}]
                                      if no_decay else [])

    # ----- training --------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> Tuple[torch.Tensor, Logs]:
        """The loss of one batch (the engine runs backward and the optimizer) and detached
        tensors to log under ``train/<name>``."""
        raise NotImplementedError

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (``step`` counts from 1)."""

    # ----- evaluation ------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        """Periodic evaluation (every ``eval_every`` epochs / ``eval_every_steps`` steps)."""
        return {}

    def final_evaluate(self, model: nn.Module, best_state: Optional[Mapping[str, Any]]
                       ) -> Dict[str, Any]:
        """The results of the finished run. ``best_state``: the state dict of the model saved
        at the best periodic evaluation (``monitor``), or None."""
        raise NotImplementedError

    def summary(self, results: Mapping[str, Any]) -> str:
        """The one-line summary printed at the end, e.g. ``clean error 9.20% | mCE 15.99%``."""
        raise NotImplementedError

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Task-owned state for checkpoints (plain tensors/numbers/strings only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


_TASKS: Dict[str, Type[Task]] = {}


def register_task(name: str) -> Callable[[Type[Task]], Type[Task]]:
    """Class decorator: ``@register_task("classify")``."""

    def wrap(cls: Type[Task]) -> Type[Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def list_tasks() -> List[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Type[Task]:
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(list_tasks())}"
                          ) from None
