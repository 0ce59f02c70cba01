"""Wide ResNet for CIFAR (pre-activation basic blocks), with CNSN sites.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016; the CIFAR version of the AugMix
repository that the official CrossNorm/SelfNorm code builds on (WRN-40-2: 2,243,546 parameters
on CIFAR-10). Sites (paper Fig. 9; official names in brackets):

- ``pre_residual`` [pre]: residual branch input. In blocks of equal in/out width, before bn1;
  in the first block of a stage, after bn1+ReLU, and the 1x1 shortcut sees the unmodified input.
- ``post_residual`` [residual]: conv2 output, before the addition.
- ``identity`` [identity]: the shortcut, after its projection where there is one.
- ``post_addition`` [post]: the sum (this pre-activation net has no ReLU after it).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snc.models.base import Backbone, apply_unit, init_weights
from snc.models.registry import register_backbone
from snc.models.units import STAGE_OUTPUT, UnitFactory

POSITIONS = ("identity", "pre_residual", "post_residual", "post_addition", STAGE_OUTPUT)


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with a 1x1 projection when the width changes."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        units: UnitFactory,
        stage: int,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.conv_shortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )
        self.pre_residual = units("pre_residual", in_planes, stage)
        self.post_residual = units("post_residual", out_planes, stage)
        self.identity = units("identity", out_planes, stage)
        self.post_addition = units("post_addition", out_planes, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equal_in_out:
            shortcut = x
            out = F.relu(self.bn1(apply_unit(self.pre_residual, x)))
        else:
            x = F.relu(self.bn1(x))
            shortcut = self.conv_shortcut(x)
            out = apply_unit(self.pre_residual, x)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = apply_unit(self.post_residual, self.conv2(out))
        out = apply_unit(self.identity, shortcut) + out
        return apply_unit(self.post_addition, out)


class WideResNet(Backbone):
    """WRN-depth-k for 32x32 inputs.

    Args:
        depth: 6n+4 (40 for WRN-40-2, 28 for WRN-28-2; 10 gives one block per stage).
        widen_factor: k.
        num_classes: classifier outputs.
        units: which sites get CNSN units.
        drop_rate: dropout inside blocks (0 in the paper's runs).
    """

    positions = POSITIONS
    default_position = "post_addition"
    num_stages = 3

    def __init__(
        self,
        depth: int = 40,
        widen_factor: int = 2,
        num_classes: int = 10,
        units: Optional[UnitFactory] = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(units)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        units = units or UnitFactory()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        stages = []
        for stage, stride in zip((1, 2, 3), (1, 2, 2), strict=True):
            blocks = [
                WideBasicBlock(
                    widths[stage - 1] if i == 0 else widths[stage],
                    widths[stage],
                    stride if i == 0 else 1,
                    units,
                    stage,
                    drop_rate,
                )
                for i in range(n)
            ]
            tail = units(STAGE_OUTPUT, widths[stage], stage)  # None unless placed there
            stages.append(nn.Sequential(*blocks, *([tail] if tail is not None else [])))
        self.block1, self.block2, self.block3 = stages
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@register_backbone("wrn40_2", WideResNet)
def wrn40_2(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw) -> WideResNet:
    """WRN-40-2 (the paper's and the official WideResNet)."""
    kw.setdefault("depth", 40)
    kw.setdefault("widen_factor", 2)
    return WideResNet(num_classes=num_classes, units=units, **kw)


@register_backbone("wrn28_2", WideResNet)
def wrn28_2(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw) -> WideResNet:
    """WRN-28-2 (semi-supervised experiments, FixMatch's backbone)."""
    kw.setdefault("depth", 28)
    kw.setdefault("widen_factor", 2)
    return WideResNet(num_classes=num_classes, units=units, **kw)


@register_backbone("wrn16_2", WideResNet)
def wrn16_2(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw) -> WideResNet:
    """WRN-16-2: a small WRN for quick runs on CPU (the offline demo)."""
    kw.setdefault("depth", 16)
    kw.setdefault("widen_factor", 2)
    return WideResNet(num_classes=num_classes, units=units, **kw)
