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
from snc.ops.style import STYLE_METHODS

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
# style=<method>: the methods of related work in CrossNorm's slot; a key of another method
# fails at compose time ("Key 'alpha' not in 'DSUOptions_style_dsu'")
SCHEMAS[("style", "none")] = _schema("NoStyleMethod_add_style_mixstyle_dsu_efdmix_padain",
                                     None, "none")
for _method, (_options, _unit) in STYLE_METHODS.items():
    SCHEMAS[("style", _method)] = _schema(f"{_options.__name__}_style_{_method}", _options,
                                          _method)


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


def _domains_resolver(*, _root_: DictConfig) -> str:
    """``${snc_domains:}`` -> ``"art_painting,cartoon,photo,sketch"`` for ``sweep=dg_domains``."""
    domains = _root_.dataset.get("domains")
    if not domains:
        raise ConfigError(f"sweep=dg_* sweeps the domains of a multi-domain dataset, and "
                          f"dataset={_root_.dataset.name} has none: name the dataset on the "
                          "command line (with experiment=glob(dg_<protocol>_pacs_*) too: "
                          "dataset=pacs)")
    return ",".join(str(d) for d in domains)


if not OmegaConf.has_resolver("snc_domains"):
    OmegaConf.register_new_resolver("snc_domains", _domains_resolver)

if not OmegaConf.has_resolver("snc_positions"):
    OmegaConf.register_new_resolver("snc_positions", _positions_resolver)

# DomainBed's hyper-parameters of ERM on a ResNet (domainbed/hparams_registry.py): the default,
# and the random draw of its random search. Each draw uses its own
# RandomState(seed_hash(seed_hash(hparams_seed, trial_seed), name)), as DomainBed's _hparam does.
DOMAINBED_HPARAMS = {
    "lr": (5e-5, lambda r: 10 ** r.uniform(-5, -3.5)),
    "weight_decay": (0.0, lambda r: 10 ** r.uniform(-6, -2)),
    "batch_size": (32, lambda r: int(2 ** r.uniform(3, 5.5))),
    "resnet_dropout": (0.0, lambda r: float(r.choice([0.0, 0.1, 0.5]))),
}


def domainbed_hparam(name: str, hparams_seed: int, trial_seed: int) -> Any:
    """DomainBed's value of hyper-parameter ``name``: the default for ``hparams_seed=0``, else
    its random draw (``random_hparams(algorithm, dataset, seed_hash(hparams_seed,
    trial_seed))``)."""
    import numpy as np

    from snc.data.dg import seed_hash

    if name not in DOMAINBED_HPARAMS:
        raise ConfigError(f"unknown DomainBed hyper-parameter {name!r}; choose one of "
                          f"{', '.join(DOMAINBED_HPARAMS)}")
    default, draw = DOMAINBED_HPARAMS[name]
    if int(hparams_seed) == 0:
        return default
    seed = seed_hash(int(hparams_seed), int(trial_seed))
    return draw(np.random.RandomState(seed_hash(seed, name)))


if not OmegaConf.has_resolver("snc_dg_hparam"):
    OmegaConf.register_new_resolver("snc_dg_hparam", domainbed_hparam)

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


def style_options(cfg: DictConfig) -> Optional[Any]:
    """``style=mixstyle|dsu|efdmix|padain`` -> that method's options, ``style=none`` (or a
    config from before the group existed) -> None."""
    node = cfg.get("style")
    choice = "none" if node is None else str(node.name)
    if choice == "none":
        return None
    if choice not in STYLE_METHODS:
        raise ConfigError(f"style={choice!r}; choose none or one of {', '.join(STYLE_METHODS)}")
    options_class = STYLE_METHODS[choice][0]
    try:
        return options_class(**_fields(node, options_class))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def style_name(style: Any) -> str:
    """The ``style=`` word of a style method's options (``mixstyle``, ``dsu``, ...)."""
    return next(name for name, (cls, _) in STYLE_METHODS.items() if isinstance(style, cls))


class Units(NamedTuple):
    """The typed unit options of one run, parsed once (:func:`unit_options`) and handed to the
    model builders unchanged. ``style``: a method of related work (``style=``), which takes
    CrossNorm's slot: its positions, blocks and controller (see :attr:`perturbation`)."""

    sn: Optional[SNOptions]
    cn: Optional[CrossNormOptions]
    placement: Placement
    style: Optional[Any] = None

    @property
    def perturbation(self) -> Optional[Any]:
        """What the CrossNorm slot of the model holds: the CN options or the style method's
        (at most one of them is set)."""
        return self.cn if self.cn is not None else self.style

    @property
    def label(self) -> str:
        """The method label: :func:`unit_label` of these options."""
        return unit_label(self.sn, self.perturbation)


def unit_label(sn: Optional[SNOptions], cn: Optional[Any]) -> str:
    """``basic``, ``sn``, ``se``, ``cn``, ``sncn`` or ``secn``; with a style method in the
    CrossNorm slot, its name (``mixstyle``, ``sn-mixstyle``): the units a model holds, the one
    spelling of a method in run names, W&B ``job_type`` and report rows."""
    name = ""
    if sn is not None:
        name = "se" if isinstance(sn, SqueezeExcitationOptions) else "sn"
    if isinstance(cn, CrossNormOptions):
        name += "cn"
    elif cn is not None:
        name += ("-" if name else "") + style_name(cn)
    return name or "basic"


def unit_options(cfg: DictConfig) -> Units:
    """``(sn, cn, placement, style)`` of a composed config, validated (ConfigError naming the
    fix). A task parses them once, in :class:`snc.tasks.base.Task`, as ``task.units``."""
    cn, style = cn_options(cfg), style_options(cfg)
    if cn is not None and style is not None:
        raise ConfigError(f"style={style_name(style)} takes CrossNorm's place in the network: "
                          "use cn=off with it (or style=none to train CrossNorm)")
    return Units(sn_options(cfg), cn, placement(cfg), style)


def compose_config(overrides: Sequence[str] = (), config_dir: Optional[Path] = None
                   ) -> DictConfig:
    """The ``train`` config composed with ``overrides``, as ``train.py`` would see it (for
    scripts and tests; Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
