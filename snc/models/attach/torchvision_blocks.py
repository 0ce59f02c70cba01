"""Block families of torchvision's classification models, one adapter each.

Residual positions follow snc's own ResNet-50 (:mod:`snc.models.imagenet.resnet`):
``pre_residual`` on the residual branch's input (the shortcut still sees the block input),
``post_residual`` on the branch output (after its last norm; ConvNeXt: after the layer scale),
``identity`` on the shortcut after the projection (blocks without a shortcut have none),
``post_addition`` after the addition (before the final activation where the block has one).
Each ``forward`` below is the library's forward (torchvision 0.19-0.29) with those sites; with no
unit acting it gives the library's output exactly (tested), so keep them in step with it.
Stochastic depth stays on the branch, after ``post_residual``.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from snc.models.attach.core import Adapter, apply_site, register_adapter

RESIDUAL = ("identity", "pre_residual", "post_residual", "post_addition")


def first_conv(block: nn.Module) -> nn.Conv2d:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d))


def last_conv(block: nn.Module) -> nn.Conv2d:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1]


def _io_channels(block: nn.Module, position: str, has_shortcut: bool = True) -> Optional[int]:
    """``pre_residual``: the block's input channels (first conv); the others: its output
    channels (last conv; SE convs sit before it)."""
    if position == "pre_residual":
        return first_conv(block).in_channels
    if position == "identity" and not has_shortcut:
        return None
    return last_conv(block).out_channels


# --- ResNet, ResNeXt, Wide ResNet ---------------------------------------------------------

def resnet_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``BasicBlock`` / ``Bottleneck`` forward with the four residual sites."""
    branch = apply_site(self, "pre_residual", x)
    out = self.relu(self.bn1(self.conv1(branch)))
    if hasattr(self, "conv3"):
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
    else:
        out = self.bn2(self.conv2(out))
    out = apply_site(self, "post_residual", out)
    shortcut = x if self.downsample is None else self.downsample(x)
    out = out + apply_site(self, "identity", shortcut)
    return self.relu(apply_site(self, "post_addition", out))


def resnet_channels(block: nn.Module, position: str) -> int:
    if position == "pre_residual":
        return block.conv1.in_channels
    return (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features


register_adapter(Adapter(
    "torchvision_resnet",
    ("torchvision.models.resnet.BasicBlock", "torchvision.models.resnet.Bottleneck"),
    RESIDUAL, resnet_channels, resnet_forward))


# --- MobileNetV2 / V3, EfficientNet / V2 ----------------------------------------------------

def inverted_residual_forward(self, x: torch.Tensor) -> torch.Tensor:
    """MobileNetV2/V3 ``InvertedResidual``, EfficientNet ``MBConv`` / ``FusedMBConv``."""
    branch = self.conv if hasattr(self, "conv") else self.block  # V2 names it conv
    out = apply_site(self, "post_residual", branch(apply_site(self, "pre_residual", x)))
    if self.use_res_connect:
        if hasattr(self, "stochastic_depth"):
            out = self.stochastic_depth(out)
        out = out + apply_site(self, "identity", x)
    return apply_site(self, "post_addition", out)


def inverted_residual_channels(block: nn.Module, position: str) -> Optional[int]:
    return _io_channels(block, position, has_shortcut=block.use_res_connect)


register_adapter(Adapter(
    "torchvision_inverted_residual",
    ("torchvision.models.mobilenetv2.InvertedResidual",
     "torchvision.models.mobilenetv3.InvertedResidual",
     "torchvision.models.efficientnet.MBConv", "torchvision.models.efficientnet.FusedMBConv"),
    RESIDUAL, inverted_residual_channels, inverted_residual_forward))


# --- RegNet -----------------------------------------------------------------------------------

def regnet_forward(self, x: torch.Tensor) -> torch.Tensor:
    """RegNet ``ResBottleneckBlock``."""
    out = apply_site(self, "post_residual", self.f(apply_site(self, "pre_residual", x)))
    shortcut = x if self.proj is None else self.proj(x)
    out = out + apply_site(self, "identity", shortcut)
    return self.activation(apply_site(self, "post_addition", out))


def regnet_channels(block: nn.Module, position: str) -> int:
    if position == "pre_residual":
        return first_conv(block.f).in_channels
    return last_conv(block.f).out_channels


register_adapter(Adapter(
    "torchvision_regnet", ("torchvision.models.regnet.ResBottleneckBlock",),
    RESIDUAL, regnet_channels, regnet_forward))


# --- ConvNeXt ---------------------------------------------------------------------------------

def convnext_forward(self, x: torch.Tensor) -> torch.Tensor:
    """ConvNeXt ``CNBlock`` (channels-first at the block's boundary)."""
    out = self.layer_scale * self.block(apply_site(self, "pre_residual", x))
    out = self.stochastic_depth(apply_site(self, "post_residual", out))
    out = out + apply_site(self, "identity", x)
    return apply_site(self, "post_addition", out)


register_adapter(Adapter(
    "torchvision_convnext", ("torchvision.models.convnext.CNBlock",),
    RESIDUAL, lambda block, position: first_conv(block).in_channels, convnext_forward))


# --- DenseNet ---------------------------------------------------------------------------------

def dense_layer_forward(self, x) -> torch.Tensor:
    """DenseNet ``_DenseLayer`` (input: the list of previous features, or one tensor).
    ``layer_input`` acts on the concatenated input of the layer's branch (the block still
    concatenates the unchanged features), ``bottleneck`` after the 1x1 conv, ``new_features``
    on the layer's output before dropout."""
    features = [x] if isinstance(x, torch.Tensor) else x
    layer_input = apply_site(self, "layer_input", torch.cat(features, 1))
    bottleneck = self.conv1(self.relu1(self.norm1(layer_input)))
    bottleneck = apply_site(self, "bottleneck", bottleneck)
    new = apply_site(self, "new_features", self.conv2(self.relu2(self.norm2(bottleneck))))
    if self.drop_rate > 0:
        new = nn.functional.dropout(new, p=self.drop_rate, training=self.training)
    return new


def dense_layer_channels(block: nn.Module, position: str) -> int:
    return {"layer_input": block.norm1.num_features, "bottleneck": block.conv1.out_channels,
            "new_features": block.conv2.out_channels}[position]


register_adapter(Adapter(
    "torchvision_densenet", ("torchvision.models.densenet._DenseLayer",),
    ("layer_input", "bottleneck", "new_features"), dense_layer_channels, dense_layer_forward,
    default_position="layer_input"))


# --- VGG: the layers of ``features`` ----------------------------------------------------------

VGG_SITES = {"after_conv": nn.Conv2d, "after_norm": nn.BatchNorm2d, "after_act": nn.ReLU}


def vgg_find(model: nn.Module) -> List[Tuple[str, nn.Module, int]]:
    """VGG's sites: each conv, norm and ReLU of ``model.features``; stage k = the layers before
    the k-th max-pool."""
    if not any(f"{c.__module__}.{c.__qualname__}" == "torchvision.models.vgg.VGG"
               for c in type(model).__mro__):
        return []
    found, stage = [], 1
    for name, layer in model.features.named_children():
        if isinstance(layer, nn.MaxPool2d):
            stage += 1
        elif isinstance(layer, tuple(VGG_SITES.values())):
            found.append((f"features.{name}", layer, stage))
    return found


def vgg_channels(layer: nn.Module, position: str) -> Optional[int]:
    """A site exists only on the layers of its kind; a ReLU's channels are those of the conv
    or norm before it (set by :func:`vgg_find`'s caller through ``_snc_channels``)."""
    if not isinstance(layer, VGG_SITES[position]):
        return None
    return getattr(layer, "out_channels", None) or getattr(layer, "num_features", None) or \
        layer.__dict__.get("_snc_channels")


def vgg_find_with_channels(model: nn.Module) -> List[Tuple[str, nn.Module, int]]:
    found = vgg_find(model)
    channels = None
    for _, layer, _ in found:
        channels = getattr(layer, "out_channels", None) or getattr(layer, "num_features", None) \
            or channels
        if isinstance(layer, nn.ReLU):
            layer.__dict__["_snc_channels"] = channels
    return found


def vgg_forward(self, x: torch.Tensor) -> torch.Tensor:
    """A VGG layer followed by its unit (the position is the layer's kind)."""
    out = type(self).forward(self, x)
    for position in VGG_SITES:
        out = apply_site(self, position, out)
    return out


register_adapter(Adapter(
    "torchvision_vgg", ("torchvision.models.vgg.VGG",), tuple(VGG_SITES), vgg_channels,
    vgg_forward, default_position="after_act", find=vgg_find_with_channels))


# --- token models: ViT, Swin ------------------------------------------------------------------

register_adapter(Adapter(
    "torchvision_vit", ("torchvision.models.vision_transformer.EncoderBlock",),
    ("post_addition",), lambda block, position: block.ln_1.normalized_shape[0], layout="nlc"))

register_adapter(Adapter(
    "torchvision_swin", ("torchvision.models.swin_transformer.SwinTransformerBlock",),
    ("post_addition",), lambda block, position: block.norm1.normalized_shape[0],
    layout="nhwc"))
