"""ResNeXt-29 for CIFAR, with CNSN sites.

Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017; the CIFAR
version of the AugMix repository used by the official CrossNorm/SelfNorm code. The official
model is cardinality 4 x base width 32 (``resnext29_4x32d``, 6,807,882 parameters on CIFAR-10);
the paper's text names 32x4d (``resnext29_32x4d``, 4,775,754).

Sites (official names in brackets):

- ``pre_residual`` [pre]: the block input; in the three projection blocks it also feeds the
  projection (as in the official code).
- ``post_residual`` [residual]: after bn_expand, before the addition.
- ``identity`` [identity]: the shortcut input. The official code computes the unit here and, in
  the three projection blocks, then projects the *raw* input, so those units get no gradient and
  CN there does nothing. Here the projection takes the unit's output: the same parameters and
  unit count, and no dead units.
- ``post_addition`` [post]: after the final ReLU.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snc.models.base import Backbone, apply_unit, init_weights
from snc.models.registry import register_backbone
from snc.models.units import STAGE_OUTPUT, UnitFactory

POSITIONS = ("identity", "pre_residual", "post_residual", "post_addition", STAGE_OUTPUT)


class ResNeXtBottleneck(nn.Module):
    """1x1 reduce -> grouped 3x3 -> 1x1 expand (x4), projection when shape changes."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        cardinality: int,
        base_width: int,
        stride: int,
        units: UnitFactory,
        stage: int,
    ) -> None:
        super().__init__()
        dim = int(math.floor(planes * (base_width / 64.0)))
        if dim < 1:
            raise ValueError(f"ResNeXt base_width {base_width} leaves no channel per group")
        inner = dim * cardinality
        out = planes * self.expansion
        self.conv_reduce = nn.Conv2d(inplanes, inner, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_conv = nn.Conv2d(
            inner, inner, 3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.bn = nn.BatchNorm2d(inner)
        self.conv_expand = nn.Conv2d(inner, out, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        self.pre_residual = units("pre_residual", inplanes, stage)
        self.post_residual = units("post_residual", out, stage)
        self.identity = units("identity", inplanes, stage)
        self.post_addition = units("post_addition", out, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = apply_unit(self.pre_residual, x)
        shortcut = apply_unit(self.identity, x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = apply_unit(self.post_residual, self.bn_expand(self.conv_expand(out)))
        return apply_unit(self.post_addition, F.relu(shortcut + out))


class CifarResNeXt(Backbone):
    """ResNeXt-depth (cardinality x base_width) for 32x32 inputs.

    Args:
        depth: 9n+2 (29 for ResNeXt-29; 11 gives one block per stage).
        cardinality: number of groups.
        base_width: channels per group at the first stage's base of 64.
        num_classes: classifier outputs.
        units: which sites get CNSN units.
    """

    positions = POSITIONS
    default_position = "post_addition"
    num_stages = 3

    def __init__(
        self,
        depth: int = 29,
        cardinality: int = 4,
        base_width: int = 32,
        num_classes: int = 10,
        units: Optional[UnitFactory] = None,
        stem_width: int = 64,
    ) -> None:
        super().__init__(units)
        if (depth - 2) % 9 != 0:
            raise ValueError(f"ResNeXt depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        units = units or UnitFactory()
        self.conv_1_3x3 = nn.Conv2d(3, stem_width, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(stem_width)
        inplanes = stem_width
        stages = []
        for stage, (planes, stride) in enumerate(
            ((stem_width, 1), (2 * stem_width, 2), (4 * stem_width, 2)), start=1
        ):
            blocks = []
            for i in range(n):
                blocks.append(
                    ResNeXtBottleneck(
                        inplanes, planes, cardinality, base_width, stride if i == 0 else 1,
                        units, stage,
                    )
                )
                inplanes = planes * ResNeXtBottleneck.expansion
            tail = units(STAGE_OUTPUT, inplanes, stage)  # None unless placed there
            stages.append(nn.Sequential(*blocks, *([tail] if tail is not None else [])))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.classifier = nn.Linear(inplanes, num_classes)
        init_weights(self, linear_weight="kaiming")

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


@register_backbone("resnext29_4x32d", CifarResNeXt)
def resnext29_4x32d(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw):
    """ResNeXt-29 4x32d: what the official code and the published CIFAR numbers used."""
    kw.setdefault("cardinality", 4)
    kw.setdefault("base_width", 32)
    return CifarResNeXt(num_classes=num_classes, units=units, **kw)


@register_backbone("resnext29_32x4d", CifarResNeXt)
def resnext29_32x4d(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw):
    """ResNeXt-29 32x4d: what the paper's text names."""
    kw.setdefault("cardinality", 32)
    kw.setdefault("base_width", 4)
    return CifarResNeXt(num_classes=num_classes, units=units, **kw)
