"""DenseNet for CIFAR, with CNSN sites in the dense cells.

Huang et al., "Densely Connected Convolutional Networks", CVPR 2017, in the form of the AugMix
repository used by the official code. Its ``densenet()`` factory builds **DenseNet-40-12 without
bottleneck or compression** (``densenet40_12``, 1,059,298 parameters on CIFAR-10): that is the
network behind the published CIFAR numbers. The paper's text names DenseNet-BC-100-12
(``densenet_bc_100_12``, 769,162 parameters), built here from the same file with bottleneck
layers and compression 0.5.

Sites of a dense cell (paper Fig. 8; official names in brackets):

- ``layer_input`` [conv1_pre, the paper's "Pre"]: the layer input (the previous concatenation);
  the modified tensor is also the one concatenated onward.
- ``new_features`` [conv1_post, or conv2_post in BC; the paper's "Post"]: the growth-rate new
  channels, before concatenation.
- ``bottleneck`` [conv1_post in BC]: the 4*growth channels of the 1x1 bottleneck conv (BC only).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snc.models.base import Backbone, apply_unit, init_weights
from snc.models.registry import register_backbone
from snc.models.units import UnitFactory


class SingleLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth_rate`` channels, concatenated to the input."""

    def __init__(self, n_channels: int, growth_rate: int, units: UnitFactory, stage: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(n_channels)
        self.conv1 = nn.Conv2d(n_channels, growth_rate, 3, padding=1, bias=False)
        self.layer_input = units("layer_input", n_channels, stage)
        self.new_features = units("new_features", growth_rate, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = apply_unit(self.layer_input, x)
        out = apply_unit(self.new_features, self.conv1(F.relu(self.bn1(x))))
        return torch.cat((x, out), 1)


class BottleneckLayer(nn.Module):
    """BN-ReLU-conv1x1 (4*growth) -> BN-ReLU-conv3x3 (growth), concatenated to the input."""

    def __init__(self, n_channels: int, growth_rate: int, units: UnitFactory, stage: int):
        super().__init__()
        inter = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(n_channels)
        self.conv1 = nn.Conv2d(n_channels, inter, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth_rate, 3, padding=1, bias=False)
        self.layer_input = units("layer_input", n_channels, stage)
        self.bottleneck = units("bottleneck", inter, stage)
        self.new_features = units("new_features", growth_rate, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = apply_unit(self.layer_input, x)
        out = apply_unit(self.bottleneck, self.conv1(F.relu(self.bn1(x))))
        out = apply_unit(self.new_features, self.conv2(F.relu(self.bn2(out))))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 then 2x2 average pooling."""

    def __init__(self, n_channels: int, n_out_channels: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(n_channels)
        self.conv1 = nn.Conv2d(n_channels, n_out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNet(Backbone):
    """DenseNet(-BC) for 32x32 inputs.

    Args:
        depth: 3n+4 layers (40: 12 layers per block; BC 100: 16 bottleneck layers per block).
        growth_rate: k.
        reduction: transition compression (1.0 = none, 0.5 for BC).
        bottleneck: bottleneck (BC) layers.
        num_classes: classifier outputs.
        units: which sites get CNSN units.
    """

    positions = ("layer_input", "new_features")
    default_position = "layer_input"
    num_stages = 3

    def __init__(
        self,
        depth: int = 40,
        growth_rate: int = 12,
        reduction: float = 1.0,
        bottleneck: bool = False,
        num_classes: int = 10,
        units: Optional[UnitFactory] = None,
    ) -> None:
        super().__init__(units)
        units = units or UnitFactory()
        n_layers = (depth - 4) // 3
        if bottleneck:
            n_layers //= 2
        if n_layers < 1:
            raise ValueError(f"DenseNet depth {depth} leaves no layer per block")
        layer = BottleneckLayer if bottleneck else SingleLayer
        n_channels = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, n_channels, 3, padding=1, bias=False)
        dense, trans = [], []
        for stage in (1, 2, 3):
            layers = []
            for _ in range(n_layers):
                layers.append(layer(n_channels, growth_rate, units, stage))
                n_channels += growth_rate
            dense.append(nn.Sequential(*layers))
            if stage < 3:
                n_out = int(math.floor(n_channels * reduction))
                trans.append(Transition(n_channels, n_out))
                n_channels = n_out
        self.dense1, self.dense2, self.dense3 = dense
        self.trans1, self.trans2 = trans
        self.bn1 = nn.BatchNorm2d(n_channels)
        self.fc = nn.Linear(n_channels, num_classes)
        init_weights(self)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trans1(self.dense1(self.conv1(x)))
        out = self.trans2(self.dense2(out))
        out = F.relu(self.bn1(self.dense3(out)))
        # Flatten, not squeeze: the official squeeze turns a batch of one into 1-D logits.
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class DenseNetBC(DenseNet):
    """DenseNet-BC: bottleneck layers add the ``bottleneck`` site."""

    positions = ("layer_input", "new_features", "bottleneck")


@register_backbone("densenet40_12", DenseNet)
def densenet40_12(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw) -> DenseNet:
    """DenseNet-40-12 (no bottleneck, no compression): the official CIFAR DenseNet."""
    kw.setdefault("depth", 40)
    kw.setdefault("growth_rate", 12)
    return DenseNet(num_classes=num_classes, units=units, reduction=1.0, bottleneck=False, **kw)


@register_backbone("densenet_bc_100_12", DenseNetBC)
def densenet_bc_100_12(num_classes: int = 10, units: Optional[UnitFactory] = None, **kw):
    """DenseNet-BC-100-12: what the paper's text names."""
    kw.setdefault("depth", 100)
    kw.setdefault("growth_rate", 12)
    return DenseNetBC(num_classes=num_classes, units=units, reduction=0.5, bottleneck=True, **kw)
