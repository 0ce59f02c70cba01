"""Common base of the backbones: the optional unit on the input image and weight init."""

from __future__ import annotations

import math
from typing import ClassVar, Optional, Tuple

import torch
from torch import nn

from snc.models.units import IMAGE, NO_UNITS, UnitFactory


class Backbone(nn.Module):
    """A classifier whose cells may carry CNSN units.

    Subclasses declare ``positions`` (the sites their cells offer, besides ``image``),
    ``default_position`` (the one the paper's tables use) and ``num_stages``, build their layers
    asking ``units(site, channels, stage)`` for each site, and implement :meth:`forward_body`.
    ``position=image`` puts the unit on the input batch (paper Table 6, ImageNet's image CN).
    """

    positions: ClassVar[Tuple[str, ...]] = ()
    default_position: ClassVar[str] = ""
    num_stages: ClassVar[int] = 3

    def __init__(self, units: Optional[UnitFactory] = None) -> None:
        super().__init__()
        self.input_unit = (units or NO_UNITS)(IMAGE, 3, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, 3, H, W)`` normalized images -> ``(N, num_classes)`` logits."""
        if self.input_unit is not None:
            x = self.input_unit(x)
        return self.forward_body(x)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def init_weights(model: nn.Module, linear_weight: str = "default") -> None:
    """The CIFAR backbones' init: He-normal (fan-out) convs, BN weight 1 / bias 0, zero linear
    bias. ``linear_weight="kaiming"`` also re-draws linear weights He-normal (ResNeXt).

    ``normal(0, sqrt(2 / (k*k*out_channels)))`` of the AugMix/official backbones equals
    ``kaiming_normal_(mode="fan_out")``. Only 2-D layers and linear layers are touched, as in
    the official init loops, so SelfNorm's Conv1d/BatchNorm1d keep PyTorch's defaults.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_weight == "kaiming":
                nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def apply_unit(unit: Optional[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``unit(x)`` or ``x`` where the site has no unit."""
    return x if unit is None else unit(x)
