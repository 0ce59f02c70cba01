"""Segmentation networks (paper Table 3): FCN on the dilated ResNet-50."""

from snc.models.segmentation.fcn import FCN, FCNHead, build_fcn, init_backbone

__all__ = ["FCN", "FCNHead", "build_fcn", "init_backbone"]
