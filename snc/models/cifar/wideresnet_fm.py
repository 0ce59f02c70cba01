"""WRN-28-2 exactly as the FixMatch re-implementation builds it, with CNSN sites.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016, in the variant of
kekmodel/FixMatch-pytorch @040be3b ``models/wideresnet.py``, the
network behind the CrossNorm paper's Fig. 4. It differs from :mod:`snc.models.cifar.wideresnet`
(the AugMix/official CNSN WRN):

- LeakyReLU(0.1) instead of ReLU; BatchNorm momentum 0.001 (PyTorch convention), eps 1e-5;
- stage 1's first block activates before the residual split (``activate_before_residual``):
  conv1 and the 1x1 shortcut both see BN+LeakyReLU of the input;
- the first blocks of stages 2 and 3 (a quirk of the reference): conv1 and the shortcut both
  take the **raw** block input; that block's bn1 is evaluated (its running statistics move, as
  in the reference) but its output is discarded, so its weight and bias never get a gradient;
- init: conv kaiming-normal (fan_out, leaky_relu gain with slope 0, i.e. sqrt 2), BN 1/0, FC
  xavier-normal weight and zero bias.

1,467,610 parameters for 10 classes (the reference's count). Sites, as in the other WRN:

- ``pre_residual``: the residual branch input (after bn1+act where the branch uses it; the
  raw input in the quirk blocks); the shortcut sees the unmodified tensor.
- ``post_residual``: conv2's output, before the addition.
- ``identity``: the shortcut, after its projection where there is one.
- ``post_addition``: the sum (this pre-activation net has no activation after it). The paper
  default: with ``blocks=all`` one unit in each of the 12 blocks.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snc.models.base import Backbone, apply_unit
from snc.models.registry import register_backbone
from snc.models.units import UnitFactory
from snc.ops import CNSN

POSITIONS = ("identity", "pre_residual", "post_residual", "post_addition")
BN_MOMENTUM = 0.001  # the reference's; slow running statistics suit the EMA evaluation model
LEAKY_SLOPE = 0.1


def _act(x: torch.Tensor) -> torch.Tensor:
    # not in place (the reference's inplace=True saves memory only): units may keep the input
    return F.leaky_relu(x, LEAKY_SLOPE)


class FixMatchBasicBlock(nn.Module):
    """The reference ``BasicBlock``: BN-act-conv3x3-BN-act-conv3x3 (+ 1x1 projection).

    Args:
        in_planes, out_planes: widths.
        stride: conv1's (and the projection's) stride.
        units: the site factory.
        stage: 1-based stage number (for ``blocks``).
        activate_before_residual: the reference flag (stage 1); acts in the first block only.
        drop_rate: dropout before conv2 (0 in FixMatch).
        bn_momentum: BatchNorm momentum (reference: 0.001).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, units: UnitFactory,
                 stage: int, activate_before_residual: bool = False,
                 drop_rate: float = 0.0, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        # the reference compares widths only (stride 2 always comes with a width change)
        self.equal_in_out = in_planes == out_planes
        self.activate_before_residual = activate_before_residual
        self.conv_shortcut = (None if self.equal_in_out else
                              nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False))
        self.pre_residual = units("pre_residual", in_planes, stage)
        self.post_residual = units("post_residual", out_planes, stage)
        self.identity = units("identity", out_planes, stage)
        self.post_addition = units("post_addition", out_planes, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equal_in_out:
            shortcut = x
            branch = _act(self.bn1(apply_unit(self.pre_residual, x)))
        elif self.activate_before_residual:
            x = _act(self.bn1(x))
            shortcut = self.conv_shortcut(x)
            branch = apply_unit(self.pre_residual, x)
        else:  # reference quirk: bn1 evaluated, its output unused; both paths see raw x
            if self.training:
                self.bn1(x)  # keeps the running statistics identical to the reference
            shortcut = self.conv_shortcut(x)
            branch = apply_unit(self.pre_residual, x)
        out = _act(self.bn2(self.conv1(branch)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = apply_unit(self.post_residual, self.conv2(out))
        out = apply_unit(self.identity, shortcut) + out
        return apply_unit(self.post_addition, out)


class WideResNetFM(Backbone):
    """The FixMatch reference WRN-depth-k for 32x32 inputs.

    Args:
        depth: 6n+4 (28 for WRN-28-2; 10 gives one block per stage, for tests).
        widen_factor: k.
        num_classes: classifier outputs.
        units: which sites get CNSN units.
        drop_rate: dropout inside blocks (0 in FixMatch).
        bn_momentum: BatchNorm momentum, PyTorch convention (reference: 0.001, i.e. running
            statistics averaged over ~1,000 steps: a run of a few hundred steps needs more,
            e.g. 0.1, or its eval-mode BatchNorm still uses the initial statistics).
    """

    positions = POSITIONS
    default_position = "post_addition"
    num_stages = 3

    def __init__(self, depth: int = 28, widen_factor: int = 2, num_classes: int = 10,
                 units: Optional[UnitFactory] = None, drop_rate: float = 0.0,
                 bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__(units)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        units = units or UnitFactory()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        stages = []
        for stage, stride in zip((1, 2, 3), (1, 2, 2), strict=True):
            stages.append(nn.Sequential(*[
                FixMatchBasicBlock(widths[stage - 1] if i == 0 else widths[stage],
                                   widths[stage], stride if i == 0 else 1, units, stage,
                                   activate_before_residual=stage == 1, drop_rate=drop_rate,
                                   bn_momentum=bn_momentum)
                for i in range(n)]))
        self.block1, self.block2, self.block3 = stages
        self.bn1 = nn.BatchNorm2d(widths[3], momentum=bn_momentum)
        self.fc = nn.Linear(widths[3], num_classes)
        # the reference's init loop; SN/SE units keep their own init (they are not in FixMatch)
        in_units = {id(m) for unit in self.modules() if isinstance(unit, CNSN)
                    for m in unit.modules()}
        for m in self.modules():
            if id(m) in in_units:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = _act(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@register_backbone("wrn28_2_fm", WideResNetFM)
def wrn28_2_fm(num_classes: int = 10, units: Optional[UnitFactory] = None,
               **kw) -> WideResNetFM:
    """WRN-28-2 as FixMatch builds it (paper Fig. 4); ``depth``/``widen_factor`` overridable."""
    kw.setdefault("depth", 28)
    kw.setdefault("widen_factor", 2)
    return WideResNetFM(num_classes=num_classes, units=units, **kw)
