"""CIFAR backbones (32x32 inputs); importing this package registers them."""

from snc.models.cifar import allconv, densenet, resnext, wideresnet, wideresnet_fm  # noqa: F401
