"""The network a figure reads: loaded from a run directory, with probes at every unit site.

A finished run directory holds ``config.yaml`` (the model, its units and the dataset
normalisation) and ``ckpt/last.pt`` (``weights_only=True``). :func:`load_run` rebuilds the
network with :func:`snc.tasks.classify.build_network`, loads the weights, freezes it in eval
mode and puts a :class:`Probe` (an identity module) on every site the backbone offers but left
empty, so a forward hook can read the representation at any site.

Locations (where a representation is read), spelled with the models' position names:

- ``image``: the network input, after the input-image unit when the model has one.
- ``<position>@<stage>.<cell>``: the output of the site ``<position>`` (e.g. ``post_addition``)
  of cell ``<cell>`` (``first``, ``last`` or a 0-based index) of stage ``<stage>`` (1-based),
  e.g. ``post_addition@2.last``. The output of a site that holds a unit is the unit's output.
- ``block<k>_start`` / ``block<k>_end``: the paper's "start / end of block k" (a block is a
  stage): the site ``position`` (default: the backbone's default one, ``post_addition`` for the
  WRNs) of the first / last cell of stage k.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from snc.errors import ConfigError
from snc.models import get_backbone_spec
from snc.models.units import IMAGE
from snc.ops import SelfNorm


class Probe(nn.Identity):
    """An empty site made visible: returns its input (no parameters, no buffers)."""


@dataclass(frozen=True)
class Site:
    """One unit site of a network: its module path, position name, stage and cell index."""

    name: str
    position: str
    stage: int
    cell: int


class _TagFactory:
    """A unit factory that records every site a backbone asks for (the module it returns is a
    tagged identity, so the structure is the real one)."""

    def __call__(self, site: str, channels: int, stage: int) -> nn.Module:
        probe = Probe()
        probe.tag = (site, stage)
        return probe


def _overrides(cfg: DictConfig) -> Dict[str, Any]:
    overrides = cfg.backbone.get("overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
    if cfg.backbone.get("supports_ibn", False):
        overrides["ibn"] = cfg.ibn.name
    return overrides


def backbone_sites(name: str, overrides: Optional[Dict[str, Any]] = None,
                   num_classes: int = 10) -> List[Site]:
    """Every site of backbone ``name`` (built on the meta device: no memory), in the order of
    the module tree (the forward order of the cells)."""
    spec = get_backbone_spec(name)
    with torch.device("meta"):
        tagged = spec.builder(num_classes=num_classes, units=_TagFactory(), **(overrides or {}))
    sites: List[Site] = []
    counts: Dict[Tuple[str, int], int] = {}
    for qual, m in tagged.named_modules():
        tag = getattr(m, "tag", None)
        if isinstance(m, Probe) and tag is not None:
            key = (tag[0], tag[1])
            sites.append(Site(qual, tag[0], tag[1], counts.get(key, 0)))
            counts[key] = counts.get(key, 0) + 1
    return sites


_EXPLICIT = re.compile(r"^(?P<pos>[a-z_]+)@(?P<stage>\d+)\.(?P<cell>first|last|\d+)$")
_BLOCK = re.compile(r"^block(?P<stage>\d+)_(?P<end>start|end)$")


def location_help(sites: Sequence[Site], num_stages: int) -> str:
    positions = sorted({s.position for s in sites if s.position != IMAGE})
    blocks = ", ".join(f"block{k}_start, block{k}_end" for k in range(1, num_stages + 1))
    return (f"image, {blocks}, or <position>@<stage>.<cell> with position one of "
            f"{', '.join(positions)} (e.g. {positions[0] if positions else 'post_addition'}"
            f"@1.last)")


def resolve_location(sites: Sequence[Site], location: str, *, backbone: str,
                     position: Optional[str] = None) -> Site:
    """The site a location name means (see the module docstring).

    Raises:
        ConfigError: a name the backbone does not have; the message lists the valid ones.
    """
    spec = get_backbone_spec(backbone)
    valid = location_help(sites, spec.num_stages)
    if location == IMAGE:
        for s in sites:
            if s.position == IMAGE:
                return s
        raise ConfigError(f"backbone {backbone} has no input-image site")  # pragma: no cover
    m = _BLOCK.match(location)
    if m:
        pos, stage = position or spec.default_position, int(m["stage"])
        cell = "first" if m["end"] == "start" else "last"
    else:
        m = _EXPLICIT.match(location)
        if not m:
            raise ConfigError(f"unknown location {location!r} for backbone {backbone}; valid: "
                              f"{valid}")
        pos, stage, cell = m["pos"], int(m["stage"]), m["cell"]
    present = sorted({s.position for s in sites if s.position != IMAGE})
    if pos not in present:
        raise ConfigError(f"position {pos!r} (location {location!r}) is not a site of backbone "
                          f"{backbone}; valid positions: {', '.join(present)}; valid locations: "
                          f"{valid}")
    cells = [s for s in sites if s.position == pos and s.stage == stage]
    if not cells:
        stages = sorted({s.stage for s in sites if s.position == pos})
        raise ConfigError(f"backbone {backbone} has no {pos} site in stage {stage} (location "
                          f"{location!r}); stages with one: {stages}")
    if cell == "first":
        return cells[0]
    if cell == "last":
        return cells[-1]
    index = int(cell)
    if index >= len(cells):
        raise ConfigError(f"stage {stage} of {backbone} has {len(cells)} {pos} cells; location "
                          f"{location!r} asks for cell {index} (use 0..{len(cells) - 1}, first "
                          "or last)")
    return cells[index]


@dataclass
class Network:
    """A frozen network with probes, its sites and the input normalisation.

    Attributes:
        model: the network in eval mode, gradients off for every parameter.
        backbone: its registry name.
        sites: every site (:class:`Site`); ``module(site)`` gives the module there.
        mean, std: the per-channel input normalisation of the run (``(3,)`` floats).
        cfg: the run's config.
        sn_position: where the model's SelfNorm units are (None: no SN).
    """

    model: nn.Module
    backbone: str
    sites: List[Site]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    cfg: Optional[DictConfig] = None
    sn_position: Optional[str] = None
    run_dir: Optional[Path] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def module(self, site: Site) -> nn.Module:
        return self.model.get_submodule(site.name)

    def resolve(self, location: str, position: Optional[str] = None) -> Site:
        return resolve_location(self.sites, location, backbone=self.backbone,
                                position=position)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` images in [0, 1] -> the network's input."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input -> images in [0, 1] (clipped, as the inversion code displays)."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0.0, 1.0)

    def has_selfnorm(self, site: Site) -> bool:
        return any(isinstance(m, SelfNorm) for m in self.module(site).modules())

    def selfnorm_sites(self) -> List[Site]:
        return [s for s in self.sites if self.has_selfnorm(s)]


def install_probes(model: nn.Module, sites: Sequence[Site]) -> None:
    """Puts a :class:`Probe` on every site of ``model`` that holds no unit."""
    for site in sites:
        parent_name, _, attr = site.name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if getattr(parent, attr, None) is None:
            setattr(parent, attr, Probe())


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, every parameter frozen (the inversion differentiates the image only)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _num_classes(cfg: DictConfig, state: Dict[str, torch.Tensor]) -> int:
    n = cfg.dataset.get("num_classes")
    if n:
        return int(n)
    # npz datasets may leave it null (1 + the largest label): read it off the classifier
    for key in ("fc.weight", "classifier.weight", "linear.weight", "head.weight"):
        if key in state:
            return int(state[key].shape[0])
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not weights:
        raise ConfigError("cannot tell the number of classes of this checkpoint; set "
                          "dataset.num_classes in the run's config.yaml")
    return int(weights[-1].shape[0])


def network_from_config(cfg: DictConfig, state: Optional[Dict[str, torch.Tensor]] = None,
                        device: Union[str, torch.device] = "cpu",
                        run_dir: Optional[Path] = None) -> Network:
    """Builds the model of a training config, loads ``state`` (a model state dict), freezes
    it and installs the probes."""
    from snc.config import unit_options
    from snc.ops import SqueezeExcitationOptions
    from snc.tasks.classify import build_network

    if cfg.get("task") is not None and cfg.task.get("name", "classify") != "classify":
        raise ConfigError(f"the figures read classifiers; this run is task={cfg.task.name}")
    num_classes = _num_classes(cfg, state or {})
    units = unit_options(cfg)  # parsed once: the network and the SN position read them
    try:
        model = build_network(cfg, num_classes, pretrained=False, units=units)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(f"the checkpoint does not fit the model of its config.yaml "
                              f"({str(err)[:300]})") from None
    overrides = _overrides(cfg)
    sites = backbone_sites(cfg.backbone.name, overrides, num_classes)
    install_probes(model, sites)
    freeze(model).to(device)
    sn, placement = units.sn, units.placement
    sn_position = None
    if sn is not None and not isinstance(sn, SqueezeExcitationOptions):
        spec = get_backbone_spec(cfg.backbone.name)
        sn_position = placement.sn or placement.name or spec.default_position
    return Network(model, cfg.backbone.name, sites, tuple(float(v) for v in cfg.dataset.mean),
                   tuple(float(v) for v in cfg.dataset.std), cfg, sn_position, run_dir,
                   torch.device(device))


def load_run(run_dir: Union[str, Path], device: Union[str, torch.device] = "cpu",
             checkpoint: Optional[Union[str, Path]] = None) -> Network:
    """The network of a finished run directory (``config.yaml`` + ``ckpt/last.pt``), or of
    ``config.yaml`` with another ``checkpoint`` file.

    Raises:
        ConfigError: no such directory, no config.yaml, no checkpoint, or a checkpoint that does
            not fit the config.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is not a directory: give a run directory of train.py "
                          "(it holds config.yaml and ckpt/last.pt)")
    config = run_dir / "config.yaml"
    if not config.exists():
        raise ConfigError(f"{run_dir} has no config.yaml: give a run directory of train.py")
    ckpt = Path(checkpoint) if checkpoint else run_dir / "ckpt" / "last.pt"
    if not ckpt.exists():
        raise ConfigError(f"no checkpoint {ckpt}: the run has not finished an epoch. Train it "
                          f"first (python train.py ... ) or pass checkpoint=<file.pt>")
    cfg = OmegaConf.load(config)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{ckpt} is not a readable checkpoint ({type(err).__name__}: "
                          f"{str(err)[:200]})") from None
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    return network_from_config(cfg, state, device, run_dir)


def network_from_backbone(backbone: str, checkpoint: Optional[Union[str, Path]] = None, *,
                          num_classes: int = 10, overrides: Sequence[str] = (),
                          device: Union[str, torch.device] = "cpu") -> Network:
    """A backbone + checkpoint without a run directory: ``overrides`` are train.py overrides
    (e.g. ``sn=on``, ``dataset=cifar10``) composed into the training config."""
    from snc.config import compose_config

    try:
        cfg = compose_config([f"backbone={backbone}", *overrides])
    except Exception as err:  # hydra's own errors: an unknown group option or key
        raise ConfigError(f"cannot compose backbone={backbone} {' '.join(overrides)}: "
                          f"{err}") from None
    if cfg.dataset.get("num_classes") is None:
        cfg.dataset.num_classes = num_classes
    state = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.exists():
            raise ConfigError(f"checkpoint={path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state:
            state = state["model"]
    return network_from_config(cfg, state, device)
