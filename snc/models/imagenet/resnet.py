"""ResNet-50 for ImageNet (torchvision v1.5: stride on the 3x3 conv), with IBN-a/IBN-b and CNSN
sites.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; IBN: Pan et al., "Two at
Once: Enhancing Learning and Generalization Capacities via IBN-Net", ECCV 2018. Parameter names
follow torchvision (``conv1``, ``layer1.0.bn2``, ``fc``...), so torchvision's weights load with
``strict=False`` (only the units are missing). Plain ResNet-50: 25,557,032 parameters.

Sites (official names in brackets): ``pre_residual`` [pre] on the residual branch input (in
the IBN variants it also feeds the projection, as in the official code), ``post_residual``
[residual] after bn3, ``identity`` [identity] on the shortcut after the projection,
``post_addition`` [post] after the addition, before the final ReLU. IBN-b puts an
InstanceNorm after the addition of the last block of layer1 and layer2; those two blocks take no
``post_addition`` unit (14 units instead of 16), as in the official code.

Dense prediction (FCN, paper Table 3): ``replace_stride_with_dilation=(False, True, True)``
dilates layer3/4 instead of striding them, as torchvision's (output stride 8; the first block
of a dilated stage keeps the previous dilation), and :meth:`ResNet.forward_features` returns the
stage outputs. Neither changes a parameter.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from snc.models.base import Backbone, apply_unit
from snc.models.registry import register_backbone
from snc.models.units import UnitFactory

IBN_MODES = ("none", "a", "b")


class IBN(nn.Module):
    """Instance norm (affine) on the first half of the channels, batch norm on the rest."""

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), dim=1)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 units: UnitFactory, stage: int, ibn_a: bool = False, ibn_b_out: bool = False,
                 pre_feeds_projection: bool = False, dilation: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = IBN(planes) if ibn_a else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = downsample
        self.IN = nn.InstanceNorm2d(out, affine=True) if ibn_b_out else None
        self.pre_feeds_projection = pre_feeds_projection
        self.pre_residual = units("pre_residual", inplanes, stage)
        self.post_residual = units("post_residual", out, stage)
        self.identity = units("identity", out, stage)
        self.post_addition = None if ibn_b_out else units("post_addition", out, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch_in = apply_unit(self.pre_residual, x)
        shortcut = branch_in if self.pre_feeds_projection else x
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        out = F.relu(self.bn1(self.conv1(branch_in)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = apply_unit(self.post_residual, self.bn3(self.conv3(out)))
        out = out + apply_unit(self.identity, shortcut)
        if self.IN is not None:
            out = self.IN(out)
        return F.relu(apply_unit(self.post_addition, out))


class ResNet(Backbone):
    """ResNet (bottleneck) for 224x224 ImageNet inputs (any size works: adaptive pooling).

    Args:
        layers: blocks per stage ([3, 4, 6, 3] for ResNet-50).
        num_classes: classifier outputs.
        units: which sites get CNSN units.
        ibn: ``none``, ``a`` (IBN in the first norm of every block of layers 1-3) or ``b``
            (InstanceNorm stem, InstanceNorm after the addition of the last block of layers 1-2).
        width: stem width (64; smaller for tests).
        replace_stride_with_dilation: for layers 2-4, dilate instead of striding (torchvision's
            argument; FCN: ``(False, True, True)``, output stride 8).
    """

    positions = ("identity", "pre_residual", "post_residual", "post_addition")
    default_position = "post_addition"
    num_stages = 4

    def __init__(self, layers: List[int] = (3, 4, 6, 3), num_classes: int = 1000,
                 units: Optional[UnitFactory] = None, ibn: str = "none", width: int = 64,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> None:
        super().__init__(units)
        if ibn not in IBN_MODES:
            raise ValueError(f"unknown ibn {ibn!r}; choose one of {', '.join(IBN_MODES)}")
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation needs 3 booleans (layers 2-4), got "
                             f"{list(replace_stride_with_dilation)}")
        dilate = (False, *[bool(d) for d in replace_stride_with_dilation])
        dilation = 1
        units = units or UnitFactory()
        self.ibn = ibn
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.InstanceNorm2d(width, affine=True) if ibn == "b" else nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        stages = []
        for stage, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=True), 1):
            planes = width * 2 ** (stage - 1)
            out = planes * Bottleneck.expansion
            previous_dilation = dilation
            if dilate[stage - 1]:
                dilation, stride = dilation * stride, 1
            layer = []
            for i in range(blocks):
                downsample = None
                if i == 0 and (stride != 1 or inplanes != out):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(out))
                layer.append(Bottleneck(
                    inplanes, planes, stride if i == 0 else 1, downsample, units, stage,
                    ibn_a=ibn == "a" and stage <= 3,
                    ibn_b_out=ibn == "b" and stage <= 2 and i == blocks - 1,
                    pre_feeds_projection=ibn != "none",
                    dilation=previous_dilation if i == 0 else dilation))
                inplanes = out
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The stage outputs of ``x: (N, 3, H, W)`` (the image unit applied first, as in
        :meth:`forward`): ``{"layer1": ..., "layer4": ...}``; the classifier is not run."""
        if self.input_unit is not None:
            x = self.input_unit(x)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feats = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            feats[name] = x
        return feats


@register_backbone("resnet50", ResNet)
def resnet50(num_classes: int = 1000, units: Optional[UnitFactory] = None, ibn: str = "none",
             **kw) -> ResNet:
    """ResNet-50, optionally IBN-a or IBN-b."""
    kw.setdefault("layers", [3, 4, 6, 3])
    return ResNet(num_classes=num_classes, units=units, ibn=ibn, **kw)


def load_pretrained(model: nn.Module, path: str) -> dict:
    """Loads torchvision-format weights from a local file (``weights_only=True``) with
    ``strict=False``; returns the missing and unexpected keys. The classifier is skipped when its
    shape differs (another number of classes)."""
    from pathlib import Path

    if not Path(path).exists():
        raise FileNotFoundError(
            f"pretrained weights {path} not found: download torchvision's ResNet-50 weights "
            "(https://download.pytorch.org/models/resnet50-19c8e357.pth, what the official CN "
            "run fine-tunes) to that path, or set backbone.pretrained=null")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    for k in skipped:
        state.pop(k)
    result = model.load_state_dict(state, strict=False)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
            "skipped_shape_mismatch": skipped}
