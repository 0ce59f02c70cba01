"""``run(cfg)``: build everything from a composed config, train, evaluate, track.

Called by the root ``train.py`` under ``@hydra.main`` and directly by tests with a config from
the compose API.

Run directories are deterministic: ``<paths.output_dir>/<experiment>/<readable name>-<hash>``,
the hash covering every setting that can change the result (not device, logging, paths or
resume). Relaunching the same command therefore finds its own directory: a finished run returns
its stored ``results.json``, an interrupted one resumes from ``ckpt/last.pt`` (``resume=auto``,
the default). ``resume=false`` refuses to reuse a directory that holds a checkpoint or results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from snc.data.datasets import build_data
from snc.distributed import DistInfo, barrier, cleanup, init_distributed
from snc.eval.robustness import corruption_metrics, evaluate_corruptions
from snc.models import build_model, count_parameters, count_units
from snc.tracking import LocalTracker, Trackers, WandbTracker, write_json
from snc.train import objectives as objectives_module
from snc.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from snc.train.loop import clean_error, train_one_epoch, use_tqdm
from snc.train.schedule import build_scheduler

log = logging.getLogger("snc")

# Settings that do not change what is computed: left out of the run identity.
NON_IDENTITY_KEYS = ("device", "logger", "paths", "resume", "progress", "run_name", "tags",
                     "group", "log_every", "hydra", "evaluate_corruptions")


def select_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def method_name(cfg: DictConfig) -> str:
    """basic / sn / se / cn / sncn (+augmix, +consistency): the W&B job_type."""
    parts = []
    if cfg.sn.enabled:
        parts.append("se" if cfg.sn.attention == "se" else "sn")
    if cfg.cn.enabled:
        parts.append("cn")
    name = "".join(parts) or "basic"
    if cfg.augmix.enabled:
        name += "-augmix"
    if cfg.objective.name == "consistency":
        name += "-consistency"
    return name


def config_hash(cfg: DictConfig) -> str:
    payload = OmegaConf.to_container(cfg, resolve=True)
    for key in NON_IDENTITY_KEYS:
        payload.pop(key, None)
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def run_dir_for(cfg: DictConfig) -> Path:
    """The deterministic run directory of ``cfg``."""
    experiment = cfg.get("experiment_name") or "runs"
    if cfg.get("run_name"):
        return Path(cfg.paths.output_dir) / experiment / cfg.run_name
    position = cfg.position.name or "default"
    name = f"{cfg.dataset.name}-{cfg.backbone.name}-{method_name(cfg)}-{position}"
    if cfg.cn.enabled:
        name += f"-{cfg.crop.name}-a{cfg.cn.active_num}-p{cfg.cn.prob}"
    return Path(cfg.paths.output_dir) / experiment / f"{name}-seed{cfg.seed}-{config_hash(cfg)}"


def validate(cfg: DictConfig) -> str:
    """Checks cross-field rules once; returns the resolved objective name."""
    if cfg.ibn.name != "none" and not cfg.backbone.get("supports_ibn", False):
        raise ValueError(f"ibn={cfg.ibn.name} applies to ImageNet ResNets (backbone=resnet50); "
                         f"{cfg.backbone.name} has no IBN variant: use ibn=none")
    if cfg.sn.attention not in ("sn", "se"):
        raise ValueError(f"sn.attention={cfg.sn.attention!r}; choose sn or se")
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"amp={cfg.amp!r}; choose none, bf16 or fp16")
    if cfg.resume not in ("auto", True, False):
        raise ValueError(f"resume={cfg.resume!r}; choose auto, true or false")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    return objectives_module.resolve_objective(
        cfg.objective.name, cn_enabled=cfg.cn.enabled, augmix_enabled=cfg.augmix.enabled)


def build_network(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    """The model of ``cfg`` (backbone, SN/SE/CN units and their controller)."""
    blocks = cfg.position.blocks
    if OmegaConf.is_list(blocks):
        blocks = list(blocks)
    overrides = cfg.backbone.get("overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
    if cfg.backbone.get("supports_ibn", False):
        overrides["ibn"] = cfg.ibn.name
    model = build_model(
        cfg.backbone.name, num_classes,
        sn=bool(cfg.sn.enabled and cfg.sn.attention == "sn"),
        se=bool(cfg.sn.enabled and cfg.sn.attention == "se"),
        cn=bool(cfg.cn.enabled),
        position=cfg.position.name, sn_position=cfg.position.get("sn"),
        cn_position=cfg.position.get("cn"), blocks=blocks, gates=cfg.sn.gates,
        order=cfg.cn.order, mode=cfg.cn.mode, crop=cfg.crop.name, beta=cfg.cn.beta,
        threshold=cfg.cn.threshold, self_pairing=cfg.cn.self_pairing,
        channel_shuffle=cfg.cn.channel_shuffle, active_num=cfg.cn.active_num,
        prob=cfg.cn.prob, se_reduction=cfg.sn.get("se_reduction", 16), seed=cfg.seed,
        **overrides,
    )
    if cfg.backbone.get("pretrained"):
        from snc.models.imagenet.resnet import load_pretrained

        report = load_pretrained(model, cfg.backbone.pretrained)
        log.info("loaded %s: missing %d keys (the units), unexpected %d, skipped %s",
                 cfg.backbone.pretrained, len(report["missing"]), len(report["unexpected"]),
                 report["skipped_shape_mismatch"])
    return model


def _attach_file_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not any(
            isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            for h in log.handlers):
        log.addHandler(logging.StreamHandler())
    return handler


def _trackers(cfg: DictConfig, run_dir: Path) -> Trackers:
    sinks = [LocalTracker(run_dir)]
    wb = cfg.logger.get("wandb")
    if wb is not None and wb.get("enabled", False):
        sinks.append(WandbTracker(run_dir, project=wb.project, entity=wb.get("entity"),
                                  mode=wb.get("mode", "offline")))
    return Trackers(sinks)


def run(cfg: DictConfig) -> Dict[str, Any]:
    """Trains and evaluates the run described by ``cfg``; returns its results dict.

    Raises:
        ValueError: for invalid options (naming the fix), before anything is written.
        FileExistsError: ``resume=false`` and the run directory already holds a run.
    """
    objective_name = validate(cfg)
    dist_cfg = cfg.get("distributed") or {}
    info = init_distributed(cfg.device, dist_cfg.get("backend", "auto"))
    device = select_device(cfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    run_dir = run_dir_for(cfg)
    results_path = run_dir / "results.json"
    ckpt_path = run_dir / "ckpt" / "last.pt"
    if cfg.resume is False and (results_path.exists() or ckpt_path.exists()):
        raise FileExistsError(f"{run_dir} already holds a run; pass resume=auto to continue or "
                              "return it, or choose another run_name / paths.output_dir")
    if results_path.exists():
        log.info("%s is finished; returning its results.json", run_dir)
        return json.loads(results_path.read_text())
    handler = None
    if info.is_main:  # rank 0 alone writes the run directory, logs and checkpoints
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = _attach_file_log(run_dir)
    else:
        log.setLevel(logging.WARNING)
    barrier()
    try:
        return _train_and_evaluate(cfg, objective_name, device, run_dir, ckpt_path, info)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if info.enabled:
            cleanup()


def _train_and_evaluate(cfg, objective_name, device, run_dir, ckpt_path,
                        info: DistInfo) -> Dict[str, Any]:
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    log.info("run directory: %s (%d process%s)\nresolved config:\n%s", run_dir, info.world,
             "es" if info.world > 1 else "", resolved)
    if info.is_main:
        (run_dir / "config.yaml").write_text(resolved)
    progress = use_tqdm(cfg.get("progress", "auto")) and info.is_main
    seed_everything(cfg.seed)
    if device.type == "cuda":  # the official scripts turn it on too
        torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark", True))
    data = build_data(cfg, device, progress=progress, rank=info.rank, world=info.world)
    model = build_network(cfg, data.num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    controller = model.cn_controller
    if data.corrupted is not None:
        data.corrupted.prepare()
        data.info["corrupted_set"] = "generated" if data.corrupted.generated else "published"
    forward_model = model
    if info.enabled:
        if (cfg.get("distributed") or {}).get("sync_bn", False):
            forward_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.get("compile", False):
        forward_model = torch.compile(forward_model)
    # The official runs decay every parameter (BN and SN included); optionally exempt 1-D ones.
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if cfg.optimizer.get("no_decay_bn_bias") and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}] + ([{"params": no_decay, "weight_decay": 0.0}] if no_decay else [])
    base_lr = cfg.optimizer.lr
    if cfg.optimizer.get("scale_lr_by_batch"):  # official ImageNet: lr * batch / 256
        base_lr = base_lr * cfg.batch_size / float(cfg.optimizer.scale_lr_by_batch)
    optimizer = torch.optim.SGD(
        groups,
        lr=base_lr, momentum=cfg.optimizer.momentum, nesterov=cfg.optimizer.nesterov,
        weight_decay=cfg.optimizer.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.schedule.name, epochs=cfg.epochs,
                                steps_per_epoch=len(data.train), base_lr=base_lr,
                                min_lr=cfg.schedule.min_lr)
    objective = objectives_module.REGISTRY[objective_name]
    obj_cfg = objectives_module.ObjectiveConfig(
        consist_wt=cfg.cn.consist_wt, jsd_weight=cfg.augmix.jsd_weight,
        augmix_joint_cn=bool(cfg.cn.get("augmix_joint", False)))
    start_epoch, step, tracker_ids, history = 0, 0, {}, {}
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=str(device))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data.train.load_state_dict(state["loader"])
        controller.load_state_dict(state["controller"])
        set_rng_state(state["rng"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        tracker_ids = dict(state.get("tracker_ids", {}))
        history = dict(state.get("history", {}))
        log.info("resumed from %s at epoch %d (step %d)", ckpt_path, start_epoch, step)
    units = count_units(model)
    meta = {
        "dataset": cfg.dataset.name, "backbone": cfg.backbone.name, "method": method_name(cfg),
        "objective": objective_name, "position": cfg.position.name or "default",
        "crop": cfg.crop.name if cfg.cn.enabled else None, "seed": int(cfg.seed),
        "epochs": int(cfg.epochs), "experiment": cfg.get("experiment_name"),
        "num_params": count_parameters(model), "sn_units": units["sn"], "cn_units": units["cn"],
        "se_units": units["se"], "run_dir": str(run_dir), "device": str(device),
        "ibn": cfg.ibn.name, "cn_active_num": int(cfg.cn.active_num) if cfg.cn.enabled else None,
        "cn_prob": float(cfg.cn.prob) if cfg.cn.enabled else None,
        "paper_cells": (OmegaConf.to_container(cfg.paper.cells, resolve=True)
                        if cfg.get("paper") and cfg.paper.get("cells") else []),
        **data.info,
    }
    trackers = _trackers(cfg, run_dir) if info.is_main else Trackers([])
    group = (cfg.get("group") or cfg.get("experiment_name")
             or f"{cfg.dataset.name}-{cfg.backbone.name}")
    tracker_ids = trackers.start(
        OmegaConf.to_container(cfg, resolve=True), name=run_dir.name, group=group,
        job_type=meta["method"], tags=list(cfg.get("tags") or []) + [
            cfg.dataset.name, cfg.backbone.name, meta["method"], meta["position"]]
        + ([f"crop={cfg.crop.name}"] if cfg.cn.enabled else [])
        + ([cfg.experiment_name] if cfg.get("experiment_name") else []),
        resume_ids=tracker_ids)
    status = "failed"
    try:
        train_start = time.perf_counter()
        for epoch in range(start_epoch, cfg.epochs):
            step, epoch_metrics = train_one_epoch(
                forward_model, data.train, optimizer, scheduler, objective, controller, obj_cfg,
                epoch=epoch + 1, step=step, amp=cfg.amp, log_every=cfg.log_every,
                on_log=trackers.log, progress=progress)
            epoch_metrics["epoch"] = epoch + 1
            if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
                epoch_metrics.update(
                    clean_error(forward_model, data.test, data.num_classes, cfg.amp))
            trackers.log(epoch_metrics, step)
            log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs, ", ".join(
                f"{k.split('/')[-1]} {v:.4g}" for k, v in epoch_metrics.items() if k != "epoch"))
            history["final_train_loss"] = epoch_metrics["train_epoch/loss"]
            history.setdefault("first_train_loss", epoch_metrics["train_epoch/loss"])
            history["train_seconds"] = history.get("train_seconds", 0.0) + \
                epoch_metrics["train_epoch/seconds"]
            if not info.is_main:
                barrier()  # wait for rank 0's checkpoint before the next epoch
                continue
            save_checkpoint({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "loader": data.train.state_dict(),
                "controller": controller.state_dict(), "rng": rng_state(device),
                "epoch": epoch + 1, "step": step, "tracker_ids": tracker_ids,
                "history": history, "config": OmegaConf.to_yaml(cfg, resolve=True),
            }, ckpt_path)
            barrier()
        log.info("training done in %.1f s", time.perf_counter() - train_start)
        eval_start = time.perf_counter()
        results: Dict[str, Any] = dict(meta)
        results.update(clean_error(forward_model, data.test, data.num_classes, cfg.amp))
        if data.corrupted is not None:
            from tqdm.auto import tqdm

            total_sets = 5 * len(data.corrupted.corruptions)
            with tqdm(total=total_sets, desc="corrupted sets", disable=not progress) as bar:
                def done(name: str, severity: int) -> None:
                    bar.update(1)
                    if not progress and severity == 5:
                        log.info("evaluated %s (5 severities)", name)

                errors = evaluate_corruptions(forward_model, data.corrupted, cfg.amp,
                                              expected=data.corrupted.expected, progress=done)
            results.update(corruption_metrics(errors, cfg.dataset.get("protocol", "cifar"),
                                              results["clean/error"]))
        results["train/first_epoch_loss"] = history.get("first_train_loss")
        results["train/final_epoch_loss"] = history.get("final_train_loss")
        results["time/train_seconds"] = history.get("train_seconds")
        results["time/eval_seconds"] = time.perf_counter() - eval_start
        results["world_size"] = info.world
        status = "finished"
        if info.is_main:
            trackers.summary(results)
            write_json(run_dir / "results.json", results)
            _print_summary(results)
        return results
    finally:
        trackers.finish(status)


def _print_summary(results: Dict[str, Any]) -> None:
    line = f"clean error {results['clean/error']:.2f}%"
    if "mce" in results:
        line += f" | mCE {results['mce']:.2f}% ({results.get('corrupted_set', '')} corrupted set)"
    log.info("%s | %s", line, results["run_dir"])
    print(f"[snc] {results['dataset']} {results['backbone']} {results['method']}: {line}",
          flush=True)
