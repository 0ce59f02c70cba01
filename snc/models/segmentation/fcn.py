"""FCN (Long et al., CVPR 2015) on snc's ResNet-50 with dilated layer3/4, as the official
CNSN ``model/fcn.py`` builds it from torchvision's ``fcn_resnet50`` (paper Table 3).

- Backbone: :class:`snc.models.imagenet.resnet.ResNet` with ``replace_stride_with_dilation=
  (False, True, True)`` (output stride 8), no classifier, SN/CN units where the unit options
  say (official: SN at ``post_residual`` in all 16 bottlenecks, CN in all 16).
- Main head on layer4: conv3x3 2048->512, BN, ReLU, Dropout 0.1, conv1x1 512->19
  (torchvision ``FCNHead``, 9,447,955 parameters); auxiliary head on layer3: 1024->256->19
  (2,364,691). Both logits are upsampled bilinearly (``align_corners=False``) to the input.
- Parameters: 35,320,678 plain; SN at ``post_residual`` adds 16 x 4C = 60,416.

``forward(x)`` returns ``{"out": logits}``, plus ``"aux"`` in training mode (the auxiliary head
is not run in evaluation). ``model.cn_controller`` is the backbone's CrossNorm controller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from snc.models.registry import build_model

NUM_PARAMS = 35_320_678
SN_PARAMS = 60_416


class FCNHead(nn.Sequential):
    """conv3x3 (in -> in/4), BN, ReLU, Dropout(0.1), conv1x1 (-> classes): torchvision's."""

    def __init__(self, in_channels: int, channels: int) -> None:
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter, channels, 1),
        )


class FCN(nn.Module):
    """FCN over a ResNet that has ``forward_features``.

    Args:
        backbone: the ResNet (its ``fc`` is dropped).
        num_classes: output classes (19).
        aux: add the auxiliary head on layer3.
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 19, aux: bool = True) -> None:
        super().__init__()
        backbone.fc = nn.Identity()  # dense prediction: no ImageNet classifier
        self.backbone = backbone
        c4 = backbone.layer4[-1].conv3.out_channels
        c3 = backbone.layer3[-1].conv3.out_channels
        self.classifier = FCNHead(c4, num_classes)
        self.aux_classifier = FCNHead(c3, num_classes) if aux else None
        self.cn_controller = getattr(backbone, "cn_controller", None)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x: (N, 3, H, W)`` normalized -> ``{"out": (N, K, H, W)[, "aux": ...]}``."""
        size = x.shape[-2:]
        feats = self.backbone.forward_features(x)
        out = {"out": F.interpolate(self.classifier(feats["layer4"]), size=size,
                                    mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None and self.training:
            out["aux"] = F.interpolate(self.aux_classifier(feats["layer3"]), size=size,
                                       mode="bilinear", align_corners=False)
        return out

    def head_parameters(self) -> List[nn.Parameter]:
        """The heads' parameters (official: 10x the backbone's learning rate)."""
        heads = [self.classifier] + ([self.aux_classifier] if self.aux_classifier else [])
        return [p for h in heads for p in h.parameters()]

    def backbone_parameters(self) -> List[nn.Parameter]:
        """The backbone's parameters, SN units included."""
        return list(self.backbone.parameters())


def build_fcn(num_classes: int = 19, *, ibn: str = "none", width: int = 64, aux: bool = True,
              **unit_kw) -> FCN:
    """FCN-ResNet50 (output stride 8) with SN/CN units.

    Args:
        num_classes: output classes.
        ibn: ``none``, ``a`` or ``b`` (IBN-Net variants of the backbone).
        width: backbone stem width (64; smaller for tests and the offline demo).
        aux: the auxiliary head.
        **unit_kw: :func:`snc.models.build_model`'s unit arguments: the typed options
            (``sn``, ``cn``, ``placement``, ``seed``; what ``task=segment`` passes) or their
            keyword form (``sn=True``, ``cn_position=...``, ``crop=...``).
    """
    backbone = build_model("resnet50", 1000, ibn=ibn, width=width,
                           replace_stride_with_dilation=(False, True, True), **unit_kw)
    return FCN(backbone, num_classes, aux=aux)


# ----- initialisation ---------------------------------------------------------------------------

# IBN-Net's own ImageNet weights (Pan et al.; key names match snc's IBN: bn1.IN / bn1.BN, IN)
IBN_URLS = {
    "a": "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth",
    "b": "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_b-9ca61e85.pth",
}
UNIT_KEYS = ("pre_residual.", "post_residual.", "identity.", "post_addition.", "input_unit.")


def _unit_key(key: str) -> bool:
    return any(f".{u}" in f".{key}" for u in UNIT_KEYS)


def _imagenet_state(ibn: str) -> Dict[str, torch.Tensor]:
    """ImageNet weights from torch's hub cache, downloaded there if absent and online."""
    if ibn == "none":
        from torchvision.models import ResNet50_Weights

        url = ResNet50_Weights.IMAGENET1K_V1.url  # what fcn_resnet50's backbone used
    else:
        url = IBN_URLS[ibn]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    filename = url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(url, model_dir=str(folder), map_location="cpu",
                                                  progress=False, weights_only=True)
    except Exception as err:  # offline: URLError, socket errors, HTTP errors; a bad file
        if (folder / filename).is_file():
            raise ValueError(f"cannot load the ImageNet weights {folder / filename} ({err}): "
                             "delete the file to download it again") from None
        raise FileNotFoundError(
            f"ImageNet weights {filename} are not in {folder} and cannot be downloaded ({err}). "
            f"Copy {url} to {folder / filename} (TORCH_HOME moves the cache), or set "
            "backbone.init=<an snc run dir or a .pt file> or backbone.init=none") from None


def _file_state(init: str) -> Dict[str, torch.Tensor]:
    path = Path(init)
    if path.is_dir():
        for candidate in (path / "ckpt" / "last.pt", path / "ckpt" / "best.pt", path / "model.pt"):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise FileNotFoundError(f"backbone.init={init}: no ckpt/last.pt, ckpt/best.pt or "
                                    "model.pt in that run directory")
    if not path.is_file():
        raise FileNotFoundError(f"backbone.init={init}: no such file or run directory; use "
                                "imagenet, none, an snc run directory or a .pt file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    # an snc FCN checkpoint: take its backbone
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def init_backbone(model: FCN, init: Optional[str], ibn: str = "none") -> Dict[str, List[str]]:
    """Loads backbone weights: ``imagenet`` (torchvision / IBN-Net ImageNet weights), a path to
    an snc run directory (``ckpt/last.pt``) or a ``.pt`` state dict, or ``none``.

    Returns:
        ``{"source", "missing", "unexpected", "skipped"}``: keys the backbone lacks from the
        file (e.g. its SN units when the file has none), keys of the file the backbone does not
        have (e.g. ``fc.*``), and keys skipped for a shape mismatch.

    Raises:
        FileNotFoundError: naming the file and the cache folder (offline, no weights).
        ValueError: when a backbone weight other than an SN/CN unit's is missing from the file
            (the file is not a ResNet-50 of this ``ibn`` variant).
    """
    if init in (None, "", "none", "null"):
        return {"source": "none", "missing": [], "unexpected": [], "skipped": []}
    state = _imagenet_state(ibn) if init == "imagenet" else _file_state(init)
    backbone = model.backbone
    own = backbone.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    unexpected = list(result.unexpected_keys)
    wrong = [k for k in missing if not _unit_key(k)] + skipped
    if wrong:
        raise ValueError(f"backbone.init={init}: the file lacks {len(wrong)} backbone weights "
                         f"(e.g. {wrong[:5]}): it is not a ResNet-50 with ibn={ibn}")
    return {"source": str(init), "missing": missing, "unexpected": unexpected,
            "skipped": skipped}
