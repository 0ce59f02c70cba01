"""Atomic checkpoints that load without executing code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, written to a temporary
file in the same folder, flushed to disk and renamed over the target, so a killed run leaves
either the previous checkpoint or the new one, never a torn file. Loading uses
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

from snc.atomic import atomic_open


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Writes ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


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
