"""Image classification under corruption shift: the paper's Tables 1, 2 and 5-15.

The example to read before writing a task of your own. The recipe:

1. **Options** (``__init__``): the objective is resolved as the official scripts dispatch it
   (AugMix if on, CN if on, else CE) and checked against the rest of the config.
2. **Data and model** (``setup``): the dataset registry gives the train/test loaders and the
   corrupted test sets (published or generated once); ``build_network`` builds the backbone
   with its SN/CN units from the typed unit options.
3. **Training step**: the ``augment`` option (a Table 1 baseline: cutout, mixup, cutmix,
   autoaugment, adversarial; :mod:`snc.augment.baselines`) transforms the batch; then the
   objective (``ce``, ``cn``, ``consistency``, ``augmix``) turns a batch
   into a loss; the CN controller decides per step whether CN acts.
4. **Evaluation**: clean top-1 (and top-5) error counted over every sample; at the end every
   (corruption, severity) error, CIFAR mCE (plain mean) or ImageNet mCE (AlexNet-normalized).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from snc.augment.baselines import BatchAugment, check_options
from snc.config import Units, unit_options
from snc.data.datasets import (
    Data,
    Source,
    build_data,
    check_source,
    data_identity,
    fetch_data,
    get_source,
)
from snc.errors import ConfigError
from snc.eval.robustness import clean_error
from snc.eval.suite import ShiftSuite
from snc.models import attach, build_model
from snc.models.attach.core import check_input_size
from snc.models.attach.hub import SOURCES, hub_model_of
from snc.tasks import objectives
from snc.tasks.base import RunContext, Task, register_task

log = logging.getLogger("snc")


def method_name(cfg: DictConfig, units: Optional[Units] = None) -> str:
    """The units' label (:func:`snc.config.unit_label`) + ``-augmix``, ``-consistency`` and
    ``-<augment>``: the W&B job_type. ``units``: the run's parsed options (parsed from ``cfg``
    when not given)."""
    name = (units or unit_options(cfg)).label
    if cfg.augmix.enabled:
        name += "-augmix"
    if cfg.objective.name == "consistency":
        name += "-consistency"
    augment = augment_name(cfg)
    if augment != "none":
        name += f"-{augment}"
    return name


def augment_name(cfg: DictConfig) -> str:
    """The ``augment`` option (``none`` when the group is absent, as in older run configs)."""
    augment = cfg.get("augment")
    return "none" if augment is None else str(augment.get("name", "none"))


def build_network(cfg: DictConfig, num_classes: int, pretrained: bool = True,
                  units: Optional[Units] = None) -> torch.nn.Module:
    """The model of ``cfg``: backbone, SN/SE/CN units from the typed options ``units`` (a run's
    ``task.units``; parsed from ``cfg`` when not given), the controller (and the
    ``backbone.pretrained`` weights unless ``pretrained=False``). ``backbone=torchvision`` /
    ``timm``: the named network (``backbone.weights`` loaded before the units exist, unless
    ``pretrained=False``) with the units attached by block family."""
    units = units or unit_options(cfg)
    sn, cn, placement = units.sn, units.perturbation, units.placement
    if cfg.backbone.get("source") in SOURCES:  # backbone=torchvision | timm: units attached
        model = attach(hub_model_of(cfg.backbone, num_classes, pretrained), sn=sn, cn=cn,
                       placement=placement, seed=cfg.seed)
        size = cfg.dataset.get("image_size")
        if size and next(model.parameters()).is_meta:  # the task's validation: shapes only
            check_input_size(model, int(size))
        return model
    overrides = cfg.backbone.get("overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
    if cfg.backbone.get("supports_ibn", False):
        overrides["ibn"] = cfg.ibn.name
    model = build_model(cfg.backbone.name, num_classes, sn=sn, cn=cn, placement=placement,
                        seed=cfg.seed, **overrides)
    if pretrained and cfg.backbone.get("pretrained"):
        from snc.models.imagenet.resnet import load_pretrained

        report = load_pretrained(model, cfg.backbone.pretrained)
        log.info("loaded %s: missing %d keys (the units), unexpected %d, skipped %s",
                 cfg.backbone.pretrained, len(report["missing"]), len(report["unexpected"]),
                 report["skipped_shape_mismatch"])
    return model


@register_task("classify")
class Classify(Task):
    """Clean error and mCE of a classifier trained with SN/CN (and AugMix, consistency)."""

    augments = True  # the Table 1 baselines (augment=cutout|mixup|...)
    styles = True  # style=mixstyle|dsu|efdmix|padain in CrossNorm's slot

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        if cfg.ibn.name != "none" and not cfg.backbone.get("supports_ibn", False):
            raise ConfigError(f"ibn={cfg.ibn.name} applies to ImageNet ResNets "
                              f"(backbone=resnet50); {cfg.backbone.name} has no IBN variant: "
                              "use ibn=none")
        cn = self.units.cn
        self.augment = augment_name(cfg)
        self.augment_options = (OmegaConf.to_container(cfg.augment, resolve=True)
                                if self.augment != "none" else {})
        problem = check_options(self.augment, self.augment_options)
        if problem:
            raise ConfigError(problem)
        self.objective = objectives.resolve_objective(
            cfg.objective.name, cn_enabled=self.units.perturbation is not None,
            augmix_enabled=cfg.augmix.enabled,
            augment=self.augment)
        self.batch_augment: Optional[BatchAugment] = None
        self.objective_cfg = objectives.ObjectiveConfig(
            consist_wt=cn.consist_wt if cn is not None else 10.0,
            jsd_weight=cfg.augmix.jsd_weight,
            augmix_joint_cn=bool(cn.augmix_joint) if cn is not None else False)
        self.data: Optional[Data] = None
        self.source: Optional[Source] = None
        self.check_model()
        # every shift of evaluate.shifts known and fitting the model, before anything is written
        self.suite = ShiftSuite(cfg, int(cfg.dataset.get("num_classes") or 10))
        self.run_dir: Optional[Path] = None
        self.rank, self.world = 0, 1
        if self.eval_amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"evaluate.amp={self.eval_amp!r}; choose null (the training's "
                              "amp), none, bf16 or fp16")
        if cfg.get("compile", False) and self.augment != "none":
            raise ConfigError(f"compile=true captures the whole training step, but "
                              f"augment={self.augment} (snc.data.augment.BatchAugment) draws on "
                              "the host inside it: use compile=false with it")

    capturable_step = True
    """compile=true compiles forward, loss, backward and update as one step (the engine's
    CompiledStep); the CN draws are made in :meth:`before_step`."""

    def run_name(self) -> str:
        cfg = self.cfg
        name = (f"{cfg.dataset.name}-{cfg.backbone.name}-{self.method()}-"
                f"{cfg.position.name or 'default'}")
        cn = self.units.cn
        if cn is not None:
            name += f"-{cn.crop}-a{cn.active_num}-p{cn.prob}"
        return name

    def method(self) -> str:
        return method_name(self.cfg, self.units)

    def build_model(self, *, pretrained: bool = True) -> torch.nn.Module:
        num_classes = (self.data.num_classes if self.data is not None
                       else int(self.cfg.dataset.get("num_classes") or 10))
        return build_network(self.cfg, num_classes, pretrained, units=self.units)

    def identity(self) -> Dict[str, Any]:
        if self.source is None:  # not fetched: read what is there, download nothing
            self.source = get_source(self.cfg, Path(self.cfg.paths.data_dir), fetch=False)
        check_source(self.cfg, self.source)
        return data_identity(self.cfg, self.source)

    def fetch(self) -> None:
        """Downloads the clean set and its published corrupted set when missing
        (``dataset.download``), before :meth:`identity` reads them."""
        self.source = fetch_data(self.cfg, Path(self.cfg.paths.data_dir))

    def setup(self, ctx: RunContext) -> None:
        data = build_data(self.cfg, ctx.device, progress=ctx.progress, rank=ctx.rank,
                          world=ctx.world, source=self.source)
        self.data = data
        self.model = self.build_model().to(ctx.device)
        if data.corrupted is not None:
            c = data.corrupted
            log.info("%s corrupted test set: %s (%d corruptions x 5 severities)",
                     "generating (once)" if c.mode == "generate" else "checking", c.root,
                     len(c.corruptions))
            start = time.perf_counter()
            data.corrupted.prepare()
            log.info("corrupted test set ready in %.1f s", time.perf_counter() - start)
            data.info["corrupted_set"] = "generated" if data.corrupted.generated else "published"
        self.suite.prepare(data, data_dir=Path(self.cfg.paths.data_dir), progress=ctx.progress,
                           rank=ctx.rank)
        ctrl = self.model.cn_controller
        if len(ctrl) and self.cfg.get("compile", False):
            try:  # compiled steps: CN draws on the device, applied as masks
                ctrl.enable_capture(ctx.device)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        elif len(ctrl) and ctx.device.type != "cpu" and ctrl.capture_problem() is None:
            ctrl.enable_capture(ctx.device)  # GPUs: the same, eagerly (else the host draws)
        self.data, self.train, self.progress = data, data.train, ctx.progress
        self.run_dir, self.rank, self.world = ctx.run_dir, ctx.rank, ctx.world
        self.info = {"objective": self.objective, **data.info}
        if self.augment != "none":  # augment=none builds nothing and draws nothing
            # its own stream, per rank (as the loader's augmentation draws), checkpointed
            self.batch_augment = BatchAugment(
                self.augment, self.augment_options, self.cfg.dataset.mean, self.cfg.dataset.std,
                seed=int(self.cfg.seed) + 104_729 + 7919 * ctx.rank, device=ctx.device,
                channels_last=bool(self.cfg.channels_last))
            self.info["augment"] = self.augment

    def before_step(self) -> None:
        """The CN draws of the next step, on the device, outside the (compiled) step."""
        self.model.cn_controller.begin_step()

    def training_step(self, model, batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if self.batch_augment is not None:
            batch = self.batch_augment(model, batch)
        return objectives.REGISTRY[self.objective](model, batch, self.model.cn_controller,
                                                   self.objective_cfg)

    def state_dict(self) -> Dict[str, Any]:
        if self.batch_augment is None:
            return {}
        return {"augment": self.batch_augment.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.batch_augment is not None and "augment" in state:
            self.batch_augment.load_state_dict(state["augment"])

    @property
    def eval_amp(self) -> str:
        """``evaluate.amp`` (e.g. bf16 inference after fp32 training), else the training's."""
        return (self.cfg.get("evaluate") or {}).get("amp") or self.cfg.amp

    def evaluate(self, model) -> Dict[str, float]:
        return clean_error(model, self.data.test, self.data.num_classes, self.eval_amp)

    def final_evaluate(self, model, best_state: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        result = self.suite.evaluate(model, self.data, amp=self.eval_amp, progress=self.progress,
                                     world=self.world)
        if self.rank == 0 and self.run_dir is not None:
            result.write(self.run_dir, {"run_name": self.run_dir.name, "method": self.method(),
                                        "backbone": self.cfg.backbone.name,
                                        "dataset": self.cfg.dataset.name})
        return result.results()

    def summary(self, results: Mapping[str, Any]) -> str:
        from snc.console import interval_text

        ci = results.get("ci95")
        line = f"clean error {results['clean/error']:.2f}%{interval_text(ci, 'clean/error')}"
        if "mce" in results:
            line += (f" | mCE {results['mce']:.2f}%{interval_text(ci, 'mce')} "
                     f"({results.get('corrupted_set', '')} corrupted set)")
        others = [n for n, b in (results.get("shifts") or {}).items()
                  if b.get("mce") != results.get("mce") or b["kind"] == "single"]
        if others:
            line += f" | +{len(others)} shift{'s' if len(others) > 1 else ''} in results.json"
        missing = self.suite.missing(results)
        if missing and "run_dir" in results:  # a finished run asked for more shifts than it has
            line += (f" | not evaluated: {', '.join(missing)} (python -m snc.evaluate "
                     f"run_dir={results['run_dir']} shifts=[{','.join(self.suite.names)}])")
        return line
