"""The part every unit a controller switches shares (CrossNorm and the style methods)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


class SwitchedUnit(nn.Module):
    """A unit that acts only when training *and* switched on by its controller.

    Attributes:
        active: set by the controller for one forward pass (off by default).
        generator: the controller's CPU generator the unit's draws come from (torch's default
            one if None).
        controller: the controller (capture mode: the unit reads its device draws from it).
        index: the unit's place among the controller's units (network order).
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.generator: Optional[torch.Generator] = None
        self.controller: Optional[Any] = None
        self.index = 0

    def acts(self) -> bool:
        """Whether this forward pass applies the unit: training and switched on."""
        return self.training and self.active
