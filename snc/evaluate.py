"""Evaluate a classifier on every distribution shift: ``python -m snc.evaluate``.

    python -m snc.evaluate run_dir=outputs/demo/<run> shifts=[corrupted,corrupted_bar]
    python -m snc.evaluate checkpoint=model.pt dataset=cifar10 backbone=wrn40_2 sn=on cn=on \\
        shifts=[corrupted,cifar10_1,cifar10c_bar] evaluate.download=true
    python -m snc.evaluate backbone=torchvision backbone.arch=resnet50 \\
        backbone.weights=IMAGENET1K_V1 dataset=imagenet shifts=[corrupted,imagenet_r,imagenet_v2]

The same code evaluates every training run at its end (``evaluate.shifts``), so a run
evaluated later gets the numbers it would have had. Outputs: ``results.json`` (the training
keys plus one block per shift, with 95 % bootstrap intervals), ``errors.csv`` (every shift,
corruption and severity), ``robustbench.json`` and ``per_image.npz`` (top-1 correctness per
image, for paired comparisons). With ``run_dir`` they go into that run's folder: its
``results.json`` keeps every training key and gains the new shift blocks.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import hydra
from omegaconf import DictConfig, OmegaConf

import snc.config  # noqa: F401  (registers the config schemas before Hydra composes)
from snc.config import CONFIG_DIR
from snc.console import fail, interval_text
from snc.errors import ConfigError

log = logging.getLogger("snc")

# keys an evaluation of a finished run may change (the model and its data stay the run's)
RUN_OVERRIDABLE = ("evaluate", "shifts", "device", "eval_batch_size", "amp", "progress",
                   "paths", "verbose", "channels_last", "dataset.corrupted_dir", "dataset.root",
                   "dataset.download", "dataset.workers", "logger")
SOURCE_KEYS = ("run_dir", "checkpoint")
RANDOM = "random"  # weights=random: an untrained model, on purpose (marked untrained)


def model_source(cfg: DictConfig, overrides: List[str]) -> str:
    """What the evaluated weights come from: ``run_dir``, ``checkpoint``, ``pretrained`` (named
    weights of the backbone) or ``random`` (``weights=random``, asked for explicitly).

    Raises:
        ConfigError: none of them is given (nothing is generated or written before this).
    """
    weights = cfg.get("weights")
    if weights not in (None, RANDOM):
        raise ConfigError(f"weights={weights}: the only value is weights=random (an untrained "
                          "model, on purpose); trained weights come from run_dir=, checkpoint= "
                          "or backbone.weights=")
    if cfg.get("run_dir") and cfg.get("checkpoint"):
        raise ConfigError("give run_dir or checkpoint, not both")
    given = [k for k in SOURCE_KEYS if cfg.get(k)]
    if given:
        if weights == RANDOM:
            raise ConfigError(f"weights=random and {given[0]}= contradict each other: drop "
                              "weights=random to evaluate the trained model")
        return given[0]
    if cfg.backbone.get("weights") or cfg.backbone.get("pretrained"):
        return "pretrained"
    if weights == RANDOM:
        return RANDOM
    import difflib

    typed = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    near = [f"{k} (did you mean {m[0]}?)" for k in typed
            if (m := difflib.get_close_matches(k, SOURCE_KEYS, n=1, cutoff=0.5)) and m[0] != k]
    raise ConfigError(
        "snc.evaluate needs a model: give run_dir=<a training run's folder>, "
        "checkpoint=<file.pt> with the model's groups, or pretrained weights "
        "(backbone=torchvision backbone.arch=resnet50 backbone.weights=IMAGENET1K_V1); "
        "weights=random evaluates an untrained model on purpose"
        + (f"; unknown key {', '.join(near)}" if near else ""))


def _user_overrides() -> List[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed outside @hydra.main (tests)
        return []


def config_of_run(run_dir: Path, cfg: DictConfig, overrides: List[str]) -> DictConfig:
    """The saved config of ``run_dir`` with the evaluation's own overrides applied.

    Raises:
        ConfigError: no run there, or an override that would change the model or its data.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"run_dir={run_dir} holds no config.yaml: give the folder of a "
                          "training run (outputs/<experiment>/<run>), or checkpoint=<file> "
                          "with the model's groups")
    base = OmegaConf.load(path)
    OmegaConf.set_struct(base, False)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in SOURCE_KEYS:
            continue
        if not any(key == k or key.startswith(k + ".") for k in RUN_OVERRIDABLE):
            raise ConfigError(f"{override}: with run_dir the model and data are the run's own; "
                              f"only {', '.join(RUN_OVERRIDABLE)} can be set")
    base.evaluate = OmegaConf.to_container(cfg.evaluate, resolve=True)
    for key in ("device", "eval_batch_size", "amp", "progress", "verbose", "paths", "logger"):
        if key not in base:  # an older run's config: today's default
            base[key] = _plain(cfg[key])
    for override in overrides:  # each allowed override, as the evaluation composed it
        key = override.split("=", 1)[0].lstrip("+~")
        if key in SOURCE_KEYS or key.split(".")[0] in ("evaluate", "shifts"):
            continue
        OmegaConf.update(base, key, _plain(OmegaConf.select(cfg, key)), force_add=True)
    return base


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _output_dir(cfg: DictConfig, task) -> Path:
    from snc.engine.identity import config_hash

    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    name = f"{task.run_name()}-{config_hash(cfg, drop=SOURCE_KEYS + ('shifts',))}"
    return Path(cfg.paths.output_dir) / "evaluate" / name


def _checkpoint_of(cfg: Dict[str, Any]) -> Optional[Path]:
    """The checkpoint file a run or ``checkpoint=`` names (None for pretrained or random
    weights), checked to exist before anything is generated or written."""
    if cfg.get("run_dir"):
        ckpt = Path(cfg["run_dir"]) / "ckpt" / "last.pt"
        if not ckpt.exists():
            raise ConfigError(f"{ckpt} does not exist: the run has no checkpoint yet")
        if not (Path(cfg["run_dir"]) / "results.json").exists():
            log.warning("%s has not finished training: evaluating its last checkpoint",
                        cfg["run_dir"])
        return ckpt
    if cfg.get("checkpoint"):
        ckpt = Path(cfg["checkpoint"])
        if not ckpt.is_file():
            raise ConfigError(f"checkpoint={ckpt} does not exist")
        return ckpt
    return None


def _load_weights(model, ckpt: Optional[Path]) -> Tuple[Optional[str], Dict[str, str]]:
    """The run's (or the checkpoint's) weights into ``model``; returns what was loaded and the
    training run's tracker ids (its W&B run)."""
    import torch

    from snc.engine.checkpoint import load_checkpoint

    if ckpt is None:
        return None, {}
    try:
        state = load_checkpoint(ckpt, map_location="cpu")  # weights_only: runs no code
    except Exception as err:  # noqa: BLE001 - named in the message
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{ckpt} is not a readable checkpoint ({first}); give a file "
                          "written by torch.save of {'model': state_dict} or a state dict "
                          "(a run's ckpt/last.pt)") from None
    ids = dict(state.get("tracker_ids") or {}) if isinstance(state, dict) else {}
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ConfigError(f"{ckpt} holds no state dict (expected {{'model': state_dict}} or a "
                          "state dict)")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"{ckpt} does not fit the model of this config ({first} ...): give "
                          "the dataset, backbone, sn/cn and position groups it was trained "
                          "with") from None
    return str(ckpt), ids


def evaluate(cfg: DictConfig, overrides: Optional[List[str]] = None) -> Dict[str, Any]:
    """Builds the model of ``cfg`` (a run, a checkpoint or pretrained weights), evaluates it on
    ``cfg.evaluate.shifts`` and writes the outputs. Returns the results."""
    from snc.engine.loop import use_tqdm
    from snc.engine.runner import run_meta, seed_everything, select_device
    from snc.tasks.base import RunContext
    from snc.tasks.classify import Classify
    from snc.tracking.local import write_json

    overrides = _user_overrides() if overrides is None else overrides
    kind = model_source(cfg, overrides)
    source = {k: cfg.get(k) for k in SOURCE_KEYS}
    if cfg.get("run_dir"):
        cfg = config_of_run(Path(cfg.run_dir), cfg, overrides)
    ckpt = _checkpoint_of(source)
    OmegaConf.set_struct(cfg, False)
    cfg.update(source)
    if cfg.task.name != "classify":
        raise ConfigError(f"snc.evaluate evaluates classifiers; this is a {cfg.task.name} run")
    if cfg.get("run_dir") or cfg.get("checkpoint"):  # the weights come from the file
        for key in ("pretrained", "weights"):
            if cfg.backbone.get(key):
                cfg.backbone[key] = None
    cfg.dataset.eval_only = True  # no training split needed (ImageNet: val/ alone)
    task = Classify(cfg)
    task.fetch()  # missing clean / published -C data, when dataset.download is on
    task.identity()  # checks the data (and published checksums) before anything is written
    device = select_device(cfg.device)
    seed_everything(int(cfg.seed))
    out_dir = _output_dir(cfg, task)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        task.setup(RunContext(device=device, run_dir=out_dir, seed=int(cfg.seed),
                              progress=use_tqdm(cfg.get("progress", "auto"))))
        loaded, tracker_ids = _load_weights(task.model, ckpt)
        if kind == RANDOM:
            log.warning("weights=random: evaluating an untrained model (its results are marked "
                        "untrained)")
        model = task.model.to(device)
        meta = run_meta(cfg, task, model, out_dir, device)
        meta["weights"] = (loaded or cfg.backbone.get("weights") or cfg.backbone.get("pretrained")
                           or RANDOM)
        meta["untrained"] = kind == RANDOM
        results = dict(meta, **task.final_evaluate(model, None))
        results = _merge_into_run(out_dir, results) if cfg.get("run_dir") else results
        write_json(out_dir / "results.json", results)
    except BaseException:
        if created:  # a failed evaluation leaves no folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    _log_to_wandb(cfg, out_dir, results, tracker_ids)
    for line in summary_lines(results):
        print(line, flush=True)
    print(f"[snc] written: {out_dir / 'results.json'}, errors.csv, robustbench.json", flush=True)
    return results


def _log_to_wandb(cfg: DictConfig, out_dir: Path, results: Dict[str, Any],
                  tracker_ids: Dict[str, str]) -> None:
    """The evaluation's numbers to W&B (``logger=wandb``): into the run's own W&B run (same
    id, ``resume="allow"``) when it has one, else into a new ``job_type=eval`` run."""
    wb = (cfg.get("logger") or {}).get("wandb")
    if wb is None or not wb.get("enabled", False):
        return
    from snc.tracking.sync import log_results
    from snc.tracking.wandb import run_record

    record = run_record(out_dir)
    resume = record.get("id") or tracker_ids.get("WandbTracker")
    log_results(out_dir, results, OmegaConf.to_container(cfg, resolve=True),
                project=record.get("project") or wb.project,
                entity=record.get("entity") or wb.get("entity"),
                mode=wb.get("mode", "offline"),
                job_type=str(results.get("method")) if resume else "eval", resume_id=resume)


def _merge_into_run(run_dir: Path, new: Dict[str, Any]) -> Dict[str, Any]:
    """The run's ``results.json`` with the new shift blocks (and intervals) added; its training
    keys are kept, and a clean error that differs from the stored one is reported."""
    import json

    path = run_dir / "results.json"
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    if abs(float(old.get("clean/error", new["clean/error"])) - new["clean/error"]) > 1e-6:
        log.warning("the clean error evaluated now (%.2f%%) differs from the run's (%.2f%%): "
                    "another device or precision; the run's headline keys are kept",
                    new["clean/error"], old["clean/error"])
    merged = dict(old)
    merged["shifts"] = dict(old.get("shifts") or {}, **new["shifts"])
    for key in ("ci95", "bootstrap"):
        if key in new:
            merged[key] = new[key]
    for key, value in new.items():
        merged.setdefault(key, value)
    return merged


def summary_lines(results: Dict[str, Any]) -> List[str]:
    """One line per shift: error or mCE with its interval."""
    clean = interval_text(results.get("ci95"), "clean/error")
    lines = [f"[snc] clean error {results['clean/error']:.2f}%{clean}"]
    for name, block in (results.get("shifts") or {}).items():
        ci = block.get("ci95")
        if block["kind"] == "single":
            lines.append(f"[snc] {name}: error {block['error']:.2f}%{interval_text(ci, 'error')} "
                         f"({block['num_images']} images, {block.get('set', '')})")
        elif "mce" in block:
            lines.append(f"[snc] {name}: mCE {block['mce']:.2f}%{interval_text(ci, 'mce')} "
                         f"({block.get('set', '')})")
        else:
            names = sorted({k.split("/")[1] for k in block if k.count("/") == 2
                            and k.startswith("corruption/")})
            mean = sum(block[f"corruption/{c}/error"] for c in names) / len(names)
            lines.append(f"[snc] {name}: mean error {mean:.2f}% over {len(names)} corruptions "
                         f"({block.get('set', '')})")
    return lines


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except Exception as err:  # configuration and input errors: one line, exit 2
        fail(err, cfg)


if __name__ == "__main__":
    from snc.cli.launch import launch

    launch(main, CONFIG_DIR, "evaluate")  # Hydra's own errors: one line, exit 2
