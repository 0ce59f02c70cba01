"""FixMatch with CrossNorm: semi-supervised CIFAR-10 (paper Fig. 4).

Sohn et al., "FixMatch", NeurIPS 2020, as re-implemented in kekmodel/FixMatch-pytorch @040be3b
(``train.py``; the code the CrossNorm authors built on), with CrossNorm units in the network.
The recipe, top to bottom:

1. data: ``task.labels`` labeled images drawn per class with NumPy's legacy RNG seeded with
   ``task.label_seed`` (saved to ``<run_dir>/labeled_indices.json``); all training images are
   unlabeled data. Each step: 64 labeled weak views, ``mu * 64`` unlabeled images with a weak
   and a strong view (``task.strong``: ``randaugment`` = RandAugmentMC(2, 10) + Cutout, the
   paper's "RA"; ``weak`` = a second weak view, "WA").
2. one forward of the concatenated ``64 + 2 * 448 = 960`` images (BatchNorm sees all of them).
   With probability ``cn.prob`` the CN controller switches ``cn.active_num`` units on for it;
   ``task.cn_apply_to`` says which rows CrossNorm may touch (below).
3. ``L = CE(labeled) + lambda_u * sum(mask * CE(strong, pseudo)) / (mu * 64)``: pseudo-labels are
   the argmax of ``softmax(weak / T)`` (detached), ``mask = max prob >= threshold``; the
   unlabeled loss is divided by all unlabeled images, not by the masked ones.
4. after each optimizer step an EMA of the parameters (decay 0.999; buffers copied from the
   live model) is updated; every periodic evaluation and the final one use the EMA model.

CrossNorm inside the single forward (``task.cn_apply_to``; the paper, Sec. 4.1, leaves it open):

- ``all``: the whole 960-row batch; partners and content may be any rows, so labeled, weak and
  strong views exchange statistics.
- ``unlabeled``: rows of both unlabeled views (weak and strong) are re-styled, with partners
  drawn among those rows only; the 64 labeled rows pass every CN unit unchanged. Since the
  pseudo-labels come from the same forward, CN on the weak views changes them too, as it does
  with ``all``.
- ``strong``: only the strong views are re-styled, partners among the strong views; the
  pseudo-labels come from clean weak views (an extra variant, not in the paper).

The restriction is a :class:`RowCrossNorm` (a CrossNorm subclass applying the op to
``x[row_start:]``) put in place of the CrossNorm modules of the built model, with a new
controller over them; nothing in :mod:`snc.ops` changes.

Engine keys in ``configs/task/fixmatch.yaml``: SGD lr 0.03 Nesterov momentum 0.9, weight decay
5e-4 on weights only (:meth:`FixMatchTask.param_groups`), ``schedule.name=fixmatch``
(``lr0 * cos(7 pi t / (16 T))``), ``max_steps = 2^20``, ``eval_every_steps = 1024``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snc.data.fixmatch import (
    STRONG,
    FixMatchBatch,
    FixMatchStream,
    indices_digest,
    labeled_split,
    save_split,
)
from snc.errors import ConfigError
from snc.eval.robustness import (
    corruption_metrics,
    count_errors,
    error_percent,
    evaluate_corruptions,
)
from snc.models import attach_controller, build_model
from snc.ops import CNSN, CrossNorm, CrossNormOptions, RowCrossNorm, find_cross_norm_units
from snc.tasks.base import Logs, RunContext, Task, register_task

CN_APPLY_TO = ("all", "unlabeled", "strong")
ARRAY_DATASETS = ("cifar10", "cifar100", "synthetic", "npz")
CLASS_SIZES = {"cifar10": 5000, "cifar100": 500}  # training images per class


# ----- options -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FixMatchOptions:
    """``cfg.task`` of ``task=fixmatch``, validated (see ``configs/task/fixmatch.yaml``)."""

    labels: int = 4000
    label_seed: int = 1
    mu: int = 7
    threshold: float = 0.95
    temperature: float = 1.0
    lambda_u: float = 1.0
    strong: str = "randaugment"
    cn_apply_to: str = "all"
    ema_decay: float = 0.999
    last_evals: int = 20
    crop_padding: int = 4

    @classmethod
    def from_cfg(cls, cfg) -> "FixMatchOptions":
        """Reads and validates ``cfg.task`` and the dataset facts known before loading."""
        t = cfg.task
        names = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(t.keys()) - names - {"name"})
        if unknown:
            raise ConfigError(f"unknown task.{unknown[0]} for task=fixmatch; the options are "
                              f"{', '.join(sorted(names))}")
        try:
            opts = cls(**{k: t[k] for k in names if k in t})
        except TypeError as err:  # pragma: no cover - dataclass signature errors
            raise ConfigError(str(err)) from None
        opts.validate(cfg)
        return opts

    def validate(self, cfg) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if self.strong not in STRONG:
            bad(f"task.strong={self.strong!r}; choose randaugment (FixMatch RA: RandAugmentMC + "
                f"Cutout) or weak (WA: flip and crop only)")
        if self.cn_apply_to not in CN_APPLY_TO:
            bad(f"task.cn_apply_to={self.cn_apply_to!r}; choose all (the whole forward), "
                f"unlabeled (weak + strong views) or strong (strong views only)")
        if not isinstance(self.mu, int) or self.mu < 1:
            bad(f"task.mu={self.mu} must be an integer >= 1 (unlabeled images per labeled "
                f"image; FixMatch: 7)")
        if not 0.0 < float(self.threshold) <= 1.0:
            bad(f"task.threshold={self.threshold} must be in (0, 1] (the pseudo-label "
                f"confidence; FixMatch: 0.95)")
        if not float(self.temperature) > 0:
            bad(f"task.temperature={self.temperature} must be > 0 (FixMatch: 1)")
        if not float(self.lambda_u) >= 0:
            bad(f"task.lambda_u={self.lambda_u} must be >= 0 (FixMatch: 1)")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            bad(f"task.ema_decay={self.ema_decay} must be in [0, 1) (FixMatch: 0.999)")
        if int(self.last_evals) < 1:
            bad(f"task.last_evals={self.last_evals} must be >= 1 (FixMatch logs 20)")
        if int(self.crop_padding) < 0:
            bad(f"task.crop_padding={self.crop_padding} must be >= 0")
        d = cfg.dataset
        if d.name not in ARRAY_DATASETS:
            bad(f"task=fixmatch runs on 32x32 array datasets; dataset={d.name} is not one: use "
                f"dataset=cifar10, cifar100, synthetic or npz")
        if int(cfg.batch_size) < 1:
            bad(f"batch_size={cfg.batch_size} (the labeled batch) must be >= 1 (FixMatch: 64)")
        labels = self.labels
        if not isinstance(labels, int) or labels < 1:
            bad(f"task.labels={labels!r} must be a positive integer (250, 4000, ...)")
        num_classes = d.get("num_classes")
        if num_classes:
            c = int(num_classes)
            if labels % c:
                lo = max(c, labels // c * c)
                bad(f"task.labels={labels} is not divisible by the {c} classes (the draw takes "
                    f"the same number per class): use task.labels={lo} or {lo + c}")
            size = CLASS_SIZES.get(d.name)
            if d.name == "synthetic":
                size = int(d.num_train) // c
            if size is not None and labels // c > size:
                bad(f"task.labels={labels} asks for {labels // c} images per class, but "
                    f"{d.name} has {size} per class: use task.labels <= {size * c}")


# ----- CrossNorm restricted to rows -----------------------------------------------------------

def restrict_cross_norm(model: nn.Module, options: CrossNormOptions, seed: int
                        ) -> List[RowCrossNorm]:
    """Replaces every CrossNorm of ``model``'s CNSN units by a :class:`~snc.ops.RowCrossNorm`
    and gives the model a new controller over them (the same options and seed)."""
    for unit in model.modules():
        if isinstance(unit, CNSN) and isinstance(unit.cn, CrossNorm) \
                and not isinstance(unit.cn, RowCrossNorm):
            unit.cn = RowCrossNorm.from_unit(unit.cn)
    units = find_cross_norm_units(model)
    if not all(isinstance(u, RowCrossNorm) for u in units):  # pragma: no cover - bare CN
        raise ValueError("a CrossNorm module outside a CNSN unit cannot be row-restricted")
    attach_controller(model, options, seed, "the FixMatch network")
    return units  # type: ignore[return-value]


# ----- EMA -------------------------------------------------------------------------------------

class ModelEMA:
    """FixMatch's ``ModelEMA``: parameters averaged, buffers copied, after each step.

    ``ema = decay * ema + (1 - decay) * live`` for every parameter; BatchNorm running
    statistics (all buffers) are copied from the live model.

    Args:
        model: the live model.
        decay: EMA decay (FixMatch: 0.999).
        replica: a module of the same structure to hold the average (default: a deep copy of
            ``model``); it is loaded with ``model``'s state.
    """

    def __init__(self, model: nn.Module, decay: float, replica: Optional[nn.Module] = None
                 ) -> None:
        self.module = replica if replica is not None else copy.deepcopy(model)
        self.module.load_state_dict(model.state_dict())
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self._param_names = [n for n, _ in self.module.named_parameters()]
        self._buffer_names = [n for n, _ in self.module.named_buffers()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model`` (unwrapped, same structure)."""
        live = dict(model.named_parameters())
        ema = dict(self.module.named_parameters())
        ema_p = [ema[n] for n in self._param_names]
        live_p = [live[n].detach() for n in self._param_names]
        torch._foreach_mul_(ema_p, self.decay)
        torch._foreach_add_(ema_p, live_p, alpha=1.0 - self.decay)
        live_b = dict(model.named_buffers())
        ema_b = dict(self.module.named_buffers())
        for n in self._buffer_names:
            ema_b[n].copy_(live_b[n])

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


# ----- the task ------------------------------------------------------------------------------

@register_task("fixmatch")
class FixMatchTask(Task):
    """FixMatch (+ CrossNorm) on CIFAR-style arrays; see the module docstring."""

    monitor = None  # the periodic evaluations are of the EMA model, kept in the task's history

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.opts = FixMatchOptions.from_cfg(cfg)
        self.num_classes = int(cfg.dataset.get("num_classes") or 10)  # the data's, once set up
        self.check_model()
        self.history: List[float] = []  # periodic EMA clean errors (%)
        self.history_steps: List[int] = []  # the step of each
        self.step = 0
        self.ema: Optional[ModelEMA] = None
        self.labeled_indices: Optional[np.ndarray] = None
        self.test = None
        self.corrupted = None

    # ----- identity --------------------------------------------------------------------------
    def run_name(self) -> str:
        o = self.opts
        variant = "ra" if o.strong == "randaugment" else "wa"
        sn = f"-{self.units.label[:2]}" if self.units.sn is not None else ""  # -sn or -se
        cn = f"-cn_{o.cn_apply_to}" if self.units.cn is not None else ""
        return (f"fixmatch-{self.cfg.dataset.name}-{self.cfg.backbone.name}-{o.labels}labels-"
                f"{variant}{sn}{cn}")

    # ----- building --------------------------------------------------------------------------
    def build_model(self, *, pretrained: bool = True) -> nn.Module:
        """The backbone with the configured SN/CN units (CN row-restricted where asked); no
        weights to load (``pretrained`` is unused)."""
        from omegaconf import OmegaConf

        overrides = self.cfg.backbone.get("overrides")
        overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
        sn, cn, placement = self.units.sn, self.units.cn, self.units.placement
        seed = int(self.cfg.seed)
        try:
            model = build_model(self.cfg.backbone.name, self.num_classes, sn=sn, cn=cn,
                                placement=placement, seed=seed, **overrides)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if cn is not None and self.opts.cn_apply_to != "all":
            restrict_cross_norm(model, cn, seed)
        return model

    def setup(self, ctx: RunContext) -> None:
        from snc.data.datasets import get_source
        from snc.data.loader import ArrayLoader

        cfg, o = self.cfg, self.opts
        d = cfg.dataset
        source = get_source(cfg, Path(cfg.paths.data_dir))
        if source.layout != "array":
            raise ConfigError(f"task=fixmatch needs an array dataset; dataset={d.name} is "
                              f"{source.layout}-based")
        (xtr, ytr), (xte, yte) = source.train, source.test
        ytr, yte = np.asarray(ytr, dtype=np.int64), np.asarray(yte, dtype=np.int64)
        num_classes = int(source.num_classes or int(max(ytr.max(), yte.max())) + 1)
        self.num_classes = num_classes
        self.labeled_indices = labeled_split(ytr, o.labels, num_classes, o.label_seed)
        if ctx.is_main:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            save_split(ctx.run_dir / "labeled_indices.json", self.labeled_indices, ytr,
                       seed=o.label_seed, num_classes=num_classes)
        # the network first, right after the engine's seeding: its init does not depend on
        # what the data preparation (e.g. generating a corrupted set) draws or does
        self.model = self.build_model().to(ctx.device)
        replica = self.build_model().to(ctx.device)
        self.ema = ModelEMA(self.model, o.ema_decay, replica)
        mean, std = list(d.mean), list(d.std)
        self.train = FixMatchStream(xtr, ytr, self.labeled_indices, batch_size=int(cfg.batch_size),
                                    mu=o.mu, mean=mean, std=std, strong=o.strong,
                                    padding=o.crop_padding, device=ctx.device, seed=ctx.seed,
                                    rank=ctx.rank, world=ctx.world)
        common = dict(mean=mean, std=std, device=ctx.device, rank=ctx.rank, world=ctx.world)
        self.test = ArrayLoader(xte, yte, batch_size=int(cfg.eval_batch_size), **common)
        self.info.update(dataset=d.name, num_train=len(xtr), num_test=len(xte),
                         num_labeled=len(self.labeled_indices), label_seed=o.label_seed,
                         labeled_sha256=indices_digest(self.labeled_indices),
                         strong=o.strong, cn_apply_to=o.cn_apply_to, eval_model="ema")
        self.corrupted = self._corrupted_sets(source, common, ctx)
        if self.corrupted is not None:
            self.corrupted.prepare()
            self.info["corrupted_set"] = "generated" if self.corrupted.generated else "published"

    def _corrupted_sets(self, source, common, ctx: RunContext):
        """The corrupted test sets as ``snc.data.datasets.build_data`` makes them, or None."""
        from snc.corruptions import ALL_CORRUPTIONS, CORRUPTIONS
        from snc.corruptions.sets import default_workers, generate_cifar_style
        from snc.data.datasets import CORRUPTED_MODES, ArrayCorruptedSets, corrupted_root
        from snc.data.loader import ArrayLoader

        cfg = self.cfg
        d = cfg.dataset
        mode = d.get("corrupted", "none")
        if mode not in CORRUPTED_MODES:
            raise ConfigError(f"dataset.corrupted={mode!r}; choose one of "
                              f"{', '.join(CORRUPTED_MODES)}")
        if mode == "none" or not cfg.get("evaluate_corruptions", True):
            return None
        root = corrupted_root(cfg, source)
        names = tuple(d.get("corruptions") or CORRUPTIONS)
        unknown = [c for c in names if c not in ALL_CORRUPTIONS]
        if unknown:
            raise ConfigError(f"dataset.corruptions has unknown names {unknown}; choose from "
                              f"{', '.join(ALL_CORRUPTIONS)}")
        xte, yte = source.test

        def generate() -> None:
            from snc.distributed import barrier

            if ctx.is_main:
                generate_cifar_style(xte, yte, root, corruptions=names,
                                     preset=d.corruption_preset,
                                     seed=d.get("corruption_seed", 0), workers=default_workers(),
                                     progress=ctx.progress, source=source.description)
            barrier()

        eval_bs = int(cfg.eval_batch_size)
        self.info.update(corrupted_dir=str(root))
        return ArrayCorruptedSets(
            root=root, corruptions=names, mode=mode, generate=generate,
            make_loader=lambda x, y: ArrayLoader(x, y, batch_size=eval_bs, **common))

    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]:
        """Weight decay on weights only: BatchNorm parameters and biases in a group without
        decay (FixMatch exempts every parameter whose name contains ``bn`` or ``bias``; for
        its WRN the two rules pick the same 3,626 parameters)."""
        decay, no_decay = [], []
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                exempt = isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "bias"
                (no_decay if exempt else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    # ----- training --------------------------------------------------------------------------
    def _row_start(self, batch: FixMatchBatch) -> Optional[int]:
        b, u = len(batch.labeled), len(batch.weak)
        return {"all": None, "unlabeled": b, "strong": b + u}[self.opts.cn_apply_to]

    def training_step(self, model: nn.Module, batch: FixMatchBatch
                      ) -> Tuple[torch.Tensor, Logs]:
        o = self.opts
        b, u = len(batch.labeled), len(batch.weak)
        x = torch.cat([batch.labeled, batch.weak, batch.strong])
        if self.cfg.get("channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        ctrl = self.model.cn_controller
        start = self._row_start(batch)
        for unit in ctrl.units:
            if isinstance(unit, RowCrossNorm):
                unit.row_start = start
        with ctrl.step() as cn_on:
            logits = model(x).float()
        logits_x, logits_w, logits_s = logits[:b], logits[b:b + u], logits[b + u:]
        loss_x = F.cross_entropy(logits_x, batch.targets)
        probs = torch.softmax(logits_w.detach() / o.temperature, dim=-1)
        confidence, pseudo = probs.max(dim=-1)
        mask = (confidence >= o.threshold).float()
        loss_u = (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean()
        loss = loss_x + o.lambda_u * loss_u
        correct = (pseudo == batch.unlabeled_targets).float()
        logs = {"loss_x": loss_x.detach(), "loss_u": loss_u.detach(), "mask": mask.mean(),
                "pseudo_accuracy": (correct * mask).sum() / mask.sum().clamp(min=1.0),
                "cn_on": torch.tensor(float(cn_on))}
        return loss, logs

    def after_step(self, model: nn.Module, step: int) -> None:
        self.ema.update(getattr(model, "module", model))
        self.step = step

    # ----- evaluation ------------------------------------------------------------------------
    def _clean_error(self) -> float:
        wrong, total = count_errors(self.ema.module, iter(self.test), self.cfg.get("amp", "none"))
        if total != self.test.total_samples:
            raise RuntimeError(f"evaluated {total} test images, expected "
                               f"{self.test.total_samples}")
        return error_percent(wrong[1], total)

    def _history_metrics(self) -> Dict[str, float]:
        h, k = self.history, int(self.opts.last_evals)
        return {"clean/error_best": min(h), f"clean/error_last{k}": sum(h[-k:]) / len(h[-k:])}

    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        """Clean test error of the EMA model (``model`` is not used), appended to the history;
        also the best and the mean of the last ``task.last_evals`` evaluations."""
        error = self._clean_error()
        self.history.append(error)
        self.history_steps.append(self.step)
        return {"clean/error": error, **self._history_metrics()}

    def final_evaluate(self, model: nn.Module, best_state: Optional[Mapping[str, Any]]
                       ) -> Dict[str, Any]:
        """The final EMA model: clean error, best / last-20 of the periodic history, and the
        corrupted sets (``mce`` over the 15 x 5 CIFAR-C errors). The final evaluation joins the
        history unless one was made at this step already (the engine skips the periodic
        evaluation of the last period when the task has no ``monitor``)."""
        amp = self.cfg.get("amp", "none")
        error = self._clean_error()
        if not self.history_steps or self.history_steps[-1] != self.step:
            self.history.append(error)
            self.history_steps.append(self.step)
        results: Dict[str, Any] = {"clean/error": error, **self._history_metrics(),
                                   "num_evaluations": len(self.history)}
        if self.corrupted is not None:
            errors = evaluate_corruptions(self.ema.module, self.corrupted, amp,
                                          expected=self.corrupted.expected)
            results.update(corruption_metrics(errors, self.cfg.dataset.get("protocol", "cifar")))
            results["corrupted_set"] = self.info["corrupted_set"]
        return results

    def summary(self, results: Mapping[str, Any]) -> str:
        k = int(self.opts.last_evals)
        line = (f"clean error {results['clean/error']:.2f}% (EMA; best "
                f"{results['clean/error_best']:.2f}%, mean of last {k} "
                f"{results[f'clean/error_last{k}']:.2f}%)")
        if "mce" in results:
            line += f" | mCE {results['mce']:.2f}% ({results.get('corrupted_set', '')} set)"
        return line

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"ema": self.ema.state_dict() if self.ema is not None else None,
                "history": torch.tensor(self.history, dtype=torch.float64),
                "history_steps": torch.tensor(self.history_steps, dtype=torch.long),
                "step": self.step,
                "labeled_sha256": (indices_digest(self.labeled_indices)
                                   if self.labeled_indices is not None else "")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.labeled_indices is not None and state.get("labeled_sha256") and \
                state["labeled_sha256"] != indices_digest(self.labeled_indices):
            raise ConfigError("the checkpoint was trained on a different labeled subset "
                              "(task.labels or task.label_seed changed): start a new run")
        if state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.history = [float(v) for v in state["history"]]
        self.history_steps = [int(v) for v in state["history_steps"]]
        self.step = int(state["step"])
