"""Backbones with SelfNorm/CrossNorm sites, built by name through one registry.

    from snc.models import build_model, list_backbones
    model = build_model("wrn40_2", num_classes=10, sn=True, cn=True,
                        position="post_addition", crop="both", active_num=2, prob=0.25)
    model = attach(torchvision.models.resnet18(), sn=True, cn=True)   # any torchvision/timm net
"""

from snc.models import cifar, imagenet  # noqa: F401  (registers the backbones)
from snc.models.attach import attach, list_adapters, supported_positions
from snc.models.base import Backbone
from snc.models.registry import (
    BackboneSpec,
    attach_controller,
    build_model,
    count_parameters,
    count_units,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)
from snc.models.units import UnitFactory

__all__ = [
    "Backbone",
    "BackboneSpec",
    "UnitFactory",
    "attach",
    "attach_controller",
    "build_model",
    "count_parameters",
    "count_units",
    "get_backbone_spec",
    "list_adapters",
    "list_backbones",
    "register_backbone",
    "supported_positions",
]
