"""SelfNorm/CrossNorm units put into an existing network, found by block family.

:func:`attach` walks a model, finds its blocks by type through the registered
:class:`Adapter` of each block family (one small adapter per family, as backbones are
registered), asks the same :class:`~snc.models.units.UnitFactory` the hand-written backbones ask
for the unit of each site, and installs the units without editing the network's source:

- a unit is registered as a new child of the block, named ``snc_<position>`` (``snc_image`` on
  the model, ``snc_after`` on a module matched by ``sites=``), so the state-dict keys of the
  original layers stay unchanged (units only add keys), the units print with their block, and
  ``model.modules()`` lists them in network order (``find_cross_norm_units``, ``count_units``);
- blocks whose residual branch is known get the family's forward with the unit sites, bound to
  the instance (the adapter's forward equals the library's, line for line, when no unit acts:
  tested); units after a whole block, after a module or on the image run from a forward hook,
  a module-level function that finds the unit by name on the module it is called with, so
  ``copy.deepcopy``, DataParallel replicas, DDP and ``torch.compile`` all see the right unit.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from snc.models.units import IMAGE, STAGE_OUTPUT, SNOptions, UnitFactory
from snc.ops import CrossNormOptions, Placement

PREFIX = "snc_"
LAYOUTS = ("nchw", "nlc", "nhwc")


def unit_of(block: nn.Module, position: str) -> Optional[nn.Module]:
    """The unit installed at ``position`` of ``block``, or None."""
    return block._modules.get(PREFIX + position)


def apply_site(block: nn.Module, position: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` through the unit at ``position`` of ``block`` (``x`` itself when there is none)."""
    unit = block._modules.get(PREFIX + position)
    return x if unit is None else unit(x)


def to_channels_first(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``(N, L, C)`` -> ``(N, C, L)``; ``(N, H, W, C)`` -> ``(N, C, H, W)``; NCHW unchanged."""
    if layout == "nlc":
        return x.transpose(1, 2)
    if layout == "nhwc":
        return x.permute(0, 3, 1, 2)
    return x


def from_channels_first(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The inverse of :func:`to_channels_first`."""
    if layout == "nlc":
        return x.transpose(1, 2)
    if layout == "nhwc":
        return x.permute(0, 2, 3, 1)
    return x


def _after_hook(attr: str, layout: str, module: nn.Module, args: Any, output: torch.Tensor
                ) -> torch.Tensor:
    """Forward hook: the module's output through its unit ``attr`` (statistics per channel over
    the spatial positions or tokens)."""
    unit = module._modules[attr]
    return from_channels_first(unit(to_channels_first(output, layout)), layout)


def _image_hook(module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """Forward pre-hook of the model: the input image through ``snc_image``."""
    return (module._modules[PREFIX + IMAGE](args[0]),) + tuple(args[1:])


def after_hook(attr: str, layout: str = "nchw") -> Callable:
    """The hook applying unit ``attr`` of a module to its output (picklable, deepcopy-safe)."""
    return functools.partial(_after_hook, attr, layout)


@dataclass(frozen=True)
class Adapter:
    """What snc knows of one block family.

    Attributes:
        family: the family's name (``torchvision_resnet``...).
        types: qualified class names of the blocks (``torchvision.models.resnet.Bottleneck``);
            matched against the block's class and its bases, so timm need not be imported.
        positions: the positions a block of the family offers (``image`` is always offered).
        channels: ``channels(block, position)`` -> the channel count of that site, or None
            when this block has no such site (e.g. ``identity`` in a block without shortcut).
        forward: the family's forward with unit sites (``forward(block, x)``), bound to each
            block that gets a unit; None: the family's only position is ``post_addition``,
            the block's own output, applied by a forward hook.
        layout: the layout of the block's output: ``nchw``, ``nlc`` (tokens) or ``nhwc``.
        default_position: the position of ``position=default``.
        find: optional ``find(model)`` -> ``[(name, module, stage)]`` for families whose sites
            are not blocks (VGG's layers); default: every outermost module of ``types``.
    """

    family: str
    types: Tuple[str, ...]
    positions: Tuple[str, ...]
    channels: Callable[[nn.Module, str], Optional[int]]
    forward: Optional[Callable[..., torch.Tensor]] = None
    layout: str = "nchw"
    default_position: str = "post_addition"
    find: Optional[Callable[[nn.Module], List[Tuple[str, nn.Module, int]]]] = None

    def matches(self, module: nn.Module) -> bool:
        return any(f"{c.__module__}.{c.__qualname__}" in self.types
                   for c in type(module).__mro__)


_ADAPTERS: Dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> Adapter:
    """Adds ``adapter`` to the registry (its family name must be new)."""
    if adapter.family in _ADAPTERS:
        raise ValueError(f"block family {adapter.family!r} is registered twice")
    if adapter.layout not in LAYOUTS:
        raise ValueError(f"layout {adapter.layout!r}; choose one of {', '.join(LAYOUTS)}")
    _ADAPTERS[adapter.family] = adapter
    return adapter


def list_adapters() -> List[str]:
    """Names of the registered block families, sorted."""
    return sorted(_ADAPTERS)


def get_adapter(family: str) -> Adapter:
    return _ADAPTERS[family]


@dataclass(frozen=True)
class Block:
    """One block (or layer) of a model that can carry units."""

    name: str
    module: nn.Module
    stage: int
    adapter: Adapter


def _strided(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def number_stages(found: List[Tuple[str, nn.Module]]) -> List[int]:
    """Stage numbers (1-based) of blocks listed in network order: one stage per container
    holding blocks (torchvision ``layer1``..``layer4``, ``features.1``..; timm ``stages.k``),
    or, where every block sits in one container (MobileNet V2/V3, ViT), one stage per run of
    blocks at one resolution: a block with a strided convolution starts the next stage."""
    parents = [name.rpartition(".")[0] for name, _ in found]
    if len(set(parents)) > 1:
        order: Dict[str, int] = {}
        for p in parents:
            order.setdefault(p, len(order) + 1)
        return [order[p] for p in parents]
    stages, stage = [], 1
    for i, (_, module) in enumerate(found):
        if i > 0 and _strided(module):
            stage += 1
        stages.append(stage)
    return stages


def find_blocks(model: nn.Module) -> List[Block]:
    """The blocks of ``model`` that a registered adapter knows, in network order (outermost
    matches only), with their stage numbers. Families with their own ``find`` number their
    stages themselves."""
    blocks: List[Block] = []
    for adapter in _ADAPTERS.values():
        if adapter.find is not None:
            blocks += [Block(n, m, s, adapter) for n, m, s in adapter.find(model)]
    found: List[Tuple[str, nn.Module, Adapter]] = []
    inside: Optional[str] = None
    for name, module in model.named_modules():
        if inside is not None and name.startswith(inside):
            continue
        for adapter in _ADAPTERS.values():
            if adapter.find is None and adapter.matches(module):
                found.append((name, module, adapter))
                inside = name + "."
                break
    stages = number_stages([(n, m) for n, m, _ in found])
    blocks += [Block(n, m, s, a) for (n, m, a), s in zip(found, stages, strict=True)]
    rank = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(blocks, key=lambda b: rank[b.name])


def supported_positions(model: nn.Module) -> Tuple[str, ...]:
    """The positions every block family found in ``model`` offers, then ``image``.

    Raises:
        ValueError: when no registered family is found (the message lists the module types
            found and the ``sites=`` escape hatch).
    """
    blocks = find_blocks(model)
    if not blocks:
        raise ValueError(_no_block_message(model))
    families = list(dict.fromkeys(b.adapter for b in blocks))
    common = [p for p in families[0].positions if all(p in a.positions for a in families)]
    # a position no block of this model has (VGG without norms: after_norm) is not offered
    common = [p for p in common if any(b.adapter.channels(b.module, p) is not None
                                       for b in blocks)]
    # after a stage's last block: its output channels are those of post_addition
    stage = (STAGE_OUTPUT,) if "post_addition" in common else ()
    return tuple(common) + stage + (IMAGE,)


def _no_block_message(model: nn.Module) -> str:
    kinds = sorted({type(m).__name__ for m in model.modules()})
    return (f"{type(model).__name__} has no block of a known family "
            f"({', '.join(list_adapters())}); module types found: {', '.join(kinds)}. Put units "
            "after modules by name with sites='<glob over module names>', e.g. "
            "attach(model, sn=True, sites='layer*.relu') (channels-first outputs)")


def _glob_sites(model: nn.Module, patterns: Sequence[str]) -> List[Tuple[str, nn.Module]]:
    matched = []
    for name, module in model.named_modules():
        if name and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
                raise ValueError(
                    f"sites= matched {name}, a {type(module).__name__} (its forward, if any, "
                    "iterates its children); match a module inside it instead")
            matched.append((name, module))
    if not matched:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"sites={list(patterns)} matches no module; module names look like "
                         f"{', '.join(names)}, ...")
    # outermost matches only: a unit after a block, not also after its layers
    outer, inside = [], None
    for name, module in matched:
        if inside is not None and name.startswith(inside):
            continue
        outer.append((name, module))
        inside = name + "."
    return outer


def _channels_of(model: nn.Module, target: str) -> int:
    channels = None
    passed = False
    for name, module in model.named_modules():
        within = name == target or name.startswith(target + ".")
        if passed and not within:
            break
        passed = passed or within
        for attr in ("out_channels", "num_features", "out_features"):
            value = getattr(module, attr, None)
            if isinstance(value, int):
                channels = value
                break
        else:
            shape = getattr(module, "normalized_shape", None)
            if shape:
                channels = int(shape[-1])
    if channels is None:
        raise ValueError(f"cannot tell the channels of {target}: no conv, norm or linear layer "
                         "at or before it")
    return channels


def _add_unit(block: nn.Module, position: str, unit: nn.Module) -> None:
    attr = PREFIX + position
    if attr in block._modules:
        raise ValueError(f"{type(block).__name__} already has a unit at {position}: "
                         "attach() once per model")
    block.add_module(attr, unit)


def _parse_blocks(blocks: Any, stages: Dict[int, List[str]]) -> Optional[frozenset]:
    if blocks is None or blocks == "all":
        return None
    chosen = [blocks] if isinstance(blocks, int) else list(blocks)
    n = max(stages) if stages else 0
    bad = [b for b in chosen if b not in stages]
    if bad or not chosen:
        layout = "; ".join(f"{s}: {v[0]}..{v[-1]} ({len(v)} blocks)" if len(v) > 1
                           else f"{s}: {v[0]}" for s, v in sorted(stages.items()))
        raise ValueError(f"blocks={list(chosen)} is outside the model's stages: use 'all' or "
                         f"stage numbers from 1 to {n} ({layout})")
    return frozenset(chosen)


@dataclass
class AttachReport:
    """What :func:`attach` found and put (``model.snc_attach``)."""

    families: Tuple[str, ...] = ()
    positions: Tuple[str, ...] = ()
    num_stages: int = 0
    units: Dict[str, str] = field(default_factory=dict)  # site name -> position


def attach(
    model: nn.Module,
    *,
    sn: Union[bool, SNOptions, None] = None,
    cn: Union[bool, CrossNormOptions, None] = None,
    placement: Optional[Placement] = None,
    sites: Union[str, Sequence[str], None] = None,
    seed: int = 0,
    se: bool = False,
    **kw: Any,
) -> nn.Module:
    """Puts SelfNorm/CrossNorm/SE units into ``model`` at a named position of its blocks.

    The typed and the keyword call are those of :func:`~snc.models.build_model`::

        model = attach(torchvision.models.resnet50(), sn=True, cn=True,
                       position="post_addition", blocks=[1, 3], active_num=2, prob=0.25)

    Args:
        model: any ``nn.Module`` with blocks of a registered family (see
            :func:`list_adapters`), or any module at all with ``sites=``.
        sn: SelfNorm / SE options (or True), or None.
        cn: CrossNorm options (or True), or None.
        placement: the position(s) and stages (default: the family's default position
            ``post_addition``, every stage). Stages are the model's own (``layer1``.. = 1..).
        sites: glob(s) over module names (``"layer*.conv2"``); every unit goes after each
            matching module (outermost matches; channels-first outputs) instead of at a
            position.
        seed: seed of the CN controller's generator.
        se: keyword convenience for ``sn=SqueezeExcitationOptions()``.
        **kw: the option fields of the keyword call (``position``, ``blocks``, ``crop``...).

    Returns:
        ``model`` itself with the units and ``model.cn_controller`` (a CrossNormController,
        possibly over zero units), as :func:`~snc.models.build_model` returns; the original
        state-dict keys are unchanged.

    Raises:
        ValueError: no known block (the message lists the module types and shows ``sites=``),
            a position the family does not offer (the message lists those it does), blocks
            outside the model's stages, ``active_num`` above the number of CN units, an
            unknown keyword.
    """
    from snc.models.registry import attach_controller, unit_options_from_keywords

    sn_opts, cn_opts, where = unit_options_from_keywords(sn, cn, se, placement, kw)
    if kw:
        raise TypeError(f"attach() got unknown options {', '.join(sorted(kw))}")
    if sites is not None:
        report = _attach_sites(model, sn_opts, cn_opts, where, sites)
    else:
        report = _attach_blocks(model, sn_opts, cn_opts, where)
    object.__setattr__(model, "snc_attach", report)  # plain attribute: no state, no child
    return attach_controller(model, cn_opts, seed, f"{type(model).__name__} ({report.families})"
                             f" at {where.cn_position or 'default'!r} with "
                             f"blocks={where.blocks!r}")


def check_input_size(model: nn.Module, size: int) -> None:
    """Runs ``model`` on a ``(2, 3, size, size)`` meta tensor (a model built on the meta
    device) with every unit passed by, and checks that each unit sees at least 2 spatial
    positions (its statistics need them).

    Raises:
        ValueError: naming the first unit whose map is too small and the fixes.
    """
    from snc.ops import CNSN

    seen: List[Tuple[str, Tuple[int, ...]]] = []
    units = [(n, m) for n, m in model.named_modules() if isinstance(m, CNSN)]

    def recorder(name):
        def record(x):
            seen.append((name, tuple(x.shape)))
            return x
        return record

    for name, unit in units:
        unit.forward = recorder(name)
    try:
        with torch.no_grad():
            model.eval()(torch.empty(2, 3, size, size, device="meta"))
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel: no check
        return
    finally:
        for _, unit in units:
            del unit.forward
        model.train()
    for name, shape in seen:
        layout = next((b.adapter.layout for b in find_blocks(model)
                       if name.startswith(b.name + ".")), "nchw")
        spatial = shape[1:-1] if layout in ("nlc", "nhwc") else shape[2:]
        if math.prod(spatial) < 2:
            raise ValueError(f"the unit {name} sees a {'x'.join(map(str, spatial))} map on "
                             f"{size}-px inputs; its statistics need at least 2 positions: "
                             "backbone.cifar_stem=true (32-px inputs), larger images, or "
                             "position.blocks without the last stages")


def _attach_blocks(model: nn.Module, sn_opts, cn_opts, where: Placement) -> AttachReport:
    blocks = find_blocks(model)
    if not blocks:
        raise ValueError(_no_block_message(model))
    positions = supported_positions(model)
    families = tuple(dict.fromkeys(b.adapter.family for b in blocks))
    default = blocks[0].adapter.default_position
    for what, value in (("position", where.name), ("sn_position", where.sn),
                        ("cn_position", where.cn)):
        if value is not None and value not in positions:
            raise ValueError(f"unknown {what} {value!r} for {type(model).__name__} (block "
                             f"family {', '.join(families)}); valid positions: "
                             f"{', '.join(positions)}")
    stages: Dict[int, List[str]] = {}
    for b in blocks:
        stages.setdefault(b.stage, []).append(b.name)
    name = where.name or default
    units = UnitFactory(
        sn=sn_opts, cn=cn_opts,
        sn_position=(where.sn or name) if sn_opts is not None else None,
        cn_position=(where.cn or name) if cn_opts is not None else None,
        blocks=_parse_blocks(where.blocks, stages))
    report = AttachReport(families, positions, max(stages))
    image = units(IMAGE, 3, 0)
    if image is not None:
        if PREFIX + IMAGE in model._modules:
            raise ValueError("the model already has an image unit: attach() once per model")
        # first child: the image unit prints, and counts in network order, before the layers
        model._modules = {PREFIX + IMAGE: image, **model._modules}
        model.register_forward_pre_hook(_image_hook)
        report.units[""] = IMAGE
    for b in blocks:
        placed = False
        for position in b.adapter.positions:
            channels = b.adapter.channels(b.module, position)
            unit = units(position, channels, b.stage) if channels is not None else None
            if unit is None:
                continue
            _add_unit(b.module, position, unit)
            report.units[f"{b.name}.{PREFIX}{position}"] = position
            placed = True
        if placed:
            if b.adapter.forward is not None:
                b.module.forward = types.MethodType(b.adapter.forward, b.module)
            else:
                b.module.register_forward_hook(after_hook(PREFIX + "post_addition",
                                                          b.adapter.layout))
    _attach_stage_outputs(blocks, units, report)
    return report


def _attach_stage_outputs(blocks: List[Block], units: UnitFactory, report: AttachReport
                          ) -> None:
    """``stage_output``: a unit on the output of each stage's last block (torchvision's
    ``layer1``..``layer4``), run by a forward hook: where Dassl's ResNet applies MixStyle."""
    last: Dict[int, Block] = {}
    for b in blocks:
        last[b.stage] = b
    for b in last.values():
        if units(STAGE_OUTPUT, 8, b.stage) is None:
            continue
        if "post_addition" not in b.adapter.positions:
            raise ValueError(f"position stage_output takes a block's output channels, which "
                             f"{b.adapter.family} blocks do not state; put the units after "
                             "modules by name with sites='<glob>' instead")
        unit = units(STAGE_OUTPUT, b.adapter.channels(b.module, "post_addition"), b.stage)
        _add_unit(b.module, STAGE_OUTPUT, unit)
        b.module.register_forward_hook(after_hook(PREFIX + STAGE_OUTPUT, b.adapter.layout))
        report.units[f"{b.name}.{PREFIX}{STAGE_OUTPUT}"] = STAGE_OUTPUT


def _attach_sites(model: nn.Module, sn_opts, cn_opts, where: Placement,
                  sites: Union[str, Sequence[str]]) -> AttachReport:
    patterns = [sites] if isinstance(sites, str) else list(sites)
    if where.name is not None or where.sn is not None or where.cn is not None:
        raise ValueError("sites= puts every unit after the matched modules; drop position=")
    units = UnitFactory(sn=sn_opts, cn=cn_opts,
                        sn_position="after" if sn_opts is not None else None,
                        cn_position="after" if cn_opts is not None else None)
    report = AttachReport(("sites",), ("after",), 1)
    for name, module in _glob_sites(model, patterns):
        unit = units("after", _channels_of(model, name), 1)
        if unit is None:
            continue
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            # a plain Sequential runs its children in order: the unit, appended, runs last
            _add_unit(module, "after", unit)
        else:
            _add_unit(module, "after", unit)
            module.register_forward_hook(after_hook(PREFIX + "after"))
        report.units[f"{name}.{PREFIX}after"] = "after"
    return report
