"""Backbone registry and :func:`build_model`, the one way to make a network with SN/CN units.

Each backbone registers a small builder (``@register_backbone("wrn40_2", WideResNet)``) that
fixes its depth/width; the class declares the positions its cells offer and the paper's default
one. :func:`build_model` validates every option against that declaration, builds the network
and attaches a :class:`~snc.ops.CrossNormController` as ``model.cn_controller``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

from torch import nn

from snc.models.units import IMAGE, SNOptions, UnitFactory
from snc.ops import (
    CrossNormController,
    CrossNormOptions,
    Placement,
    SelfNormOptions,
    SqueezeExcitationOptions,
    find_switched_units,
)

Blocks = Union[str, int, Sequence[int], None]


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows of one backbone."""

    name: str
    builder: Callable[..., nn.Module]
    family: Type[nn.Module]

    @property
    def positions(self) -> Tuple[str, ...]:
        """Every position a unit can take, ``image`` included."""
        return tuple(self.family.positions) + (IMAGE,)

    @property
    def default_position(self) -> str:
        return self.family.default_position

    @property
    def num_stages(self) -> int:
        return self.family.num_stages


_REGISTRY: Dict[str, BackboneSpec] = {}


def register_backbone(name: str, family: Type[nn.Module]) -> Callable:
    """Decorator registering ``builder(num_classes, units, **overrides)`` under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = BackboneSpec(name, builder, family)
        return builder

    return wrap


def list_backbones() -> List[str]:
    """Names of every registered backbone, sorted."""
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``; unknown names fail with the list of known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}"
        ) from None


def _parse_blocks(blocks: Blocks, spec: BackboneSpec) -> Optional[frozenset]:
    if blocks is None or blocks == "all":
        return None
    if isinstance(blocks, str):  # pragma: no cover - Placement refuses it first
        raise ValueError(f"blocks must be 'all' or a list of stage numbers, got {blocks!r}")
    chosen = [blocks] if isinstance(blocks, int) else list(blocks)
    valid = range(1, spec.num_stages + 1)
    bad = [b for b in chosen if b not in valid]
    if bad or not chosen:
        raise ValueError(
            f"blocks={list(chosen)} is not valid for {spec.name}: use 'all' or stage numbers "
            f"from 1 to {spec.num_stages}"
        )
    return frozenset(chosen)


def _check_position(spec: BackboneSpec, position: str, what: str) -> None:
    if position not in spec.positions:
        raise ValueError(
            f"unknown {what} {position!r} for backbone {spec.name}; valid positions: "
            f"{', '.join(spec.positions)}"
        )


# keyword spellings of the convenience call -> (options class, field)
_PLACEMENT_KEYS = {"position": "name", "sn_position": "sn", "cn_position": "cn",
                   "blocks": "blocks"}
_CN_KEYS = {f.name for f in dataclasses.fields(CrossNormOptions)}
_SN_KEYS = {f.name for f in dataclasses.fields(SelfNormOptions)}
_SE_KEYS = {"se_reduction": "reduction"}


def _pop(kw: Dict[str, Any], keys) -> Dict[str, Any]:
    return {k: kw.pop(k) for k in list(kw) if k in keys}


def unit_options_from_keywords(
    sn: Union[bool, SNOptions, None], cn: Union[bool, CrossNormOptions, Any, None], se: bool,
    placement: Optional[Placement], kw: Dict[str, Any],
) -> Tuple[Optional[SNOptions], Optional[CrossNormOptions], Placement]:
    """The typed options of a keyword call of :func:`build_model`; pops the keywords it uses
    from ``kw`` (what is left are architecture overrides)."""
    sn_kw, se_kw, cn_kw = _pop(kw, _SN_KEYS), _pop(kw, _SE_KEYS), _pop(kw, _CN_KEYS)
    where = {_PLACEMENT_KEYS[k]: v for k, v in _pop(kw, _PLACEMENT_KEYS).items()}
    if sn and se:
        raise ValueError("choose SelfNorm (sn) or SE (se) as the attention unit, not both")
    if se:
        sn = SqueezeExcitationOptions(**{_SE_KEYS[k]: v for k, v in se_kw.items()})
    elif sn is True:
        sn = SelfNormOptions(**sn_kw)
    elif isinstance(sn, SelfNormOptions) and sn_kw:
        sn = dataclasses.replace(sn, **sn_kw)
    if not cn and cn_kw:  # validated (a typo or bad value still fails), then unused
        CrossNormOptions(**cn_kw)
    if not sn and sn_kw:
        SelfNormOptions(**sn_kw)
    if cn is True:
        cn = CrossNormOptions(**cn_kw)
    elif isinstance(cn, CrossNormOptions) and cn_kw:
        cn = dataclasses.replace(cn, **cn_kw)
    elif cn and cn_kw:
        raise ValueError(f"{', '.join(sorted(cn_kw))} set CrossNorm options, but cn is "
                         f"{type(cn).__name__}: give them to CrossNormOptions, or drop them")
    if where and isinstance(where.get("blocks"), list):
        where["blocks"] = tuple(where["blocks"])
    placement = dataclasses.replace(placement or Placement(), **where)
    return (sn or None), (cn or None), placement


def build_model(
    name: str,
    num_classes: int = 10,
    *,
    sn: Union[bool, SNOptions, None] = None,
    cn: Union[bool, CrossNormOptions, Any, None] = None,
    placement: Optional[Placement] = None,
    seed: int = 0,
    se: bool = False,
    **kw: Any,
) -> nn.Module:
    """Builds backbone ``name`` with SelfNorm/CrossNorm/SE units where asked.

    The typed call passes the options of the config unchanged::

        build_model("wrn40_2", 10, sn=SelfNormOptions(), cn=CrossNormOptions(crop="both"),
                    placement=Placement("post_addition"))

    and the keyword call is a convenience over it (field names of the options; ``position``,
    ``sn_position``, ``cn_position`` and ``blocks`` for the placement; ``se=True`` with
    ``se_reduction`` for SE)::

        build_model("wrn40_2", 10, sn=True, cn=True, position="post_addition", crop="both")

    Args:
        name: a registered backbone (see :func:`list_backbones`).
        num_classes: classifier outputs.
        sn: :class:`SelfNormOptions` / :class:`SqueezeExcitationOptions` (or True), or None.
        cn: :class:`CrossNormOptions` (or True), or None. Its ``active_num`` and ``prob`` go to
            the controller, ``order`` to the sites. A style method's options
            (``MixStyleOptions``, ``DSUOptions``, ``EFDMixOptions``, ``PermutedAdaINOptions``)
            put that method's units in CrossNorm's slot instead.
        placement: where the units go (:class:`Placement`; default: the backbone's paper
            default position, every stage).
        seed: seed of the CN controller's generator.
        se: keyword convenience for ``sn=SqueezeExcitationOptions()``.
        **kw: option fields of the keyword call, then architecture overrides for the builder
            (e.g. ``depth=10`` for tests).

    Returns:
        The network, with ``model.cn_controller`` (a CrossNormController, possibly over zero
        units).

    Raises:
        ValueError: naming the fix for an unknown backbone, position, crop, mode or order,
            invalid blocks, SN together with SE, ``prob`` outside [0, 1], or ``active_num``
            larger than the number of CN units.
    """
    spec = get_backbone_spec(name)
    sn_opts, cn_opts, where = unit_options_from_keywords(sn, cn, se, placement, kw)
    for what, value in (("position", where.name), ("sn_position", where.sn),
                        ("cn_position", where.cn)):
        if value is not None:
            _check_position(spec, value, what)
    default = where.name if where.name is not None else spec.default_position
    units = UnitFactory(
        sn=sn_opts,
        cn=cn_opts,
        sn_position=(where.sn or default) if sn_opts is not None else None,
        cn_position=(where.cn or default) if cn_opts is not None else None,
        blocks=_parse_blocks(where.blocks, spec),
    )
    model = spec.builder(num_classes=num_classes, units=units, **kw)
    return attach_controller(model, cn_opts, seed,
                             f"{name} at {units.cn_position!r} with blocks={where.blocks!r}")


def attach_controller(model: nn.Module, cn_opts: Optional[Any], seed: int,
                      where: str) -> nn.Module:
    """Sets ``model.cn_controller`` over the switched units of ``model`` (network order): the
    one controller constructor, for :func:`build_model`, :func:`snc.models.attach`, TextCNN and
    FixMatch's row-restricted units. CN options give CN's ``active_num`` of ``prob``; a style
    method's options switch every unit on in every training forward (each applies its own
    coin); without options the controller holds no unit and never draws.

    Raises:
        ValueError: ``cn_opts`` is set but ``model`` has no CrossNorm unit (``where`` says
            where they were asked for), or ``active_num`` exceeds the number of units.
    """
    units = find_switched_units(model)
    if cn_opts is not None and not units:
        what = ("cn=on placed no CrossNorm unit" if isinstance(cn_opts, CrossNormOptions)
                else f"{type(cn_opts).__name__} placed no style unit")
        raise ValueError(f"{what} in {where}")
    if cn_opts is not None and not isinstance(cn_opts, CrossNormOptions):
        # a style method: every unit is switched on in every training forward and applies
        # its own paper's coin (options.p), as each paper inserts it
        active_num, prob = len(units), 1.0
    else:
        active_num = cn_opts.active_num if units else 1
        prob = cn_opts.prob if cn_opts is not None else 0.0
    model.cn_controller = CrossNormController(
        units,
        active_num=active_num,
        prob=prob,
        seed=seed,
    )
    return model


def count_units(model: nn.Module) -> Dict[str, int]:
    """Numbers of SelfNorm, CrossNorm and SE units in ``model``."""
    from snc.ops import CrossNorm, SelfNorm, SqueezeExcitation

    counts = {"sn": 0, "cn": 0, "se": 0}
    kinds: Iterable = ((SelfNorm, "sn"), (CrossNorm, "cn"), (SqueezeExcitation, "se"))
    for m in model.modules():
        for cls, key in kinds:
            if isinstance(m, cls):
                counts[key] += 1
    return counts


def count_parameters(model: nn.Module) -> int:
    """Sum of ``numel`` over the parameters (BN running buffers excluded), as the reference."""
    return sum(p.numel() for p in model.parameters())
