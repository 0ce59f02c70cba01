"""CrossNorm: swap channel statistics to augment styles during training.

Paper: Tang et al., "CrossNorm and SelfNorm for Generalization under Distribution Shifts",
ICCV 2021, Sec. 3 (Eq. 3) and Sec. 3.1 (Eqs. 4-6: 1-instance, 2-instance, cropping).

Official counterpart (``cnsn.py``, ``CrossNorm`` + ``cn_rand_bbox``/``cn_op_2ins_space_chan``):
the 2-instance op with a random permutation of the batch (a sample may be paired with itself),
the content standardized with its own statistics and given the partner's. The box sampler draws
``lam ~ Beta(beta, beta)``, cuts ``int(size * sqrt(lam))`` per dimension around a uniform integer
centre (``centre +- cut // 2``, clipped) and accepts the box when its area ratio exceeds ``t``.
One box per call serves the whole batch.

Additions over the official op (all off by default, so the default equals the official one):
``mode="one_instance"`` (paper Eq. 4: channels of one sample exchange statistics),
``self_pairing=False`` (no sample is its own partner) and ``channel_shuffle=True`` (the style
source's channels are permuted too, an option present but never enabled in the official op).

Two forms of one op: :func:`cross_norm` with the boxes as slices and its choices drawn on the
host (:func:`sample_cross_norm_args`; eager CPU), and the capture form (:func:`cross_norm_masked`,
:func:`box_masks`, :func:`permutation_from_keys`; GPUs and ``torch.compile``): the same choices
with the same distribution drawn on the device, boxes as masks and partners as gathers of fixed
shape. Equal results for equal choices (tested).

Crop modes (``A`` = content sample, ``B`` = partner):
    neither: ``A`` whole map gets ``B``'s whole-map statistics.
    style:   ``A`` whole map gets the statistics of box B1 of ``B``.
    content: box B2 of ``A`` (standardized with its own B2 statistics) gets ``B``'s whole-map
             statistics; ``A`` outside B2 is unchanged.
    both:    box B2 of ``A`` gets the statistics of box B1 of ``B``; outside B2 unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from snc.ops.options import CrossNormOptions
from snc.ops.stats import CROSSNORM_EPS, Box, channel_stats
from snc.ops.stats import crop as crop_region
from snc.ops.switched import SwitchedUnit

_MAX_BOX_TRIES = 10_000
BOX_CANDIDATES = 128
"""Candidates of the device box sampler (:func:`box_masks`); see its docstring for the odds."""
KEY_HIGH = 2**62
"""Random sort keys are integers in ``[0, KEY_HIGH)``: ties (which would bias a permutation
drawn as ``argsort(keys)``) have probability below ``N**2 / 2**63``."""


def _options(options: Optional[CrossNormOptions], overrides: Dict[str, Any]) -> CrossNormOptions:
    """``options`` (default: the official settings) with keyword ``overrides`` applied."""
    base = options if options is not None else CrossNormOptions()
    return dataclasses.replace(base, **overrides) if overrides else base


def sample_box(
    spatial_shape: Sequence[int],
    generator: Optional[torch.Generator] = None,
    beta: float = 1.0,
    threshold: float = 0.1,
) -> Box:
    """Samples one crop box as the official CrossNorm does.

    Args:
        spatial_shape: the spatial size, e.g. ``(H, W)`` or ``(L,)``.
        generator: CPU generator the draws come from (torch's default one if None).
        beta: parameter of the Beta(beta, beta) distribution of the area ratio.
        threshold: the box is accepted only when its area ratio exceeds this (paper: t=0.1).

    Returns:
        One ``(start, stop)`` pair per spatial dimension.

    Raises:
        ValueError: if no box above the threshold fits the map (e.g. a 2x2 map).
    """
    sizes = [int(s) for s in spatial_shape]
    total = math.prod(sizes)
    rng = None
    if beta != 1.0:  # Beta(1, 1) is uniform: stay on the torch generator, otherwise NumPy's Beta
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
    for _ in range(_MAX_BOX_TRIES):
        lam = float(rng.beta(beta, beta)) if rng is not None else float(
            torch.rand((), generator=generator)
        )
        ratio = math.sqrt(lam)
        box = []
        area = 1
        for size in sizes:
            cut = int(size * ratio)
            centre = int(torch.randint(0, size, (1,), generator=generator))
            start = min(max(centre - cut // 2, 0), size)
            stop = min(max(centre + cut // 2, 0), size)
            box.append((start, stop))
            area *= stop - start
        if area / total > threshold:
            return tuple(box)
    raise ValueError(
        f"no crop box with area ratio > {threshold} fits a {tuple(sizes)} map; use crop=neither "
        "for such small maps or a lower threshold"
    )


def sample_cross_norm_args(
    shape: Sequence[int],
    options: Optional[CrossNormOptions] = None,
    *,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
    **overrides: Any,
) -> Dict[str, object]:
    """Draws every random choice of one CrossNorm call, for :func:`cross_norm`.

    All draws come from ``generator`` on the CPU (no device synchronisation); the index
    tensors are moved to ``device``.

    Args:
        shape: the input shape ``(N, C, *spatial)``.
        options: mode, crop, box sampler and pairing settings (default: the official ones);
            keyword ``overrides`` (e.g. ``crop="both"``) replace single fields.
        generator: CPU generator; torch's default one if None.
        device: where the index tensors go.

    Returns:
        keyword arguments ``perm``, ``channel_perm``, ``style_box``, ``content_box``.
    """
    opts = _options(options, overrides)
    n, c = int(shape[0]), int(shape[1])
    spatial = shape[2:]
    perm = channel_perm = None
    if opts.mode == "two_instance":
        if opts.self_pairing or n < 2:
            perm = torch.randperm(n, generator=generator)
        else:  # a random cycle through a random order: a permutation without fixed points
            order = torch.randperm(n, generator=generator)
            perm = torch.empty_like(order)
            perm[order] = order.roll(-1)
        if opts.channel_shuffle:
            channel_perm = torch.randperm(c, generator=generator)
    else:
        if c < 2:
            raise ValueError("one_instance CrossNorm needs at least 2 channels")
        channel_perm = torch.randperm(c, generator=generator)
    style_box = content_box = None
    if opts.crop in ("style", "both"):
        style_box = sample_box(spatial, generator, opts.beta, opts.threshold)
    if opts.crop in ("content", "both"):
        content_box = sample_box(spatial, generator, opts.beta, opts.threshold)
    if device is not None:
        perm = perm.to(device, non_blocking=True) if perm is not None else None
        channel_perm = (
            channel_perm.to(device, non_blocking=True) if channel_perm is not None else None
        )
    return {
        "perm": perm,
        "channel_perm": channel_perm,
        "style_box": style_box,
        "content_box": content_box,
    }


def permutation_from_keys(keys: torch.Tensor, self_pairing: bool = True) -> torch.Tensor:
    """A uniformly random permutation from distinct random keys ``(N,)``, drawn on their device.

    ``argsort(keys)`` is uniform over the ``N!`` permutations (as ``torch.randperm``). With
    ``self_pairing=False`` it is read as a random order and turned into the random cycle
    through it, as :func:`sample_cross_norm_args` does: no fixed point (``N >= 2``).
    """
    order = torch.argsort(keys)
    if self_pairing or keys.shape[0] < 2:
        return order
    return torch.empty_like(order).scatter_(0, order, order.roll(-1))


def box_masks(spatial_shape: Sequence[int], uniforms: torch.Tensor, beta: float = 1.0,
              threshold: float = 0.1) -> torch.Tensor:
    """The box of :func:`sample_box`, drawn without host work and returned as a mask.

    Each of the ``T`` rows of ``uniforms`` is one candidate of the official rejection sampler:
    ``lam`` (column 0; for ``beta != 1`` Johnk's method on columns 0-1 gives
    ``lam ~ Beta(beta, beta)`` or rejects the row), then one uniform integer centre per spatial
    dimension (columns 2, 3, ...), the cut ``int(size * sqrt(lam))`` and the clipping of
    :func:`sample_box`. The first candidate whose area ratio exceeds ``threshold`` is taken:
    candidates are independent, so it is distributed as the sequential sampler's box. If no
    candidate of the ``T`` is accepted (probability ``(1 - p)**T`` for a per-candidate
    acceptance ``p``: about 0.6 on 8x8 maps with ``t = 0.1``, so below ``1e-40`` with
    ``T = 128``) the whole map is used.

    Args:
        spatial_shape: the spatial size, e.g. ``(H, W)``.
        uniforms: ``(T, 2 + D)`` float uniforms in ``[0, 1)`` (D = number of spatial dims).
        beta: Beta(beta, beta) parameter of the area ratio.
        threshold: the area ratio a box must exceed.

    Returns:
        bool mask of shape ``spatial_shape`` on the device of ``uniforms``, True inside the box.
    """
    sizes = [int(s) for s in spatial_shape]
    u = uniforms.float()
    if beta == 1.0:
        lam, valid = u[:, 0], torch.ones_like(u[:, 0], dtype=torch.bool)
    else:  # Johnk: X = U^(1/a), Y = V^(1/a); X / (X + Y) ~ Beta(a, a) given X + Y <= 1
        a = u[:, 0].clamp_min(1e-30).log().div(beta).exp()
        b = u[:, 1].clamp_min(1e-30).log().div(beta).exp()
        total = a + b
        valid = (total <= 1) & (total > 0)
        lam = a / total.clamp_min(1e-30)
    ratio = lam.sqrt()
    area = torch.ones_like(ratio)
    bounds = []
    for d, size in enumerate(sizes):
        cut = torch.floor(size * ratio).long()
        centre = torch.floor(u[:, 2 + d] * size).long().clamp(0, size - 1)
        start = (centre - cut // 2).clamp(0, size)
        stop = (centre + cut // 2).clamp(0, size)
        bounds.append((start, stop))
        area = area * (stop - start).float()
    accepted = valid & (area / math.prod(sizes) > threshold)
    first = accepted & (accepted.to(torch.int32).cumsum(0) == 1)  # one-hot: first accepted
    found = accepted.any()
    mask = None
    for d, (size, (start, stop)) in enumerate(zip(sizes, bounds, strict=True)):
        lo = torch.where(found, (start * first).sum(), 0)
        hi = torch.where(found, (stop * first).sum(), size)
        pos = torch.arange(size, device=uniforms.device)
        inside = (pos >= lo) & (pos < hi)
        shape = [1] * len(sizes)
        shape[d] = size
        inside = inside.reshape(shape)
        mask = inside if mask is None else mask & inside
    return mask


def masked_channel_stats(x: torch.Tensor, mask: Optional[torch.Tensor], eps: float):
    """Per-sample, per-channel mean and ``sqrt(unbiased var + eps)`` over the positions where
    ``mask`` (shape ``x.shape[2:]``, shared by the batch) is True; the whole map when None.
    Plain tensor ops of fixed shape; equal to :func:`~snc.ops.stats.channel_stats` of the
    cropped region (tested). Returns float32 ``(N, C, 1, ..., 1)``."""
    xf = x.float()
    dims = tuple(range(2, x.dim()))
    if mask is None:
        count = float(math.prod(x.shape[2:]))
        mean = xf.mean(dim=dims, keepdim=True)
        centred = xf - mean
    else:
        weight = mask.to(torch.float32)
        count = weight.sum()
        mean = (xf * weight).sum(dim=dims, keepdim=True) / count
        centred = (xf - mean) * weight
    var = centred.square().sum(dim=dims, keepdim=True) / (count - 1)
    return mean, (var + eps).sqrt()


def cross_norm_masked(
    x: torch.Tensor,
    *,
    perm: Optional[torch.Tensor] = None,
    channel_perm: Optional[torch.Tensor] = None,
    style_mask: Optional[torch.Tensor] = None,
    content_mask: Optional[torch.Tensor] = None,
    eps: float = CROSSNORM_EPS,
) -> torch.Tensor:
    """:func:`cross_norm` with the boxes given as masks (``x.shape[2:]`` bool): fixed shapes
    whatever the draw, so one captured graph serves every box. Equal to :func:`cross_norm`
    with the boxes the masks mark (tested)."""
    mean_c, std_c = masked_channel_stats(x, content_mask, eps)
    if style_mask is None and content_mask is None:
        mean_s, std_s = mean_c, std_c
    else:
        mean_s, std_s = masked_channel_stats(x, style_mask, eps)
    scale, shift = restyle_affine(mean_c, std_c, mean_s, std_s, perm, channel_perm)
    restyled = (x.float() * scale + shift).to(x.dtype)
    if content_mask is None:
        return restyled
    return torch.where(content_mask, restyled, x)


def restyle_affine(mean_c: torch.Tensor, std_c: torch.Tensor, mean_s: torch.Tensor,
                   std_s: torch.Tensor, perm: Optional[torch.Tensor] = None,
                   channel_perm: Optional[torch.Tensor] = None):
    """``(scale, shift)`` with ``(x - mean_c) / std_c * std_s' + mean_s' = x * scale + shift``,
    the style statistics taken from each sample's partner (``perm``) and channel
    (``channel_perm``). Shared by the 2-D op and the masked 1-D op."""
    if perm is not None:
        mean_s, std_s = mean_s[perm], std_s[perm]
    if channel_perm is not None:
        mean_s, std_s = mean_s[:, channel_perm], std_s[:, channel_perm]
    scale = std_s / std_c
    return scale, mean_s - mean_c * scale


def cross_norm(
    x: torch.Tensor,
    *,
    perm: Optional[torch.Tensor] = None,
    channel_perm: Optional[torch.Tensor] = None,
    style_box: Optional[Box] = None,
    content_box: Optional[Box] = None,
    eps: float = CROSSNORM_EPS,
) -> torch.Tensor:
    """CrossNorm with every random choice given (pure function).

    Args:
        x: ``(N, C, *spatial)`` features or images.
        perm: ``(N,)`` index of each sample's style partner (2-instance); None = itself.
        channel_perm: ``(C,)`` index of each channel's partner channel (1-instance, or the
            optional channel shuffle of 2-instance); None = the same channel.
        style_box: box of the partner the style statistics come from (None: whole map).
        content_box: box of each sample that is re-styled (None: whole map); outside it
            the output equals ``x``.
        eps: added to the variances (official: 1e-5).

    Returns:
        Tensor of the shape and dtype of ``x``. Gradients flow into both content and style.
    """
    mean_c, std_c = channel_stats(x, eps, content_box)
    if style_box == content_box:
        mean_s, std_s = mean_c, std_c
    else:
        mean_s, std_s = channel_stats(x, eps, style_box)
    scale, shift = restyle_affine(mean_c, std_c, mean_s, std_s, perm, channel_perm)
    content = crop_region(x, content_box)
    restyled = (content.float() * scale + shift).to(x.dtype)
    if content_box is None:
        return restyled
    out = x.clone()
    crop_region(out, content_box).copy_(restyled)
    return out


class CrossNorm(SwitchedUnit):
    """CrossNorm unit: applies :func:`cross_norm` when switched on, in training mode only.

    The unit is off by default; a :class:`~snc.ops.cnsn.CrossNormController` switches chosen
    units on for one forward pass (official semantics). In eval mode it is always the identity.
    A 2-instance unit given a batch of one returns its input unchanged (there is no partner).

    Args:
        options: the unit's settings (:class:`~snc.ops.options.CrossNormOptions`; default: the
            official 2-instance op without crop). Keyword ``overrides`` replace single fields,
            e.g. ``CrossNorm(crop="style")``. The controller fields (``active_num``,
            ``prob``) and ``order`` are read by the controller and the CNSN site, not here.
        eps: variance epsilon (official: 1e-5).
    """

    def __init__(self, options: Optional[CrossNormOptions] = None, *,
                 eps: float = CROSSNORM_EPS, **overrides: Any) -> None:
        super().__init__()
        self.options = _options(options, overrides)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.acts():
            return x
        if self.options.mode == "two_instance" and x.shape[0] < 2:
            return x
        ctrl = self.controller
        if ctrl is not None and ctrl.capture:
            return self.captured_forward(x, ctrl.unit_draws(self.index))
        args = sample_cross_norm_args(x.shape, self.options, generator=self.generator,
                                      device=x.device)
        return cross_norm(x, eps=self.eps, **args)

    def captured_forward(self, x: torch.Tensor, draws: Dict[str, torch.Tensor]
                         ) -> torch.Tensor:
        """CrossNorm from draws made on the device (:meth:`CrossNormController.unit_draws`):
        partners and channels from random keys, boxes as masks, and the unit's on/off gate
        applied with ``torch.where``. No host synchronisation and fixed shapes: the form a
        compiler captures as one graph for every draw. Same distribution of choices as the
        host path; equal results for the same choices (tested)."""
        o = self.options
        n, c = x.shape[:2]
        rows, channels = draws["rows"], draws["channels"]
        if n > rows.shape[0]:
            raise ValueError(f"a CrossNorm unit sees {n} rows, more than the controller draws "
                             f"partner keys for ({rows.shape[0]}); raise "
                             "model.cn_controller.capacity")
        if channels is not None and c > channels.shape[0]:
            raise ValueError(f"a CrossNorm unit sees {c} channels, more than the controller "
                             f"draws keys for ({channels.shape[0]}); raise "
                             "model.cn_controller.channel_capacity")
        perm = channel_perm = None
        if o.mode == "two_instance":
            perm = permutation_from_keys(rows[:n], o.self_pairing)
            if o.channel_shuffle:
                channel_perm = permutation_from_keys(channels[:c])
        else:
            if c < 2:
                raise ValueError("one_instance CrossNorm needs at least 2 channels")
            channel_perm = permutation_from_keys(channels[:c])
        spatial = x.shape[2:]
        style_mask = content_mask = None
        if o.crop in ("style", "both"):
            style_mask = box_masks(spatial, draws["boxes"][0], o.beta, o.threshold)
        if o.crop in ("content", "both"):
            content_mask = box_masks(spatial, draws["boxes"][1], o.beta, o.threshold)
        out = cross_norm_masked(x, perm=perm, channel_perm=channel_perm, style_mask=style_mask,
                                content_mask=content_mask, eps=self.eps)
        return torch.where(draws["gate"], out, x)

    def extra_repr(self) -> str:
        o = self.options
        return f"mode={o.mode}, crop={o.crop}, beta={o.beta}, threshold={o.threshold}"


class RowCrossNorm(CrossNorm):
    """A CrossNorm unit that, when ``row_start`` is set, acts on ``x[row_start:]`` only.

    FixMatch + CN (paper Fig. 4) restyles only part of its concatenated batch (e.g. the strong
    views): the task sets ``row_start`` for each forward. Content rows and partner rows are
    then both taken from ``x[row_start:]``; the rows before it are returned unchanged. With
    ``row_start=None`` it is the plain CrossNorm.
    """

    row_start: Optional[int] = None

    @classmethod
    def from_unit(cls, unit: CrossNorm) -> "RowCrossNorm":
        new = cls(unit.options, eps=unit.eps)
        new.train(unit.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = self.row_start
        if start is None or not self.acts():
            return super().forward(x)
        return torch.cat([x[:start], super().forward(x[start:])])
