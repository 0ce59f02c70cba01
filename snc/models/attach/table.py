"""The README's family table: ``python -m snc.models.attach.table`` (markdown on stdout).

For one model of each block family: the positions it offers, the SN/CN unit counts at each
position (``sn=on cn=on``, every stage) and SelfNorm's parameter overhead (CrossNorm has no
parameters) at the default position. Models are built on the meta device (no memory, no weights).
"""

from __future__ import annotations

import torch

from snc.models import attach, count_parameters, count_units, supported_positions
from snc.models.attach.core import find_blocks
from snc.models.attach.hub import build_hub_model

MODELS = [("torchvision", "resnet50"), ("torchvision", "resnext50_32x4d"),
          ("torchvision", "wide_resnet50_2"), ("torchvision", "densenet121"),
          ("torchvision", "mobilenet_v2"), ("torchvision", "mobilenet_v3_large"),
          ("torchvision", "efficientnet_b0"), ("torchvision", "efficientnet_v2_s"),
          ("torchvision", "regnet_y_400mf"), ("torchvision", "convnext_tiny"),
          ("torchvision", "vgg16_bn"), ("torchvision", "vit_b_16"), ("torchvision", "swin_t"),
          ("timm", "resnet50"), ("timm", "convnext_tiny"), ("timm", "efficientnet_b0"),
          ("timm", "vit_small_patch16_224"), ("timm", "swin_tiny_patch4_window7_224")]


def rows():
    for source, arch in MODELS:
        if source == "timm":
            try:
                import timm  # noqa: F401
            except ImportError:
                continue
        with torch.device("meta"):
            def make(source=source, arch=arch):
                return build_hub_model(source, arch, 1000, pretrained=False)
            plain = make()
            positions = supported_positions(plain)
            family = find_blocks(plain)[0].adapter
            counts = []
            for p in positions:
                units = count_units(attach(make(), sn=True, cn=True, position=p))
                counts.append(f"{p} {units['sn']}/{units['cn']}")
            base = count_parameters(plain)
            sn = count_parameters(attach(make(), sn=True))
        yield (f"{source} {arch}", family.family, ", ".join(counts),
               f"{family.default_position}: +{sn - base:,} ({100 * (sn - base) / base:.2f}%)",
               f"{base:,}")


def main() -> None:
    print("| model | block family | SN/CN units per position | SN parameters (default "
          "position) | parameters |")
    print("|---|---|---|---|---|")
    for row in rows():
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
