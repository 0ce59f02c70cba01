"""Semantic segmentation under a domain shift: GTA5 -> Cityscapes (paper Table 3).

Recipe (paper Sec. 4.2; official CNSN ``config/gtav/gtav_fcn50_cnsn.yaml``):

1. Data: a seeded random quarter of GTA5 train (``dataset.subset=0.25``, list written to
   ``<run>/train_list.txt``), labelIds mapped to the 19 trainIds on the fly; image/label size
   mismatches and missing files are reported (count and ids) and dropped, or refused with
   ``dataset.mismatch=error``. Source validation: GTA5 val; target: Cityscapes val (fine).
2. Augmentation per sample (seeded, resumable): scale [0.5, 2], rotation +-10 deg (p 0.5),
   Gaussian blur 5x5 (p 0.5), flip, crop 713 with mean/255 padding; in the workers
   (``task.augment=cpu``) or as one batched warp on the GPU (``device``, the default there);
   normalization on the device.
3. Model: FCN on the dilated ResNet-50 (output stride 8), main head on layer4 and auxiliary
   head (loss weight 0.4) on layer3; SN at ``post_residual`` and CN (2-instance, style crop,
   active_num 1, prob 0.5) in all 16 bottlenecks unless ``position`` says otherwise;
   ImageNet-initialized backbone (``backbone.init``).
4. Optimizer groups: backbone (SN units included) at the base lr (0.01), heads at 10x
   (``lr_scale``); the engine runs SGD (momentum 0.9, wd 1e-4) with the poly schedule (0.9).
5. Loss: CE(main) + 0.4 CE(aux), ignore 255, at crop resolution; CN per step with p 0.5.
6. Evaluation: periodic = the official centre crop (``<domain>/miou_center``); final = the
   full-image sliding window (713, stride 476) with flip (``<domain>/miou``, primary) and the
   centre crop, for the last model and for the best one by ``monitor``
   (``<domain>/miou_best``...), per-class IoU, colourised predictions in ``<run>/predictions``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from snc.data.segmentation.base import (
    PairDataset,
    SegmentationDataError,
    choose_subset,
    read_list,
    size_mismatches,
    write_list,
)
from snc.data.segmentation.cityscapes import cityscapes_split
from snc.data.segmentation.device_transforms import RawSample, collate_raw, warp_batch
from snc.data.segmentation.gta5 import gta5_split, missing_pairs, read_split
from snc.data.segmentation.labels import IGNORE, NUM_CLASSES
from snc.data.segmentation.loader import SegmentationLoader
from snc.data.segmentation.transforms import (
    CenterCrop,
    TrainTransform,
    full_image,
    mean_fill,
    normalize,
)
from snc.distributed import barrier
from snc.errors import ConfigError
from snc.eval.segmentation import colorized_panel, evaluate_segmentation, metric_dict
from snc.models import count_parameters
from snc.ops.options import Placement
from snc.tasks.base import Logs, RunContext, Task, register_task

log = logging.getLogger("snc")

LAYOUTS = ("gta5", "cityscapes")
RESNET_POSITIONS = ("identity", "pre_residual", "post_residual", "post_addition", "image")
MONITORS = {"source": ("source/miou_center", "max"), "target": ("target/miou_center", "max")}


def _get(node: DictConfig, key: str, default: Any = None) -> Any:
    return node.get(key, default) if node is not None else default


@register_task("segment")
class SegmentTask(Task):
    """FCN-ResNet50 trained on a source domain, scored on its val split and on a target."""

    # the source validation split selects ckpt/best.pt: Cityscapes val is Table 3's test set
    monitor = MONITORS["source"]

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        t, d = cfg.task, cfg.dataset
        place = self.units.placement
        if cfg.backbone.name != "resnet50":
            raise ConfigError(f"task=segment builds FCN on resnet50; got backbone="
                              f"{cfg.backbone.name}: use backbone=resnet50")
        ibn = str(cfg.ibn.name)
        if ibn not in ("none", "a", "b"):
            raise ConfigError(f"ibn={ibn!r}; choose none, a or b")
        for what, pos in (("position", place.name), ("position.sn", place.sn),
                          ("position.cn", place.cn), ("task.sn_position",
                          t.sn_position), ("task.cn_position", t.cn_position)):
            if pos is not None and pos not in RESNET_POSITIONS:
                raise ConfigError(f"{what}={pos!r} is not a ResNet position; choose one of "
                                  f"{', '.join(RESNET_POSITIONS)}")
        if int(t.crop) < 8:
            raise ConfigError(f"task.crop={t.crop}: use a crop of at least 8 pixels (paper 713)")
        lo, hi = (float(v) for v in t.scale)
        if not 0 < lo <= hi:
            raise ConfigError(f"task.scale={list(t.scale)}: need 0 < min <= max (paper [0.5, 2])")
        if not 0 <= float(t.rotate_p) <= 1 or not 0 <= float(t.blur_p) <= 1:
            raise ConfigError("task.rotate_p and task.blur_p are probabilities in [0, 1]")
        if str(t.monitor) not in MONITORS:
            raise ConfigError(f"task.monitor={t.monitor!r}; choose source or target")
        self.monitor = MONITORS[str(t.monitor)]
        for node, what in ((d, "dataset"), (_get(d, "target"), "dataset.target")):
            if node is not None and str(node.layout) not in LAYOUTS:
                raise ConfigError(f"{what}.layout={node.layout!r}; choose gta5 or cityscapes")
        if str(_get(d, "mismatch", "drop")) not in ("drop", "error"):
            raise ConfigError(f"dataset.mismatch={d.mismatch!r}; choose drop or error")
        if not 0 < float(_get(d, "subset", 1.0)) <= 1:
            raise ConfigError(f"dataset.subset={d.subset}: a fraction in (0, 1] (paper: 0.25)")
        if str(t.augment) not in ("auto", "cpu", "device"):
            raise ConfigError(f"task.augment={t.augment!r}; choose auto (device on CUDA), cpu "
                              "(per-sample in the workers) or device (one batched warp)")
        if float(t.aux_weight) < 0:
            raise ConfigError(f"task.aux_weight={t.aux_weight} must be >= 0 (paper 0.4)")
        init = self._init()
        if init not in ("imagenet", "none") and not Path(init).exists():
            raise ConfigError(f"backbone.init={init}: no such file or run directory; use "
                              "imagenet, none, an snc run directory or a .pt file")
        width = (_get(cfg.backbone, "overrides") or {}).get("width", 64)
        if init == "imagenet" and int(width) != 64:
            raise ConfigError(f"backbone.overrides.width={width} has no ImageNet weights: set "
                              "backbone.init=none (or a checkpoint of that width)")
        self.device = torch.device("cpu")
        self.check_model()

    # ----- identity --------------------------------------------------------------------------
    def _init(self) -> str:
        b = self.cfg.backbone
        init = _get(b, "init") or _get(b, "pretrained") or "imagenet"
        return str(init)

    def method(self) -> str:
        """``basic``, ``sn``, ``cn``, ``sncn`` (``se`` for SE), prefixed ``ibn_a-`` / ``ibn_b-``."""
        units = self.units.label if self.units.label != "basic" else ""
        ibn = f"ibn_{self.cfg.ibn.name}" if self.cfg.ibn.name != "none" else ""
        return "-".join(p for p in (ibn, units) if p) or "basic"

    def run_name(self) -> str:
        d = self.cfg.dataset
        target = _get(_get(d, "target"), "name")
        name = f"{d.name}{'2' + str(target) if target else ''}-fcn50-{self.method()}"
        cn = self.units.cn
        if cn is not None:
            name += f"-{cn.crop}-a{cn.active_num}-p{cn.prob}"
        return name

    # ----- data ------------------------------------------------------------------------------
    def _pairs(self, node: DictConfig, split: str, names: Optional[List[str]]):
        root = Path(str(node.root))
        if str(node.layout) == "gta5":
            return gta5_split(root, split, names)
        return cityscapes_split(root, split, names)

    def _source_names(self, d: DictConfig, split: str, list_key: str) -> Optional[List[str]]:
        if _get(d, list_key):
            return read_list(Path(str(d[list_key])))
        if str(d.layout) == "gta5":
            return read_split(Path(str(d.root)), split)
        return None  # Cityscapes: every image of the split folder

    def _clean(self, pairs, what: str) -> Tuple[list, List[str]]:
        """Drops (or refuses) missing and size-mismatched pairs, reporting count and ids."""
        d = self.cfg.dataset
        missing = set(missing_pairs(pairs))
        present = [p for p in pairs if p.name not in missing]
        bad = size_mismatches(present) if bool(_get(d, "check_sizes", True)) else []
        dropped = sorted(missing) + [b[0] for b in bad]
        if dropped:
            detail = ", ".join([f"{n} (missing)" for n in sorted(missing)[:10]] +
                               [f"{n} (image {a[0]}x{a[1]}, label {b[0]}x{b[1]})"
                                for n, a, b in bad[:10]])
            msg = (f"{what}: {len(missing)} pairs with a missing file and {len(bad)} with an "
                   f"image/label size mismatch: {detail}")
            if str(_get(d, "mismatch", "drop")) == "error":
                raise SegmentationDataError(msg + " (dataset.mismatch=drop skips them)")
            log.warning("%s; dropped (list in the run directory)", msg)
        keep = set(dropped)
        return [p for p in pairs if p.name not in keep], dropped

    def _ensure_generated(self, ctx: RunContext) -> None:
        gen = _get(self.cfg.dataset, "generate")
        if gen is None:
            return
        from snc.data.segmentation.generated import GeneratedSpec, ensure_generated

        spec = GeneratedSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in
                                OmegaConf.to_container(gen, resolve=True).items()
                                if k != "root"})
        if ctx.is_main:
            ensure_generated(Path(str(gen.root)), spec)
        barrier()

    def setup(self, ctx: RunContext) -> None:
        cfg, t, d = self.cfg, self.cfg.task, self.cfg.dataset
        self.ctx, self.device = ctx, ctx.device
        self._ensure_generated(ctx)
        # source train: split (or list), seeded subset, cleaned
        names = self._source_names(d, str(d.train_split), "train_list")
        all_pairs = self._pairs(d, str(d.train_split), names)
        chosen = choose_subset([p.name for p in all_pairs], float(_get(d, "subset", 1.0)),
                               int(_get(d, "subset_seed", 0)))
        keep = set(chosen)
        train_pairs, dropped = self._clean([p for p in all_pairs if p.name in keep],
                                           f"{d.name} {d.train_split}")
        val_names = self._source_names(d, str(d.val_split), "val_list")
        val_pairs, val_dropped = self._clean(self._pairs(d, str(d.val_split), val_names),
                                             f"{d.name} {d.val_split}")
        limit = _get(t.eval, "source_limit")
        if limit:
            val_pairs = val_pairs[:int(limit)]
        self.val = {"source": PairDataset(val_pairs, "source")}
        target = _get(d, "target")
        if target is not None:
            tnames = read_list(Path(str(target.list))) if _get(target, "list") else None
            if tnames is None and str(target.layout) == "gta5":
                tnames = read_split(Path(str(target.root)), str(target.split))
            tpairs, _ = self._clean(self._pairs(target, str(target.split), tnames),
                                    f"{target.name} {target.split}")
            self.val["target"] = PairDataset(tpairs, "target")
        names = [p.name for p in train_pairs]
        self.train_digest = hashlib.sha1("\n".join(names).encode()).hexdigest()
        if ctx.is_main:
            write_list(Path(ctx.run_dir) / "train_list.txt", names, header=(
                f"{d.name} {d.train_split}: {len(names)} of {len(all_pairs)} "
                f"(subset={_get(d, 'subset', 1.0)}, subset_seed={_get(d, 'subset_seed', 0)}, "
                f"{len(dropped)} dropped)\nsha1 {self.train_digest}"))
            if dropped or val_dropped:
                write_list(Path(ctx.run_dir) / "dropped_pairs.txt",
                           [f"train {n}" for n in dropped] + [f"val {n}" for n in val_dropped],
                           header="missing files or image/label size mismatches")
        transform = TrainTransform(crop=int(t.crop), scale=tuple(float(v) for v in t.scale),
                                   rotate=float(t.rotate), rotate_p=float(t.rotate_p),
                                   blur_p=float(t.blur_p), flip=bool(t.flip), pad=bool(t.pad),
                                   mean=tuple(d.mean))
        cuda = ctx.device.type == "cuda"
        self.transform = transform
        self.augment = str(t.augment) if str(t.augment) != "auto" else ("device" if cuda
                                                                         else "cpu")
        sample, collate = transform, None
        if self.augment == "device":  # workers decode only; one batched warp on the device
            sample = RawSample(transform)
            collate = functools.partial(collate_raw, fill=mean_fill(tuple(d.mean)))
        self.train = SegmentationLoader(PairDataset(train_pairs, "source"), sample,
                                        int(cfg.batch_size), seed=ctx.seed, train=True,
                                        workers=int(_get(d, "workers", 0)), rank=ctx.rank,
                                        world=ctx.world, pin_memory=cuda, collate=collate)
        self.model = self.build_model().to(ctx.device)
        self.info.update({
            "source_train": len(train_pairs), "source_train_total": len(all_pairs),
            "source_dropped": dropped, "source_val": len(val_pairs), "source_val_dropped":
            val_dropped, "target_val": len(self.val.get("target", [])),
            "train_list": "train_list.txt", "train_list_sha1": self.train_digest,
            "parameters": count_parameters(self.model), "init": self.init_report})

    # ----- model -----------------------------------------------------------------------------
    def unit_placement(self) -> Placement:
        """Where the units go: ``position`` (and ``position.sn`` / ``position.cn``) over the
        task's defaults ``task.sn_position`` / ``task.cn_position`` (Table 3's)."""
        t, place = self.cfg.task, self.units.placement
        return dataclasses.replace(place, name=None,
                                   sn=place.sn or place.name or str(t.sn_position),
                                   cn=place.cn or place.name or str(t.cn_position))

    def build_model(self, *, pretrained: bool = True) -> nn.Module:
        """FCN with the configured units; its backbone initialized (``backbone.init``; the
        report in ``self.init_report``) unless ``pretrained=False``."""
        from snc.models.segmentation import build_fcn, init_backbone

        overrides = _get(self.cfg.backbone, "overrides")
        overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
        try:
            model = build_fcn(int(self.cfg.task.num_classes), ibn=str(self.cfg.ibn.name),
                              aux=float(self.cfg.task.aux_weight) > 0, sn=self.units.sn,
                              cn=self.units.cn, placement=self.unit_placement(),
                              seed=int(self.cfg.seed), **overrides)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not pretrained:
            return model
        init = self._init()
        self.init_report = init_backbone(model, init, str(self.cfg.ibn.name))
        if init != "none":
            log.info("backbone from %s: %d missing keys (units), %d unexpected (e.g. fc), "
                     "%d skipped", init, len(self.init_report["missing"]),
                     len(self.init_report["unexpected"]), len(self.init_report["skipped"]))
        return model

    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]:
        """Backbone (SN units included) at the base lr; both heads at ``task.head_lr_scale``."""
        core = getattr(model, "module", model)
        heads = core.head_parameters()
        ids = {id(p) for p in heads}
        rest = [p for p in core.parameters() if id(p) not in ids and p.requires_grad]
        return [{"params": rest, "lr_scale": 1.0, "name": "backbone"},
                {"params": [p for p in heads if p.requires_grad],
                 "lr_scale": float(self.cfg.task.head_lr_scale), "name": "heads"}]

    # ----- training --------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        d = self.cfg.dataset
        return normalize(images, tuple(d.mean), tuple(d.std))

    def training_step(self, model: nn.Module, batch: Any) -> Tuple[torch.Tensor, Logs]:
        if isinstance(batch, dict):  # task.augment=device: raw pairs + their draws
            images, labels = warp_batch(batch, self.transform, self.device)
        else:
            images, labels = batch
        x = self.normalize(images.to(self.device, non_blocking=True))
        y = labels.to(self.device, non_blocking=True)
        core = getattr(model, "module", model)
        ctrl = getattr(core, "cn_controller", None)
        step = ctrl.step() if ctrl is not None and len(ctrl) else contextlib.nullcontext(False)
        with step as cn_on:
            out = model(x)
        main = F.cross_entropy(out["out"].float(), y, ignore_index=IGNORE)
        logs: Logs = {"main_loss": main.detach(), "cn": torch.tensor(float(bool(cn_on)))}
        loss = main
        if "aux" in out:
            aux = F.cross_entropy(out["aux"].float(), y, ignore_index=IGNORE)
            loss = main + float(self.cfg.task.aux_weight) * aux
            logs["aux_loss"] = aux.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    # ----- evaluation ------------------------------------------------------------------------
    def _batches(self, dataset: PairDataset, protocol: str) -> SegmentationLoader:
        t, ctx = self.cfg.task, self.ctx
        if protocol == "center":
            return SegmentationLoader(dataset, CenterCrop(int(t.crop), bool(t.pad),
                                                          tuple(self.cfg.dataset.mean)),
                                      int(t.eval.batch_size), train=False,
                                      workers=int(_get(self.cfg.dataset, "workers", 0)),
                                      rank=ctx.rank, world=ctx.world)
        return SegmentationLoader(dataset, full_image, 1, train=False,
                                  workers=int(_get(self.cfg.dataset, "workers", 0)),
                                  rank=ctx.rank, world=ctx.world)

    def _evaluate(self, model: nn.Module, protocol: str, suffix: str,
                  save: Optional[str] = None, per_class: bool = True) -> Dict[str, float]:
        t = self.cfg.task
        core = getattr(model, "module", model)  # inference needs no DDP wrapper
        metrics: Dict[str, float] = {}
        for domain, ds in self.val.items():
            keep = int(_get(t.eval, "save_predictions", 0)) if save and self.ctx.is_main else 0
            folder = Path(self.ctx.run_dir) / save / domain if keep else None

            def on_prediction(k, image, label, pred, ds=ds, folder=folder, keep=keep):
                if k < keep:
                    from PIL import Image

                    folder.mkdir(parents=True, exist_ok=True)
                    name = ds.pairs[k * self.ctx.world + self.ctx.rank].name.replace("/", "_")
                    Image.fromarray(colorized_panel(image, label, pred)).save(folder /
                                                                              f"{name}.png")

            cm, stats = evaluate_segmentation(
                core, self._batches(ds, protocol), protocol, self.normalize, self.device,
                crop=int(t.crop), stride=_get(t.eval, "stride"), flip=bool(t.eval.flip),
                base_size=_get(t.eval, "base_size"), window_batch=int(t.eval.window_batch),
                num_classes=int(t.num_classes), expected=len(ds),
                on_prediction=on_prediction if keep else None)
            metrics.update(metric_dict(cm, domain, suffix, per_class=per_class))
            metrics[f"eval/{domain}/images_per_s{suffix}"] = stats["images_per_s"]
        return metrics

    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        """Periodic: the official centre-crop protocol on source and target val (mIoU, mAcc,
        pixel accuracy; per-class IoU only in the final evaluation, to keep the log readable)."""
        return self._evaluate(model, "center", "_center", per_class=False)

    def final_evaluate(self, model: nn.Module, best_state: Optional[Mapping[str, Any]]
                       ) -> Dict[str, Any]:
        """Last model: sliding window + flip (primary, ``<domain>/miou``) and centre crop
        (``_center``), predictions saved; best model (by ``monitor``): the same with ``_best``."""
        results: Dict[str, Any] = {}
        results.update(self._evaluate(model, "sliding", "", save="predictions"))
        results.update(self._evaluate(model, "center", "_center"))
        if best_state is not None and bool(self.cfg.task.eval.final_best):
            best = copy.deepcopy(getattr(model, "module", model))
            best.load_state_dict(best_state)
            results.update(self._evaluate(best, "sliding", "_best"))
            results.update(self._evaluate(best, "center", "_center_best"))
        results["monitor"] = self.monitor[0]
        results["protocol"] = ("sliding window (crop {0}, stride {1}) + flip; centre crop {0}"
                               .format(int(self.cfg.task.crop), _get(self.cfg.task.eval, "stride")
                                       or -(-2 * int(self.cfg.task.crop) // 3)))
        return results

    def summary(self, results: Mapping[str, Any]) -> str:
        parts = []
        for domain in ("source", "target"):
            if f"{domain}/miou" in results:
                center = results.get(f"{domain}/miou_center", float("nan"))
                parts.append(f"{domain} mIoU {results[f'{domain}/miou']:.1f}% "
                             f"(centre crop {center:.1f}%)")
        return " | ".join(parts) or "no segmentation results"

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"train_list_sha1": getattr(self, "train_digest", "")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        want = state.get("train_list_sha1")
        if want and want != getattr(self, "train_digest", want):
            raise ConfigError("the checkpoint was trained on another training list (sha1 "
                              f"{want}, now {self.train_digest}): same dataset.subset/"
                              "subset_seed/train_list needed to resume")


__all__ = ["SegmentTask", "NUM_CLASSES"]
