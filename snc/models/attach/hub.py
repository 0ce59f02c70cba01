"""torchvision and timm classifiers by name, ready for :func:`~snc.models.attach.attach`.

:func:`build_hub_model` makes ``torchvision.models.<arch>`` (or ``timm.create_model(arch)``),
loads the requested pretrained weights from the local cache (strict: before any unit exists),
replaces the classifier for ``num_classes`` and, with ``cifar_stem``, puts a 3x3 stride-1 stem
without max-pool for 32-px inputs. Missing weights fail before anything is built, naming the
file and the cache folder to put it in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

SOURCES = ("torchvision", "timm")
TIMM_INSTALL = "pip install -e .[timm]"


def import_timm():
    """timm, or ValueError with the install command."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"backbone=timm needs timm, an optional extra: {TIMM_INSTALL} "
                         "(or pip install timm)") from None
    return timm


def torchvision_weights(arch: str, weights: Optional[str]):
    """The weights enum member ``weights`` of torchvision model ``arch`` (None: no weights)."""
    import torchvision

    if arch not in torchvision.models.list_models(torchvision.models):
        raise ValueError(f"unknown torchvision classifier {arch!r}; choose one of "
                         f"{', '.join(torchvision.models.list_models(torchvision.models))}")
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[str(weights)] if str(weights) != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ValueError(f"unknown weights {weights!r} for torchvision {arch}; choose one of "
                         f"DEFAULT, {', '.join(enum.__members__)}") from None


def hub_cache_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(url: str) -> Path:
    return hub_cache_dir() / os.path.basename(url)


def ensure_weights_file(url: str, what: str) -> Path:
    """The cached file of ``url``, downloaded once if it is not there.

    Raises:
        ValueError: it is not cached and cannot be downloaded (offline): names the file and the
            folder to place it in.
    """
    path = weights_file(url)
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as err:  # offline, proxy, disk: one clear message
        raise ValueError(
            f"{what} not found in the cache and could not be downloaded ({type(err).__name__}: "
            f"{err}): download {url} and place {path.name} in {path.parent} (torch hub cache: "
            "set TORCH_HOME to move it), or set backbone.weights=null") from None
    return path


def check_weights(source: str, arch: str, weights: Optional[str]) -> Optional[Path]:
    """Validates ``weights`` of ``arch`` and makes sure the file is local (downloading it once
    where a network is there); returns its path (None for no weights or timm's HF files)."""
    if source == "torchvision":
        member = torchvision_weights(arch, weights)
        if member is None:
            return None
        return ensure_weights_file(member.url, f"torchvision weights {arch}.{member.name}")
    timm = import_timm()
    if arch.split(".")[0] not in timm.list_models():
        raise ValueError(f"unknown timm model {arch!r} (python -c \"import timm; "
                         f"print(timm.list_models('{arch.split('.')[0][:4]}*'))\")")
    if not weights:
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        raise ValueError(f"timm model {arch} has no pretrained weights")
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        import huggingface_hub

        repo = hub_id.split("@")[0]
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(huggingface_hub.try_to_load_from_cache(repo, filename), str):
                return None
        try:
            huggingface_hub.hf_hub_download(repo, "model.safetensors")
        except Exception as err:
            cache = huggingface_hub.constants.HF_HUB_CACHE
            raise ValueError(
                f"timm weights of {arch} (Hugging Face {repo}/model.safetensors) are not in the "
                f"cache and could not be downloaded ({type(err).__name__}): download them into "
                f"{cache} (HF_HOME moves it, e.g. huggingface-cli download {repo}), or set "
                "backbone.weights=null") from None
        return None
    return ensure_weights_file(cfg.url, f"timm weights {arch}")


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Replaces the last ``nn.Linear`` (the classifier of torchvision's models) by a new one
    with ``num_classes`` outputs, unless it already has them."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    name, head = linears[-1]
    if head.out_features == num_classes:
        return
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def cifar_stem(model: nn.Module) -> None:
    """For 32-px inputs: the first conv becomes 3x3 stride 1 (same channels, re-initialised),
    and a max-pool before the first strided block is removed (torchvision ResNet/DenseNet)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"backbone.cifar_stem: {type(model).__name__} has no conv stem")
    name, conv = convs[0]
    if conv.kernel_size == conv.stride and max(conv.kernel_size) > 3:
        raise ValueError(f"backbone.cifar_stem: {type(model).__name__} starts with a "
                         f"{conv.kernel_size[0]}x{conv.kernel_size[1]} patch embedding, not a conv "
                         "stem; give it smaller images through backbone.kwargs (e.g. "
                         "image_size=32 for torchvision ViT) instead")
    stem = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1,
                     bias=conv.bias is not None)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
    _set(model, name, stem)
    order = [n for n, _ in model.named_modules()]
    for pool_name, pool in model.named_modules():
        if order.index(pool_name) > order.index(name) + 6:
            break  # only a pool right after the stem (conv, norm, act, pool)
        if isinstance(pool, nn.MaxPool2d):
            _set(model, pool_name, nn.Identity())
            break


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def build_hub_model(source: str, arch: str, num_classes: int, weights: Optional[str] = None,
                    pretrained: bool = True, stem: bool = False,
                    kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
    """A torchvision or timm classifier without units.

    Args:
        source: ``torchvision`` or ``timm``.
        arch: the model's name (``resnet18``; timm: ``resnet18``, ``convnext_atto``...).
        num_classes: classifier outputs (the head is replaced when the weights have others).
        weights: torchvision: a weights enum name (``IMAGENET1K_V1``, ``DEFAULT``); timm: any
            true value for ``pretrained=True``; None: random init.
        pretrained: False builds the structure only (no weights are read: e.g. on the meta
            device); the weights are still checked, and downloaded once where possible.
        stem: :func:`cifar_stem`.
        kwargs: constructor arguments (e.g. ``width_per_group``, ``image_size``).

    Raises:
        ValueError: unknown source, arch or weights, timm missing, weights not available.
    """
    kwargs = dict(kwargs or {})
    if source not in SOURCES:
        raise ValueError(f"unknown model source {source!r}; choose one of {', '.join(SOURCES)}")
    # also when only the structure is built (the task's validation): the weights are made
    # local, or fail, before a run writes anything
    path = check_weights(source, arch, weights)
    if source == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights=None, **kwargs)
        except NotImplementedError:  # RegNet's builder computes its widths with tensors,
            # which the meta device (the task's validation) cannot read: build on the CPU
            # without touching the global RNG, then move the structure
            device = torch.empty(0).device
            with torch.random.fork_rng(), torch.device("cpu"):
                model = torchvision.models.get_model(arch, weights=None, **kwargs)
            model = model.to(device)
        if path is not None and pretrained:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)  # before the units: every key matches
    else:
        timm = import_timm()
        model = timm.create_model(arch, pretrained=bool(weights) and pretrained,
                                  num_classes=num_classes, **kwargs)
    replace_head(model, num_classes)  # torchvision; timm has made its head already
    if stem:
        cifar_stem(model)
    return model


def hub_model_of(backbone, num_classes: int, pretrained: bool = True) -> nn.Module:
    """:func:`build_hub_model` of a ``backbone=torchvision|timm`` config group (``source``,
    ``arch``, ``weights``, ``cifar_stem``, ``kwargs``)."""
    from omegaconf import OmegaConf

    kwargs = backbone.get("kwargs")
    kwargs = OmegaConf.to_container(kwargs, resolve=True) if OmegaConf.is_config(kwargs) \
        else dict(kwargs or {})
    return build_hub_model(str(backbone.source), str(backbone.arch), num_classes,
                           backbone.get("weights"), pretrained=pretrained,
                           stem=bool(backbone.get("cifar_stem")), kwargs=kwargs)
