"""Checkpoints that survive anything, and load without executing code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts. It is written to a
unique temporary file beside the target, forced to disk, **loaded back** (``weights_only=True``)
to prove it is whole, and only then renamed over ``last.pt``; the checkpoint it replaces is
kept as ``prev.pt`` (a hard link made before the rename, so ``last.pt`` always exists). A
reader therefore finds a complete ``last.pt``, or, if something outside the writer tore it
(a full disk, a copy interrupted by hand), :func:`load_resumable` falls back to ``prev.pt`` and
says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from snc.atomic import atomic_open
from snc.errors import ConfigError

log = logging.getLogger("snc")


def _check_loadable(path: Path) -> None:
    torch.load(path, map_location="cpu", weights_only=True)


def save_checkpoint(state: Dict[str, Any], path: Path, keep_previous: bool = True) -> None:
    """Writes ``state`` to ``path`` atomically, verified loadable; keeps the old file as
    ``prev.pt`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_previous and path.exists():
        prev = path.with_name("prev.pt")
        link = prev.with_name(f"prev.pt.{os.getpid()}.link")
        try:
            if link.exists():
                link.unlink()
            os.link(path, link)
            os.replace(link, prev)
        except OSError as err:  # best effort: the new checkpoint matters more than the old one
            log.warning("could not keep %s as %s (%s)", path, prev, err)
    with atomic_open(path, verify=_check_loadable) as f:
        torch.save(state, f)


def load_checkpoint(path: Path, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def load_resumable(ckpt_dir: Path, map_location: Optional[str] = "cpu"
                   ) -> Tuple[Dict[str, Any], Path]:
    """The newest usable checkpoint of a run: ``last.pt``, else ``prev.pt`` (with a warning).

    Raises:
        ConfigError: neither is loadable; the message names the files and how to start over.
    """
    errors = []
    for name in ("last.pt", "prev.pt"):
        path = Path(ckpt_dir) / name
        if not path.exists():
            errors.append(f"{name}: missing")
            continue
        try:
            state = load_checkpoint(path, map_location)
        except Exception as err:  # torn, truncated or foreign file: try the previous one
            errors.append(f"{name}: unreadable ({type(err).__name__}: {str(err)[:120]})")
            continue
        if name != "last.pt":
            log.warning("%s; resuming from %s instead (one period earlier)", errors[0], path)
        return state, path
    raise ConfigError(f"no usable checkpoint in {ckpt_dir} ({'; '.join(errors)}). To start "
                      f"this run over, delete the folder: rm -r {Path(ckpt_dir).parent}")


def rng_state(device: torch.device) -> Dict[str, Any]:
    """torch's global generator states (CPU, and CUDA when used)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
