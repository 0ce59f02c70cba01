"""Block families of timm models (matched by class name: timm is imported only by the user).

timm's ResNet blocks get the four residual positions (the same sites as
:mod:`snc.models.attach.torchvision_blocks`; ``post_residual`` is the branch output after SE,
before drop-path); ConvNeXt, EfficientNet/MobileNet and ViT/Swin blocks get ``post_addition``, their
own output (after the addition), applied by a forward hook. Written against timm 1.0.
"""

from __future__ import annotations

import torch
from torch import nn

from snc.models.attach.core import Adapter, apply_site, register_adapter
from snc.models.attach.torchvision_blocks import RESIDUAL, first_conv, last_conv


def timm_resnet_forward(self, x: torch.Tensor) -> torch.Tensor:
    """timm ``BasicBlock`` / ``Bottleneck`` forward with the four residual sites."""
    out = apply_site(self, "pre_residual", x)
    if hasattr(self, "conv3"):
        out = self.act1(self.bn1(self.conv1(out)))
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.drop_block(out)
        out = self.act2(out)
        out = self.aa(out)
        out = self.bn3(self.conv3(out))
        last_act = self.act3
    else:
        out = self.bn1(self.conv1(out))
        out = self.drop_block(out)
        out = self.act1(out)
        out = self.aa(out)
        out = self.bn2(self.conv2(out))
        last_act = self.act2
    if self.se is not None:
        out = self.se(out)
    out = apply_site(self, "post_residual", out)
    if self.drop_path is not None:
        out = self.drop_path(out)
    shortcut = x if self.downsample is None else self.downsample(x)
    out = out + apply_site(self, "identity", shortcut)
    return last_act(apply_site(self, "post_addition", out))


def timm_resnet_channels(block: nn.Module, position: str) -> int:
    if position == "pre_residual":
        return block.conv1.in_channels
    return (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features


register_adapter(Adapter(
    "timm_resnet", ("timm.models.resnet.BasicBlock", "timm.models.resnet.Bottleneck"),
    RESIDUAL, timm_resnet_channels, timm_resnet_forward))

register_adapter(Adapter(
    "timm_convnext", ("timm.models.convnext.ConvNeXtBlock",), ("post_addition",),
    lambda block, position: first_conv(block).in_channels))

register_adapter(Adapter(
    "timm_efficientnet",
    tuple(f"timm.models._efficientnet_blocks.{name}" for name in (
        "DepthwiseSeparableConv", "InvertedResidual", "EdgeResidual",
        "UniversalInvertedResidual", "CondConvResidual")),
    ("post_addition",), lambda block, position: last_conv(block).out_channels))

register_adapter(Adapter(
    "timm_vit", ("timm.models.vision_transformer.Block",), ("post_addition",),
    lambda block, position: block.norm1.normalized_shape[0], layout="nlc"))

register_adapter(Adapter(
    "timm_swin", ("timm.models.swin_transformer.SwinTransformerBlock",), ("post_addition",),
    lambda block, position: block.norm1.normalized_shape[0], layout="nhwc"))
