"""Run identity: the deterministic run directory of a config.

``<paths.output_dir>/<experiment>/<readable name>-seed<seed>-<hash>``: the readable name comes
from the task; the hash covers every setting that can change the result (not device, logging,
paths or resume). Relaunching the same command therefore finds its own directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

# Settings that do not change what is computed: left out of the run identity.
NON_IDENTITY_KEYS = ("device", "logger", "paths", "resume", "progress", "run_name", "tags",
                     "group", "log_every", "hydra", "evaluate_corruptions", "evaluate",
                     "verbose", "wait_for_lock", "compile_mode")

ADDED_KEYS = {"style": {"name": "none"}}
"""Keys added to the config after run folders existed, with their default: at that default
they are left out of the hash, so the existing folders keep their names."""


def config_hash(cfg: DictConfig, extra: Optional[Dict[str, Any]] = None,
                drop: Tuple[str, ...] = ()) -> str:
    """8 hex digits of the SHA-1 of the resolved config without :data:`NON_IDENTITY_KEYS` (and
    ``drop``), together with ``extra`` (the task's data identity and the world size)."""
    payload = OmegaConf.to_container(cfg, resolve=True)
    for key in NON_IDENTITY_KEYS + tuple(drop):
        payload.pop(key, None)
    for key, default in ADDED_KEYS.items():
        if payload.get(key) == default:
            payload.pop(key)
    if extra:
        payload["_identity"] = extra
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def run_dir_for(cfg: DictConfig, readable: str, extra: Optional[Dict[str, Any]] = None
                ) -> Path:
    """The deterministic run directory of ``cfg`` (``run_name`` fixes the folder name)."""
    experiment = cfg.get("experiment_name") or "runs"
    if cfg.get("run_name"):
        return Path(cfg.paths.output_dir) / experiment / cfg.run_name
    return (Path(cfg.paths.output_dir) / experiment
            / f"{readable}-seed{cfg.seed}-{config_hash(cfg, extra)}")
