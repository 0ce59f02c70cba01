"""ImageNet backbones; importing this package registers them."""

from snc.models.imagenet import resnet  # noqa: F401
