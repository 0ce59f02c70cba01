"""Domain generalization: train on some domains of a multi-domain set, test on a held-out one.

The recipe (docs/dg.md), for PACS, OfficeHome, VLCS, TerraIncognita, DomainNet
(:mod:`snc.data.dg_sources`) and any folder ``<domain>/<class>/<image>``:

1. **Domains** (``__init__``): ``dataset.test_domain`` is held out; ``dataset.source_domains``
   are trained on (default: all the others; one gives single-source DG). Every other domain is
   held out too, and evaluated: a run holding out two domains is what DomainBed's
   leave-one-domain-out selection reads.
2. **Splits** (``setup``): every domain is split as DomainBed splits it (``task.holdout``, 20 %:
   the *out* split; seeded by ``(seed, domain index)``). Training uses the *in* split of each
   source domain; the *out* splits are the training-domain validation sets.
3. **Training batches**: ``task.sampling=balanced`` (DomainBed: ``batch_size`` images of every
   source domain per step) or ``random`` (Dassl: ``batch_size`` images from the union), with
   the random resized crop, flip and colour jitter made on the device
   (:class:`snc.data.dg.DomainBatches`). ``task.freeze_bn`` keeps BatchNorm in evaluation mode
   (DomainBed's ResNet).
4. **Evaluation**, at every period and at the end: the accuracy of every domain's *in* and *out*
   split. ``val/accuracy`` is the mean *out* accuracy of the source domains, ``test/accuracy``
   the test domain's accuracy on ``task.test_split`` (``in``: DomainBed; ``all``: Dassl). The
   run keeps every evaluation (``results.json["dg"]["history"]``) and reports
   ``test/accuracy@last``, ``@training_domain`` (the evaluation with the best validation
   accuracy) and ``@oracle`` (DomainBed's: the last evaluation, whose hyper-parameters the
   report picks by the test domain's *out* split). The report applies the rules across runs
   too (hyper-parameter search, leave-one-domain-out): :mod:`snc.report.selection`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from snc.augment.augmix import normalize
from snc.data.dg import (
    SAMPLINGS,
    CropOptions,
    DomainBatches,
    DomainFolder,
    decode_domains,
    scan_domains,
    split_domain,
    write_domain_folder,
)
from snc.errors import ConfigError
from snc.precision import autocast_context
from snc.tasks.base import RunContext, Task, register_task

log = logging.getLogger("snc")

TEST_SPLITS = ("in", "all")


def domain_options(cfg: DictConfig) -> Tuple[Tuple[str, ...], str, Tuple[str, ...]]:
    """``(domains, test_domain, source_domains)`` of ``cfg.dataset``, checked.

    Raises:
        ConfigError: a dataset without domains, a test or source domain it does not have, a
            source domain equal to the test domain, no source domain.
    """
    ds = cfg.dataset
    domains = tuple(ds.get("domains") or ())
    if not domains:
        raise ConfigError(f"task=dg trains on a multi-domain dataset; dataset={ds.name} has no "
                          "domains: use dataset=pacs|office_home|vlcs|terra_incognita|"
                          "domain_net|dg_synthetic (or dataset=dg_folder dataset.root=<path>)")
    test = ds.get("test_domain")
    if test is None or str(test) not in domains:
        raise ConfigError(f"dataset.test_domain={test}: {ds.name} has the domains "
                          f"{', '.join(domains)}; choose one of them")
    test = str(test)
    held = {test}
    val = ds.get("val_domain")
    if val is not None:
        if str(val) not in domains:
            raise ConfigError(f"dataset.val_domain={val}: {ds.name} has the domains "
                              f"{', '.join(domains)}; choose one of them (or null)")
        held.add(str(val))
    sources = ds.get("source_domains")
    if sources is None:
        sources = tuple(d for d in domains if d not in held)
        if not sources:
            raise ConfigError(f"dataset.val_domain={val} leaves no domain to train on")
    else:
        sources = (str(sources),) if isinstance(sources, str) else tuple(str(s) for s in sources)
        unknown = [s for s in sources if s not in domains]
        if unknown:
            raise ConfigError(f"dataset.source_domains has {', '.join(unknown)}, which "
                              f"{ds.name} does not have; its domains: {', '.join(domains)}")
        if val is not None and str(val) != test:
            raise ConfigError("dataset.val_domain holds a second domain out of the default "
                              "sources; with dataset.source_domains given, drop val_domain")
        if test in sources:
            raise ConfigError(f"dataset.source_domains includes the test domain {test}: a "
                              "held-out domain cannot be trained on; drop it from "
                              "source_domains or choose another test_domain")
        if len(set(sources)) != len(sources):
            raise ConfigError(f"dataset.source_domains={list(sources)} repeats a domain")
        if not sources:
            raise ConfigError("dataset.source_domains is empty: train on at least one domain")
    return domains, test, tuple(sources)


def freeze_batch_norm(model: nn.Module) -> List[nn.Module]:
    """The BatchNorm layers of ``model`` (kept in evaluation mode during training: running
    statistics used and not updated, affine parameters still trained; DomainBed's ResNet)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _dropout_hook(p: float):
    def hook(module: nn.Module, args):
        return (nn.functional.dropout(args[0], p, module.training),) + tuple(args[1:])
    return hook


@register_task("dg")
class DomainGeneralization(Task):
    """Accuracy on a held-out domain, with every domain's validation split for model selection."""

    styles = True  # MixStyle, DSU, EFDMix, pAdaIN in CrossNorm's slot
    monitor = ("val/accuracy", "max")

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.domains, self.test_domain, self.sources = domain_options(cfg)
        t = cfg.task
        self.sampling = str(t.sampling)
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"task.sampling={self.sampling}; choose balanced (DomainBed) or "
                              "random (Dassl)")
        self.test_split = str(t.test_split)
        if self.test_split not in TEST_SPLITS:
            raise ConfigError(f"task.test_split={self.test_split}; choose in (DomainBed: the "
                              "test domain's 80 % split) or all (Dassl: every image)")
        self.holdout = float(t.holdout)
        if not 0 < self.holdout < 1:
            raise ConfigError(f"task.holdout={self.holdout}: the validation fraction of each "
                              "domain must be in (0, 1), e.g. 0.2")
        self.dropout = float(t.get("dropout", 0.0))
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"task.dropout={self.dropout} must be in [0, 1)")
        c = t.crop
        self.crop = CropOptions(size=int(cfg.dataset.image_size), scale=tuple(c.scale),
                                ratio=tuple(c.ratio), flip=bool(c.flip), jitter=float(c.jitter),
                                grayscale=float(c.grayscale))
        style = self.units.style
        if style is not None and getattr(style, "mix", "random") == "crossdomain":
            if len(self.sources) < 2:
                raise ConfigError(f"style.mix=crossdomain mixes statistics across training "
                                  f"domains, but there is one source domain "
                                  f"({self.sources[0]}): use style.mix=random, or train on two "
                                  "domains or more")
            if self.sampling != "balanced" or len(self.sources) != 2:
                raise ConfigError("style.mix=crossdomain pairs the two domain halves of a "
                                  "batch: use task.sampling=balanced with exactly two "
                                  "dataset.source_domains (or style.mix=random)")
        if cfg.get("compile", False):
            raise ConfigError("task=dg trains eagerly (its step is not captured as one graph "
                              "yet): use compile=false")
        self.folder: Optional[DomainFolder] = None
        self.history: List[Dict[str, Any]] = []
        self.step = 0
        self.check_model()

    # ----- identity --------------------------------------------------------------------------
    def root(self) -> Path:
        ds = self.cfg.dataset
        if ds.get("root"):
            return Path(str(ds.root)).expanduser()
        if ds.get("generated"):
            return Path(self.cfg.paths.data_dir) / str(ds.name)
        from snc.data.dg_sources import dataset_root

        return dataset_root(str(ds.name), Path(self.cfg.paths.data_dir))

    def _missing(self) -> str:
        ds = self.cfg.dataset
        if ds.get("generated") or ds.get("root"):
            return ""
        from snc.data.dg_sources import missing_message

        return missing_message(str(ds.name), Path(self.cfg.paths.data_dir))

    def fetch(self) -> None:
        """The generated set is written once; a published set is downloaded when
        ``dataset.download`` is on (resumable, checksums verified)."""
        from snc.distributed import main_process_first

        ds = self.cfg.dataset
        with main_process_first():
            if ds.get("generated"):
                write_domain_folder(self.root(), per_class=int(ds.per_class),
                                    size=int(ds.image_size), seed=int(ds.get("data_seed", 0)),
                                    domains=tuple(ds.domains))
            elif ds.get("download", False) and not ds.get("root") and not self.root().is_dir():
                from snc.data.dg_sources import download_domain_set

                download_domain_set(str(ds.name), Path(self.cfg.paths.data_dir))

    def identity(self) -> Dict[str, Any]:
        classes = None
        if not (self.cfg.dataset.get("generated") or self.cfg.dataset.get("root")):
            from snc.data.dg_sources import DOMAIN_SETS

            spec = DOMAIN_SETS.get(str(self.cfg.dataset.name))
            classes = spec.classes if spec is not None else None
        self.folder = scan_domains(self.root(), self.domains, classes, missing=self._missing())
        count = int(self.cfg.dataset.num_classes)
        if len(self.folder.classes) != count:
            raise ConfigError(f"{self.folder.root} has {len(self.folder.classes)} classes, "
                              f"dataset.num_classes={count}: set dataset.num_classes="
                              f"{len(self.folder.classes)} (or check the folder)")
        return {"dg_folder": self.folder.digest()}

    def run_name(self) -> str:
        cfg = self.cfg
        name = (f"{cfg.dataset.name}-{cfg.backbone.name}-{self.method()}-"
                f"{cfg.position.name or 'default'}-test_{self.test_domain}")
        default = tuple(d for d in self.domains if d != self.test_domain)
        if self.sources != default:  # single-source, or a leave-one-domain-out run
            name += "-from_" + "+".join(self.sources)
        hp = int(cfg.task.get("hparams_seed", 0))
        return name + (f"-hp{hp}" if hp else "")

    # ----- building --------------------------------------------------------------------------
    def build_model(self, *, pretrained: bool = True) -> nn.Module:
        from snc.tasks.classify import build_network

        model = build_network(self.cfg, int(self.cfg.dataset.num_classes), pretrained,
                              units=self.units)
        if self.dropout > 0:
            head = getattr(model, "fc", None)
            if not isinstance(head, nn.Linear):
                raise ConfigError(f"task.dropout={self.dropout} applies to the features before "
                                  "a ResNet's fc layer; this backbone has none: task.dropout=0")
            head.register_forward_pre_hook(_dropout_hook(self.dropout))
        return model

    def setup(self, ctx: RunContext) -> None:
        cfg = self.cfg
        if self.folder is None:
            self.identity()
        folder = self.folder
        size = int(cfg.dataset.image_size)
        cache = Path(cfg.paths.data_dir) / "cache" / "dg" / str(cfg.dataset.name)
        arrays = decode_domains(folder, size, cache, progress=ctx.progress)
        on_device = bool(cfg.dataset.get("on_device", True))
        where = ctx.device if on_device else torch.device("cpu")
        self.device = ctx.device
        self.images: Dict[str, torch.Tensor] = {}
        self.labels: Dict[str, torch.Tensor] = {}
        self.splits: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        trial = int(cfg.seed)
        for i, d in enumerate(folder.domains):
            arr = arrays[d]  # a read-only memory map of the cache is copied once
            arr = arr if arr.flags.writeable else np.array(arr)
            self.images[d] = torch.from_numpy(arr).to(where)
            self.labels[d] = torch.tensor([label for _, label in folder.files[d]],
                                          dtype=torch.int64, device=where)
            self.splits[d] = split_domain(folder.count(d), self.holdout, trial, i)
        self.mean = tuple(float(v) for v in cfg.dataset.mean)
        self.std = tuple(float(v) for v in cfg.dataset.std)
        self._mean = torch.tensor(self.mean, device=ctx.device).view(1, -1, 1, 1)
        self._std = torch.tensor(self.std, device=ctx.device).view(1, -1, 1, 1)
        self.train = DomainBatches(  # the source domains' in splits, indexed in place
            [self.images[d] for d in self.sources], [self.labels[d] for d in self.sources],
            self.sampling, int(cfg.batch_size), self.crop, self.mean, self.std, ctx.device,
            seed=int(cfg.seed) + 7919 * ctx.rank, channels_last=bool(cfg.channels_last),
            endless=cfg.get("max_steps") is not None,
            indices=[torch.from_numpy(self.splits[d][0]) for d in self.sources])
        self.model = self.build_model().to(ctx.device)
        self._bns = freeze_batch_norm(self.model) if cfg.task.freeze_bn else []
        self.amp = str(cfg.amp)
        self.info = {
            "test_domain": self.test_domain, "source_domains": list(self.sources),
            "domains": list(folder.domains), "classes": list(folder.classes),
            "images": {d: folder.count(d) for d in folder.domains},
            "train_images": int(sum(len(self.splits[d][0]) for d in self.sources)),
            "sampling": self.sampling, "test_split": self.test_split, "holdout": self.holdout,
            "freeze_bn": bool(cfg.task.freeze_bn),
        }
        log.info("domains: train %s (%d images, %s batches), test %s (%s split)",
                 "+".join(self.sources), self.info["train_images"], self.sampling,
                 self.test_domain, self.test_split)

    def before_step(self) -> None:
        for m in self._bns:  # DomainBed's freeze_bn: running statistics fixed
            m.eval()
        self.model.cn_controller.begin_step()

    def training_step(self, model, batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Cross-entropy on the batch, with the units switched on by their controller (CN:
        ``active_num`` units with probability ``prob``; a style method: every unit, each with
        its own coin), as classification's ``cn`` objective."""
        from snc.tasks.objectives import cn

        return cn(model, batch, self.model.cn_controller, None)

    def after_step(self, model: nn.Module, step: int) -> None:
        self.step = step

    # ----- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def _correct(self, model: nn.Module, domain: str, idx: np.ndarray) -> np.ndarray:
        """Per image of ``domain[idx]``: 1 where ``model`` is right."""
        images, labels = self.images[domain], self.labels[domain]
        bs = int(self.cfg.eval_batch_size)
        out = []
        for start in range(0, len(idx), bs):
            part = torch.as_tensor(idx[start:start + bs], device=images.device)
            x = normalize(images[part].to(self.device).permute(0, 3, 1, 2), self._mean,
                          self._std)
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.device, self.amp):
                pred = model(x).argmax(1)
            out.append((pred == labels[part].to(self.device)).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, bool)

    def _evaluate_all(self, model: nn.Module) -> Dict[str, Any]:
        was = model.training
        model.eval()
        record: Dict[str, Any] = {"step": int(self.step), "domains": {}}
        try:
            for d in self.domains:
                inn, out = self.splits[d]
                c_in, c_out = self._correct(model, d, inn), self._correct(model, d, out)
                record["domains"][d] = {
                    "in": float(c_in.mean() * 100) if len(c_in) else None,
                    "out": float(c_out.mean() * 100) if len(c_out) else None,
                    "all": float(np.concatenate([c_in, c_out]).mean() * 100),
                    "n_in": int(len(c_in)), "n_out": int(len(c_out))}
        finally:
            model.train(was)
        return record

    def _metrics(self, record: Mapping[str, Any]) -> Dict[str, float]:
        accs = record["domains"]
        m: Dict[str, float] = {}
        for d, a in accs.items():
            m[f"{d}/accuracy"] = a["all"]
            m[f"{d}/in_accuracy"] = a["in"]
            m[f"{d}/out_accuracy"] = a["out"]
        m["val/accuracy"] = float(np.mean([accs[d]["out"] for d in self.sources]))
        m["test/accuracy"] = accs[self.test_domain][self.test_split]
        return m

    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        record = self._evaluate_all(getattr(model, "module", model))
        if self.history and self.history[-1]["step"] == record["step"]:
            self.history[-1] = record
        else:
            self.history.append(record)
        metrics = self._metrics(record)  # the periodic log: each domain, validation, test
        return {k: v for k, v in metrics.items() if not k.endswith(("in_accuracy",
                                                                    "out_accuracy"))}

    def final_evaluate(self, model: nn.Module, best_state: Optional[Mapping[str, Any]]
                       ) -> Dict[str, Any]:
        """Every domain's accuracy at the last step, the in-run selection rules, and the whole
        evaluation history (``dg.history``: what the report's cross-run rules read)."""
        if not self.history or self.history[-1]["step"] != self.step:
            self.evaluate(model)  # the last step was not evaluated (eval_every > 1)
        results: Dict[str, Any] = dict(self._metrics(self.history[-1]))
        results.update(select_in_run(self.history, self.sources, self.test_domain,
                                     self.test_split))
        results["dg"] = {
            "test_domain": self.test_domain, "source_domains": list(self.sources),
            "held_out": [d for d in self.domains if d not in self.sources],
            "domains": list(self.domains), "test_split": self.test_split,
            "holdout": self.holdout, "sampling": self.sampling,
            "hparams_seed": int(self.cfg.task.get("hparams_seed", 0)),
            "trial_seed": int(self.cfg.seed), "history": self.history}
        return results

    def summary(self, results: Mapping[str, Any]) -> str:
        return (f"test domain {self.test_domain}: accuracy {results['test/accuracy@last']:.2f}% "
                f"(last step) | {results['test/accuracy@training_domain']:.2f}% (training-"
                f"domain validation, val {results['val/accuracy@training_domain']:.2f}%)")

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"history": self.history, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [dict(r) for r in state.get("history", [])]
        self.step = int(state.get("step", 0))


def select_in_run(history: Sequence[Mapping[str, Any]], sources: Sequence[str], test: str,
                  test_split: str) -> Dict[str, Any]:
    """The rules one run applies to its own evaluations (:func:`snc.report.selection.run_choice`:
    the report's, on one run): ``last``, ``training_domain`` (the step with the best mean *out*
    accuracy of the source domains) and ``oracle`` (DomainBed's: the last step, whose score,
    the test domain's *out* accuracy, the report compares across hyper-parameters)."""
    from snc.report.selection import run_choice

    last, best, oracle = (run_choice(history, sources, test, test_split, rule)
                          for rule in ("last", "training_domain", "oracle"))
    return {
        "test/accuracy@last": last.test,
        "test/accuracy@training_domain": best.test,
        "val/accuracy@training_domain": best.val,
        "step@training_domain": best.step,
        "test/accuracy@oracle": oracle.test,
        "val/accuracy@oracle": oracle.val,
    }
