"""Mixed precision for training and evaluation: one switch, ``amp=none|bf16|fp16``."""

from __future__ import annotations

import contextlib

import torch

from snc.errors import ConfigError

AMP_MODES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str) -> str:
    """Returns ``amp`` or raises ConfigError naming the choices."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp={amp!r}; choose one of {', '.join(AMP_MODES)}")
    return amp


def autocast_context(device: torch.device, amp: str):
    """``torch.autocast`` for ``amp="bf16"``/``"fp16"``, a no-op for ``"none"``."""
    dtype = AMP_MODES[check_amp(amp)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
