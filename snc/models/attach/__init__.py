"""SelfNorm/CrossNorm units in any torchvision or timm network, by position name.

    import torchvision
    from snc.models import attach
    model = attach(torchvision.models.resnet50(), sn=True, cn=True, position="post_addition")

One adapter per block family (``torchvision_blocks``, ``timm_blocks``) declares the positions its
blocks offer and how to reach them; :func:`attach` installs the units without changing the
state-dict keys of the original layers. :func:`build_hub_model` makes the networks by name for
``backbone=torchvision`` / ``backbone=timm``.
"""

from snc.models.attach import timm_blocks, torchvision_blocks  # noqa: F401  (registers)
from snc.models.attach.core import (
    Adapter,
    AttachReport,
    Block,
    attach,
    find_blocks,
    list_adapters,
    register_adapter,
    supported_positions,
)
from snc.models.attach.hub import build_hub_model, check_weights

__all__ = [
    "Adapter",
    "AttachReport",
    "Block",
    "attach",
    "build_hub_model",
    "check_weights",
    "find_blocks",
    "list_adapters",
    "register_adapter",
    "supported_positions",
]
