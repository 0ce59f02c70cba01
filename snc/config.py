"""Config schemas and the one conversion from a composed config to typed unit options.

The ``sn``, ``cn``, ``position`` and ``crop`` groups are typed: each option's YAML starts from a
schema registered here (Hydra's structured-config schema pattern), so a misspelled key or a
value of the wrong type fails when the config is composed, and ``cn=off`` carries no CN field
(``cn=off cn.prob=0.9`` is refused instead of silently making a new run). The schemas are
generated from the frozen option dataclasses of :mod:`snc.ops.options`, so each option has one
spelling, and :func:`unit_options` turns the composed groups into those dataclasses, validated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Tuple, Type, Union

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from snc.errors import ConfigError
from snc.ops.options import (
    CrossNormOptions,
    Placement,
    SelfNormOptions,
    SqueezeExcitationOptions,
)

SNOptions = Union[SelfNormOptions, SqueezeExcitationOptions]
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _schema(name: str, options: Optional[Type], choice: str, skip: Tuple[str, ...] = ()):
    """A mutable dataclass with ``name`` (the option's CLI word) and the fields of ``options``
    (frozen dataclasses make read-only configs, so the schema is a mutable twin)."""
    fields = [("name", str, dataclasses.field(default=choice))]
    if options is not None:
        for f in dataclasses.fields(options):
            if f.name not in skip:
                fields.append((f.name, f.type, dataclasses.field(default=f.default)))
    return dataclasses.make_dataclass(name, fields)


# the class names appear in Hydra's "Key 'prob' not in '<name>'" message: they say the fix
SN_OFF = _schema("SelfNormIsOff_add_sn_on", None, "off")
SN_ON = _schema("SNOnSchema", SelfNormOptions, "on")
SN_SE = _schema("SqueezeExcitationOptions_sn_se", SqueezeExcitationOptions, "se")
CN_OFF = _schema("CrossNormIsOff_add_cn_on", None, "off")
# crop is its own group (``crop=both``); cn/on.yaml interpolates it into cn.crop
CN_ON = _schema("CNOnSchema", CrossNormOptions, "on")
POSITION = dataclasses.make_dataclass("PositionSchema", [
    (f.name, Any if f.name == "blocks" else f.type, dataclasses.field(default=f.default))
    for f in dataclasses.fields(Placement)])
CROP = dataclasses.make_dataclass("CropSchema", [("name", str, dataclasses.field(
    default="neither"))])

SCHEMAS = {("sn", "off"): SN_OFF, ("sn", "on"): SN_ON, ("sn", "se"): SN_SE,
           ("cn", "off"): CN_OFF, ("cn", "on"): CN_ON, ("position", "base"): POSITION,
           ("crop", "base"): CROP}


def register_schemas() -> None:
    """Stores the schemas as ``schema/<group>/<option>`` (idempotent)."""
    cs = ConfigStore.instance()
    for (group, option), node in SCHEMAS.items():
        cs.store(group=f"schema/{group}", name=option, node=node)


register_schemas()


def backbone_positions(backbone: DictConfig) -> Tuple[str, ...]:
    """Every position the backbone of a config offers, ``image`` last: the registry's
    declaration for the hand-written backbones, the block families found for
    ``backbone=torchvision|timm`` (the network is built on the meta device, without weights)."""
    import torch

    from snc.models import get_backbone_spec, supported_positions
    from snc.models.attach.hub import SOURCES, hub_model_of

    if backbone.get("source") in SOURCES:
        with torch.device("meta"):
            model = hub_model_of(backbone, 10, pretrained=False)
        return supported_positions(model)
    return get_backbone_spec(str(backbone.name)).positions


def _positions_resolver(*, _root_: DictConfig) -> str:
    """``${snc_positions:}`` -> ``"identity,pre_residual,..."`` for ``sweep=positions``."""
    try:
        return ",".join(backbone_positions(_root_.backbone))
    except ValueError as err:
        raise ConfigError(str(err)) from None


if not OmegaConf.has_resolver("snc_positions"):
    OmegaConf.register_new_resolver("snc_positions", _positions_resolver)

SN_CHOICES = {"on": SelfNormOptions, "se": SqueezeExcitationOptions}


def _fields(node: DictConfig, cls: Type) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    data = OmegaConf.to_container(node, resolve=True)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}


def sn_options(cfg: DictConfig) -> Optional[SNOptions]:
    """``sn=on`` -> SelfNormOptions, ``sn=se`` -> SqueezeExcitationOptions, ``sn=off`` -> None."""
    choice = str(cfg.sn.name)
    if choice == "off":
        return None
    if choice not in SN_CHOICES:
        raise ConfigError(f"sn={choice!r}; choose on, se or off")
    try:
        return SN_CHOICES[choice](**_fields(cfg.sn, SN_CHOICES[choice]))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def cn_options(cfg: DictConfig) -> Optional[CrossNormOptions]:
    """``cn=on`` -> CrossNormOptions (crop from the crop group), ``cn=off`` -> None."""
    choice = str(cfg.cn.name)
    if choice == "off":
        if cfg.crop.name != "neither":
            raise ConfigError(f"crop={cfg.crop.name} sets CrossNorm's crop, but cn=off: add "
                              "cn=on, or drop the crop override")
        return None
    if choice != "on":
        raise ConfigError(f"cn={choice!r}; choose on or off")
    try:
        return CrossNormOptions(**_fields(cfg.cn, CrossNormOptions))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def placement(cfg: DictConfig) -> Placement:
    """The ``position`` group as a :class:`Placement`."""
    try:
        return Placement(**_fields(cfg.position, Placement))
    except ValueError as err:
        raise ConfigError(str(err)) from None


class Units(NamedTuple):
    """The typed unit options of one run, parsed once (:func:`unit_options`) and handed to the
    model builders unchanged."""

    sn: Optional[SNOptions]
    cn: Optional[CrossNormOptions]
    placement: Placement

    @property
    def label(self) -> str:
        """The method label: :func:`unit_label` of these options."""
        return unit_label(self.sn, self.cn)


def unit_label(sn: Optional[SNOptions], cn: Optional[CrossNormOptions]) -> str:
    """``basic``, ``sn``, ``se``, ``cn``, ``sncn`` or ``secn``: the units a model holds, the one
    spelling of a method in run names, W&B ``job_type`` and report rows."""
    name = ""
    if sn is not None:
        name = "se" if isinstance(sn, SqueezeExcitationOptions) else "sn"
    if cn is not None:
        name += "cn"
    return name or "basic"


def unit_options(cfg: DictConfig) -> Units:
    """``(sn, cn, placement)`` of a composed config, validated (ConfigError naming the fix).
    A task parses them once, in :class:`snc.tasks.base.Task`, as ``task.units``."""
    return Units(sn_options(cfg), cn_options(cfg), placement(cfg))


def compose_config(overrides: Sequence[str] = (), config_dir: Optional[Path] = None
                   ) -> DictConfig:
    """The ``train`` config composed with ``overrides``, as ``train.py`` would see it (for
    scripts and tests; Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
