"""``run(cfg)``: the task-agnostic run — identity, resume, loop, checkpoints, trackers, results.

Called by the root ``train.py`` under ``@hydra.main`` and directly by tests with a config from
the compose API. ``cfg.task.name`` picks the task (:mod:`snc.tasks`); everything here is the
same for every task.

A relaunch of the same command finds its own run directory (:mod:`snc.engine.identity`): a
finished run returns its stored ``results.json``, an interrupted one resumes from
``ckpt/last.pt`` (``resume=auto``, the default). ``resume=false`` refuses to reuse a directory
that holds a checkpoint or results.

Training runs ``epochs`` passes over ``task.train`` (evaluation every ``eval_every`` epochs) or,
with ``max_steps`` set, that many steps from one stream (evaluation and a checkpoint every
``eval_every_steps`` steps). A checkpoint is written at the end of every period (an epoch, or
``eval_every_steps`` steps); with a task ``monitor`` the best periodic evaluation also keeps
``ckpt/best.pt``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from snc import console
from snc.distributed import DistInfo, barrier, cleanup, init_distributed, prepare_batch_norm
from snc.engine.checkpoint import (
    load_checkpoint,
    load_resumable,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from snc.engine.identity import config_hash, run_dir_for
from snc.engine.lock import RunLock
from snc.engine.loop import COMPILE_MODES, CompiledStep, train_steps, use_tqdm
from snc.engine.optim import OPTIMIZERS, base_learning_rate, build_optimizer
from snc.engine.schedule import SCHEDULES, build_scheduler
from snc.errors import ConfigError
from snc.precision import check_amp
from snc.tasks import RunContext, Task, get_task
from snc.tracking import LocalTracker, Trackers, WandbTracker, write_json
from snc.tracking.sync import sync_run, tracker_group, tracker_tags
from snc.tracking.wandb import run_record

log = logging.getLogger("snc")


def select_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


def check_compile(cfg: DictConfig, device: Optional[torch.device] = None) -> None:
    """``compile_mode`` is one of :data:`COMPILE_MODES`, and CUDA graphs
    (``reduce-overhead``) are asked for on a CUDA device only.

    Raises:
        ConfigError: naming the fix.
    """
    mode = cfg.get("compile_mode", "default")
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile_mode={mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    if device is not None and device.type != "cuda" and cfg.get("compile", False) \
            and mode == "reduce-overhead":
        raise ConfigError(f"compile_mode=reduce-overhead replays CUDA graphs, but the device is "
                          f"{device.type}: use compile_mode=default (or max-autotune) on "
                          f"{device.type}, or device=cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def validate(cfg: DictConfig) -> Task:
    """Checks every option once (engine keys, the unit options, the task's own); returns the
    task, built but not set up. Nothing is written.

    Raises:
        ConfigError: naming the fix.
    """
    check_amp(cfg.amp)
    check_compile(cfg)
    if cfg.resume not in ("auto", True, False):
        raise ConfigError(f"resume={cfg.resume!r}; choose auto, true or false")
    keys = ["batch_size", "eval_batch_size"] + (["epochs"] if cfg.get("max_steps") is None
                                                 else ["max_steps", "eval_every_steps"])
    for key in keys:
        value = cfg[key]
        if isinstance(value, bool) or not str(value).lstrip("+").isdigit() or int(value) < 1:
            raise ConfigError(f"{key} takes a whole number >= 1; got {value!r}")
    if cfg.optimizer.get("name", "sgd") not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name={cfg.optimizer.name!r}; choose one of "
                          f"{', '.join(OPTIMIZERS)}")
    if cfg.schedule.name not in SCHEDULES:
        raise ConfigError(f"schedule.name={cfg.schedule.name!r}; choose one of "
                          f"{', '.join(SCHEDULES)}")
    return get_task(cfg.task.name)(cfg)  # the task checks its own options


def run(cfg: DictConfig) -> Dict[str, Any]:
    """Trains and evaluates the run described by ``cfg``; returns its results dict.

    Raises:
        ConfigError: for invalid options or inputs (naming the fix), before anything is written.
        FileExistsError: ``resume=false`` and the run directory already holds a run.
        RunLocked: another process is training the same run directory.
    """
    task = validate(cfg)
    dist_cfg = cfg.get("distributed") or {}
    info = init_distributed(cfg.device, dist_cfg.get("backend", "auto"))
    device = select_device(cfg.device)
    check_compile(cfg, device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    task.fetch()  # the explicit download step; identity() below only reads
    identity = dict(task.identity(), world_size=info.world)
    run_dir = run_dir_for(cfg, task.run_name(), identity)
    if cfg.resume is False and _holds_a_run(run_dir):
        raise FileExistsError(f"{run_dir} already holds a run; pass resume=auto to continue or "
                              "return it, or choose another run_name / paths.output_dir")
    finished = _finished(run_dir, task)
    if finished is not None:
        return finished
    lock = RunLock(run_dir, wait=bool(cfg.get("wait_for_lock", False)))
    handler = None
    try:
        if info.is_main:  # rank 0 alone writes the run directory, logs and checkpoints
            _make_writable(run_dir)
            lock.acquire()
            finished = _finished(run_dir, task)  # a concurrent launch may have finished since
            if finished is None:
                handler = _attach_file_log(run_dir)
        else:
            log.setLevel(logging.WARNING)
        barrier()
        if finished is not None:
            return finished
        return _execute(cfg, task, device, run_dir, info, identity)
    finally:
        lock.release()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if info.enabled:
            cleanup()


def run_dir_of(cfg: DictConfig, world: int = 1) -> Path:
    """The run directory ``cfg`` trains in with ``world`` processes (validates and reads the
    inputs, as a launch would; writes nothing)."""
    task = validate(cfg)
    return run_dir_for(cfg, task.run_name(), dict(task.identity(), world_size=world))


def _sweep_choice() -> Optional[str]:
    """The ``sweep=`` option of a Hydra launch (e.g. ``appendix_grid``), else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("sweep")


def _resume_point(run_dir: Path) -> str:
    """``new``, or ``resumed`` when a checkpoint is there (the resume line says which and
    where; loading it here too would read a large file twice)."""
    ckpt = run_dir / "ckpt"
    return "resumed" if (ckpt / "last.pt").exists() or (ckpt / "prev.pt").exists() else "new"


def _holds_a_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in ("results.json", "ckpt/last.pt",
                                                       "ckpt/prev.pt"))


def _finished(run_dir: Path, task: Task) -> Optional[Dict[str, Any]]:
    """The stored results of a finished run (and its summary line), or None."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    log.info("[snc] finished run: %s (its results.json is returned; another output_dir or "
             "run_name trains again)", run_dir)
    wb = task.cfg.logger.get("wandb")
    if (wb is not None and wb.get("enabled", False) and not run_record(run_dir)
            and not (run_dir / "wandb").exists()):  # trained with logger=none: log it now
        log.info("[snc] the finished run has no W&B run: logging its files to W&B")
        sync_run(run_dir, project=wb.get("project"), entity=wb.get("entity"),
                 mode=wb.get("mode", "offline"))
    print(f"[snc] {results['dataset']} {results['backbone']} {results['method']}: "
          f"{task.summary(results)}", flush=True)
    console.record(results)
    return results


def _make_writable(run_dir: Path) -> None:
    """Creates the run directory and proves it writable before any training."""
    try:
        (run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
        probe = run_dir / "ckpt" / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write the run directory {run_dir} ({err.strerror or err}); "
                          "choose a writable paths.output_dir (or SNC_OUTPUT_DIR)") from None


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


def _wrap(model: torch.nn.Module, cfg: DictConfig, device: torch.device,
          info: DistInfo, whole_step: bool = False) -> torch.nn.Module:
    """The forward model: BatchNorm batches as the official run had them, DDP under torchrun,
    then torch.compile (of the forward alone, for a task whose step is not compiled whole:
    ``whole_step=False``)."""
    # the official run's BatchNorm batch per device under any world size (distributed.bn_batch),
    # or one SyncBatchNorm over all ranks (distributed.sync_bn); parameters stay the same objects
    forward_model = prepare_batch_norm(model, cfg, info, device)
    if info.enabled:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.get("compile", False) and not whole_step:
        forward_model = torch.compile(forward_model)
    return forward_model


def compile_for_evaluation(model: torch.nn.Module, mode: str = "default") -> torch.nn.Module:
    """``torch.compile`` of the forward for evaluation (``compile_mode`` as the step's)."""
    return torch.compile(model, mode=None if mode == "default" else mode)


def _periods(cfg: DictConfig, steps_per_epoch: int) -> Tuple[int, Optional[int], int]:
    """``(number of periods, steps per period or None for a whole epoch, total steps)``."""
    max_steps = cfg.get("max_steps")
    if max_steps is None:
        return int(cfg.epochs), None, int(cfg.epochs) * steps_per_epoch
    every = int(cfg.eval_every_steps)
    return math.ceil(int(max_steps) / every), every, int(max_steps)


def run_meta(cfg: DictConfig, task: Task, model: torch.nn.Module, run_dir: Path,
             device: torch.device) -> Dict[str, Any]:
    """The run's description in ``results.json``: what every run has, then the task's own
    (``task.describe(model)``, ``task.info``)."""
    return {
        "task": task.name, "dataset": cfg.dataset.name, "backbone": cfg.backbone.name,
        "method": task.method(), "seed": int(cfg.seed),
        "epochs": int(cfg.epochs), "max_steps": cfg.get("max_steps"),
        "experiment": cfg.get("experiment_name"),
        "num_params": sum(p.numel() for p in model.parameters()),
        "run_dir": str(run_dir), "device": str(device),
        **task.describe(model), **task.info,
    }


def _improved(value: float, best: Optional[float], mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


@dataclass
class _Run:
    """The state of one run while it trains: what a checkpoint holds, and the loop's steps."""

    cfg: DictConfig
    task: Task
    device: torch.device
    run_dir: Path
    info: DistInfo
    progress: bool
    model: torch.nn.Module
    forward_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    num_periods: int
    period_steps: Optional[int]  # None: a period is one epoch
    total_steps: int
    compiled: Optional[CompiledStep] = None
    eval_compiled: Optional[torch.nn.Module] = None
    start_period: int = 0
    step: int = 0
    tracker_ids: Dict[str, str] = field(default_factory=dict)
    history: Dict[str, Any] = field(default_factory=dict)

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "ckpt" / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "ckpt" / "best.pt"

    @property
    def epochs(self) -> bool:
        return self.period_steps is None

    @property
    def controller(self):
        return getattr(self.model, "cn_controller", None)

    def resume(self) -> None:
        """Loads ``ckpt/last.pt`` (``prev.pt`` if that one is torn) when there is one: every
        state the checkpoint holds. ``metrics.jsonl`` is cut back to the checkpoint's step: the
        rows after it belong to work that is done again now."""
        if not (self.ckpt_path.exists() or self.ckpt_path.with_name("prev.pt").exists()):
            return
        state, path = load_resumable(self.ckpt_path.parent, map_location=str(self.device))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.task.train.load_state_dict(state["loader"])
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state.get("task", {}))
        set_rng_state(state["rng"])
        self.start_period, self.step = int(state["epoch"]), int(state["step"])
        self.tracker_ids = dict(state.get("tracker_ids", {}))
        self.history = dict(state.get("history", {}))
        log.info("resumed from %s at %s %d (step %d)", path,
                 "epoch" if self.epochs else "period", self.start_period, self.step)
        if self.info.is_main:
            LocalTracker(self.run_dir).truncate(self.step)

    def checkpoint(self, period: int) -> None:
        """Writes ``ckpt/last.pt`` (rank 0; the other ranks wait for it)."""
        if self.info.is_main:
            save_checkpoint({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loader": self.task.train.state_dict(),
                "controller": self.controller.state_dict() if self.controller is not None
                else {},
                "scaler": self.scaler.state_dict(), "task": self.task.state_dict(),
                "rng": rng_state(self.device), "epoch": period, "step": self.step,
                "tracker_ids": self.tracker_ids, "history": self.history,
                "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            }, self.ckpt_path)
        barrier()

    @property
    def whole_step(self) -> bool:
        """compile=true on a task whose training step is captured whole."""
        return bool(self.cfg.get("compile", False)) and getattr(self.task, "capturable_step",
                                                                False)

    def compiled_step(self) -> Optional[CompiledStep]:
        """The compiled step (made once, after resume: the optimizer's rates become tensors)."""
        if self.whole_step and self.compiled is None:
            self.compiled = CompiledStep(
                self.task, self.forward_model, self.optimizer, self.device, self.cfg.amp,
                mode=self.cfg.get("compile_mode", "default"),
                compile_update=not self.scaler.is_enabled())
        return self.compiled

    @property
    def eval_model(self) -> torch.nn.Module:
        """The model evaluation runs: with the step compiled whole, a compiled forward of its
        own (inference graphs), else the forward model (compiled with it when asked)."""
        if not self.whole_step:
            return self.forward_model
        if self.eval_compiled is None:
            self.eval_compiled = compile_for_evaluation(
                self.forward_model, self.cfg.get("compile_mode", "default"))
        return self.eval_compiled

    def train_period(self, period: int, batches, on_log) -> Dict[str, Any]:
        """One epoch, or ``period_steps`` steps of the stream; returns the period's metrics."""
        n = None if self.epochs else min(self.period_steps, self.total_steps - self.step)
        desc = f"epoch {period + 1}" if self.epochs else f"steps {self.step + 1}-{self.step + n}"
        self.step, stats = train_steps(
            self.forward_model, batches, self.task, self.optimizer, self.scheduler,
            raw_model=self.model, step=self.step, num_steps=n,
            total=n if n is not None else len(self.task.train), scaler=self.scaler,
            amp=self.cfg.amp, log_every=self.cfg.log_every, on_log=on_log,
            progress=self.progress, desc=desc, compiled=self.compiled_step())
        prefix = "train_epoch" if self.epochs else "train_period"
        metrics: Dict[str, Any] = {f"{prefix}/loss": stats["loss"],
                                   f"{prefix}/seconds": stats["seconds"]}
        if self.epochs and hasattr(self.task.train, "num_samples"):
            metrics[f"{prefix}/images_per_second"] = \
                self.task.train.num_samples / stats["seconds"]
        else:
            metrics[f"{prefix}/steps_per_second"] = stats["steps_per_second"]
        metrics["epoch" if self.epochs else "period"] = period + 1
        h = self.history
        h["final_train_loss"] = stats["loss"]
        h.setdefault("first_train_loss", stats["loss"])
        h["train_seconds"] = h.get("train_seconds", 0.0) + stats["seconds"]
        return metrics

    def evaluate_period(self, period: int) -> Dict[str, Any]:
        """The periodic evaluation when due (every ``eval_every`` epochs / every period in step
        mode; at the last period only for a monitored task), keeping ``ckpt/best.pt``."""
        last = period + 1 == self.num_periods
        every = self.cfg.get("eval_every") if self.epochs else 1
        if not every or (period + 1) % every or (last and self.task.monitor is None):
            return {}
        evaluated = self.task.evaluate(self.eval_model)
        monitor = self.task.monitor
        if monitor is not None and monitor[0] in evaluated:
            key, mode = monitor
            if _improved(float(evaluated[key]), self.history.get("best_value"), mode):
                self.history.update(best_value=float(evaluated[key]), best_period=period + 1,
                                    best_step=self.step)
                if self.info.is_main:
                    save_checkpoint({"model": self.model.state_dict(), "step": self.step,
                                     "period": period + 1, key: evaluated[key]},
                                    self.best_path)
        return evaluated

    def best_state(self) -> Optional[Dict[str, Any]]:
        barrier()  # best.pt is written by rank 0
        if self.task.monitor is None or not self.best_path.exists():
            return None
        return load_checkpoint(self.best_path, map_location=str(self.device))["model"]


def _build_run(cfg: DictConfig, task: Task, device: torch.device, run_dir: Path,
               info: DistInfo, progress: bool) -> _Run:
    """Seeds, sets the task up, wraps the model and builds optimizer, schedule and scaler."""
    seed_everything(cfg.seed)
    if device.type == "cuda":  # the official scripts turn it on too
        torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark", True))
    task.setup(RunContext(device=device, run_dir=run_dir, seed=int(cfg.seed), rank=info.rank,
                          world=info.world, progress=progress))
    model = task.model
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    base_lr = base_learning_rate(cfg.optimizer, cfg.batch_size)
    optimizer = build_optimizer(cfg.optimizer, task.param_groups(model), base_lr)
    num_periods, period_steps, total_steps = _periods(cfg, len(task.train))
    scheduler = build_scheduler(
        optimizer, cfg.schedule.name, total_steps=total_steps, steps_per_epoch=len(task.train),
        epochs=int(cfg.epochs), base_lr=base_lr, min_lr=cfg.schedule.min_lr,
        power=cfg.schedule.get("power", 0.9))
    whole_step = bool(cfg.get("compile", False)) and getattr(task, "capturable_step", False)
    return _Run(cfg=cfg, task=task, device=device, run_dir=run_dir, info=info,
                progress=progress, model=model,
                forward_model=_wrap(model, cfg, device, info, whole_step),
                optimizer=optimizer, scheduler=scheduler,
                scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
                num_periods=num_periods, period_steps=period_steps, total_steps=total_steps)


def _start_trackers(r: _Run, meta: Dict[str, Any]) -> Trackers:
    cfg = r.cfg
    trackers = _trackers(cfg, r.run_dir) if r.info.is_main else Trackers([])
    config = OmegaConf.to_container(cfg, resolve=True)
    r.tracker_ids = trackers.start(
        config, name=r.run_dir.name, group=tracker_group(meta, config),
        job_type=meta["method"], tags=tracker_tags(meta, config), resume_ids=r.tracker_ids)
    return trackers


def _execute(cfg: DictConfig, task: Task, device: torch.device, run_dir: Path,
             info: DistInfo, identity: Dict[str, Any]) -> Dict[str, Any]:
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    if cfg.get("verbose"):
        log.info("resolved config:\n%s", resolved)
    if info.is_main:
        (run_dir / "config.yaml").write_text(resolved)
    progress = use_tqdm(cfg.get("progress", "auto")) and info.is_main
    log.info(console.run_line(run_dir, _resume_point(run_dir)))
    r = _build_run(cfg, task, device, run_dir, info, progress)
    r.resume()
    meta = run_meta(cfg, task, r.model, run_dir, device)
    # runs that differ only by seed share a setting_hash (the report pools them as seeds)
    meta["setting_hash"] = config_hash(cfg, identity, drop=("seed",))
    meta["sweep"] = _sweep_choice()
    for line in console.header(cfg, meta, units=task.units_text(meta), world=info.world):
        log.info(line)
    trackers = _start_trackers(r, meta)
    if r.step > 0:  # resumed: the trackers get the history the local file holds
        trackers.replay(LocalTracker(run_dir).rows())
    status = "failed"
    try:
        train_start = time.perf_counter()
        stream = None if r.epochs else iter(task.train)
        for period in range(r.start_period, r.num_periods):
            metrics = r.train_period(period, stream or iter(task.train), trackers.log)
            metrics.update(r.evaluate_period(period))
            trackers.log(metrics, r.step)
            log.info("%s %d/%d: %s", "epoch" if r.epochs else "period", period + 1,
                     r.num_periods, console.metrics_text(metrics, skip=("epoch", "period")))
            r.checkpoint(period + 1)
        log.info("training done in %.1f s", time.perf_counter() - train_start)
        results = _finish(r, meta, trackers)
        status = "finished"
        return results
    finally:
        trackers.finish(status)


def _finish(r: _Run, meta: Dict[str, Any], trackers: Trackers) -> Dict[str, Any]:
    """The final evaluation, ``results.json`` and the summary line."""
    eval_start = time.perf_counter()
    results: Dict[str, Any] = dict(meta)
    results.update(r.task.final_evaluate(r.eval_model, r.best_state()))
    h = r.history
    if "best_value" in h:
        results[f"best/{r.task.monitor[0]}"] = h["best_value"]
        results["best/step"] = h["best_step"]
    results["train/first_epoch_loss"] = h.get("first_train_loss")
    results["train/final_epoch_loss"] = h.get("final_train_loss")
    results["time/train_seconds"] = h.get("train_seconds")
    results["time/eval_seconds"] = time.perf_counter() - eval_start
    results["world_size"] = r.info.world
    if r.info.is_main:
        trackers.summary(results)
        write_json(r.run_dir / "results.json", results)
        line = r.task.summary(results)
        log.info("%s | %s", line, r.run_dir)
        print(f"[snc] {results['dataset']} {results['backbone']} {results['method']}: {line}",
              flush=True)
    console.record(results)
    return results
