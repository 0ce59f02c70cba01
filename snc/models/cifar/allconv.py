"""All-convolutional network for CIFAR, with CNSN sites.

Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR-W 2015, in the
form of the AugMix repository used by the official code (1,409,674 parameters on CIFAR-10):
nine [conv, BN, GELU] cells (96, 96, 96, pool, 192, 192, 192, pool, 3x3 no-pad 192, two 1x1
with padding 1) and a global average pool. GELU is the sigmoid approximation x*sigmoid(1.702x).

Sites (paper Fig. 8, official names 1/2/3): ``after_conv`` (conv -> unit -> BN -> GELU),
``after_norm`` (conv -> BN -> unit -> GELU), ``after_act`` (conv -> BN -> GELU -> unit).
Stages for ``blocks``: cells 1-3, 4-6 and 7-9.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from snc.models.base import Backbone, apply_unit, init_weights
from snc.models.registry import register_backbone
from snc.models.units import UnitFactory

POSITIONS = ("after_conv", "after_norm", "after_act")


class ApproxGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the GELU approximation of the AugMix AllConvNet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(1.702 * x) * x


class ConvCell(nn.Module):
    """conv -> BN -> GELU with optional units after each of the three."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, padding: int, units: UnitFactory, stage: int
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=padding)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = ApproxGELU()
        self.after_conv = units("after_conv", c_out, stage)
        self.after_norm = units("after_norm", c_out, stage)
        self.after_act = units("after_act", c_out, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = apply_unit(self.after_conv, self.conv(x))
        x = apply_unit(self.after_norm, self.bn(x))
        return apply_unit(self.after_act, self.act(x))


class AllConvNet(Backbone):
    """AllConvNet for 32x32 inputs.

    Args:
        num_classes: classifier outputs.
        units: which sites get CNSN units.
        width1, width2: channel widths of the first and second groups (96, 192).
    """

    positions = POSITIONS
    default_position = "after_conv"
    num_stages = 3

    def __init__(
        self,
        num_classes: int = 10,
        units: Optional[UnitFactory] = None,
        width1: int = 96,
        width2: int = 192,
    ) -> None:
        super().__init__(units)
        u = units or UnitFactory()
        w1, w2 = width1, width2
        self.features = nn.Sequential(
            ConvCell(3, w1, 3, 1, u, 1),
            ConvCell(w1, w1, 3, 1, u, 1),
            ConvCell(w1, w1, 3, 1, u, 1),
            nn.MaxPool2d(2, 2),
            nn.Dropout(0.5),
            ConvCell(w1, w2, 3, 1, u, 2),
            ConvCell(w2, w2, 3, 1, u, 2),
            ConvCell(w2, w2, 3, 1, u, 2),
            nn.MaxPool2d(2, 2),
            nn.Dropout(0.5),
            ConvCell(w2, w2, 3, 0, u, 3),  # 8x8 -> 6x6
            ConvCell(w2, w2, 1, 1, u, 3),  # 1x1 with padding 1: 6x6 -> 8x8
            ConvCell(w2, w2, 1, 1, u, 3),  # 8x8 -> 10x10
        )
        self.classifier = nn.Linear(w2, num_classes)
        init_weights(self)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # The official AvgPool2d(8) on the final 10x10 map averages its top-left 8x8 window.
        if min(x.shape[-2:]) >= 8:
            x = nn.functional.avg_pool2d(x, 8)
        return self.classifier(x.mean((2, 3)))


@register_backbone("allconv", AllConvNet)
def allconv(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw) -> AllConvNet:
    """The AllConvNet of the paper's CIFAR tables."""
    return AllConvNet(num_classes=num_classes, units=units, **kw)
