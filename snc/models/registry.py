"""Backbone registry and :func:`build_model`, the one way to make a network with SN/CN units.

Each backbone registers a small builder (``@register_backbone("wrn40_2", WideResNet)``) that
fixes its depth/width; the class declares the positions its cells offer and the paper's default
one. :func:`build_model` validates every option against that declaration, builds the network
and attaches a :class:`~snc.ops.CrossNormController` as ``model.cn_controller``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

from torch import nn

from snc.models.units import IMAGE, UnitFactory
from snc.ops import CROPS, MODES, ORDERS, CrossNormController, find_cross_norm_units

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
    if isinstance(blocks, str):
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


def build_model(
    name: str,
    num_classes: int = 10,
    *,
    sn: bool = False,
    cn: bool = False,
    se: bool = False,
    position: Optional[str] = None,
    sn_position: Optional[str] = None,
    cn_position: Optional[str] = None,
    blocks: Blocks = "all",
    gates: int = 1,
    order: str = "cn_sn",
    mode: str = "two_instance",
    crop: str = "neither",
    beta: float = 1.0,
    threshold: float = 0.1,
    self_pairing: bool = True,
    channel_shuffle: bool = False,
    active_num: int = 1,
    prob: float = 0.5,
    se_reduction: int = 16,
    seed: int = 0,
    **overrides,
) -> nn.Module:
    """Builds backbone ``name`` with SelfNorm/CrossNorm/SE units where asked.

    Args:
        name: a registered backbone (see :func:`list_backbones`).
        num_classes: classifier outputs.
        sn: place SelfNorm units.
        cn: place CrossNorm units (and let the controller switch them on in training).
        se: place squeeze-excitation units instead of SelfNorm (paper Table 8).
        position: where the units go (default: the backbone's paper default).
        sn_position, cn_position: per-op positions overriding ``position`` (e.g. ImageNet's
            CN on the image with SN inside the network).
        blocks: ``"all"`` or the stages (1-based) whose cells get units (paper Table 6).
        gates: SelfNorm gates, 1 (official) or 2 (paper Eq. 2).
        order: ``cn_sn`` (official) or ``sn_cn`` where both sit at one site (Table 7).
        mode, crop, beta, threshold, self_pairing, channel_shuffle: CrossNorm options.
        active_num: CN units switched on per CN forward.
        prob: probability that a training step uses CN.
        se_reduction: SE bottleneck ratio.
        seed: seed of the CN controller's generator.
        **overrides: architecture overrides for the builder (e.g. ``depth=10`` for tests).

    Returns:
        The network, with ``model.cn_controller`` (a CrossNormController, possibly over zero
        units) and ``model.backbone_name``.

    Raises:
        ValueError: naming the fix for an unknown backbone, position, crop, mode or order,
            invalid blocks, SN together with SE, ``prob`` outside [0, 1], or ``active_num``
            larger than the number of CN units.
    """
    spec = get_backbone_spec(name)
    if sn and se:
        raise ValueError("choose SelfNorm (sn) or SE (se) as the attention unit, not both")
    default = position if position is not None else spec.default_position
    sn_at = (sn_position or default) if (sn or se) else None
    cn_at = (cn_position or default) if cn else None
    for what, value in (("position", position), ("sn_position", sn_position),
                        ("cn_position", cn_position)):
        if value is not None:
            _check_position(spec, value, what)
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
    if mode not in MODES:
        raise ValueError(f"unknown CrossNorm mode {mode!r}; choose one of {', '.join(MODES)}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"cn.prob must be in [0, 1], got {prob}")
    units = UnitFactory(
        sn_position=sn_at,
        cn_position=cn_at,
        blocks=_parse_blocks(blocks, spec),
        attention="se" if se else "sn",
        gates=gates,
        se_reduction=se_reduction,
        order=order,
        mode=mode,
        crop=crop,
        beta=beta,
        threshold=threshold,
        self_pairing=self_pairing,
        channel_shuffle=channel_shuffle,
    )
    model = spec.builder(num_classes=num_classes, units=units, **overrides)
    cn_units = find_cross_norm_units(model)
    if cn and not cn_units:
        raise ValueError(
            f"cn=True placed no CrossNorm unit in {name} at {cn_at!r} with blocks={blocks!r}"
        )
    model.cn_controller = CrossNormController(
        cn_units, active_num=active_num if cn_units else 1, prob=prob, seed=seed
    )
    model.backbone_name = name
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
