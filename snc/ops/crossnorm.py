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
from torch import nn

from snc.ops.options import CrossNormOptions
from snc.ops.stats import CROSSNORM_EPS, Box, channel_stats
from snc.ops.stats import crop as crop_region

_MAX_BOX_TRIES = 10_000


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


class CrossNorm(nn.Module):
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
        self.active = False
        self.generator: Optional[torch.Generator] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.active):
            return x
        if self.options.mode == "two_instance" and x.shape[0] < 2:
            return x
        args = sample_cross_norm_args(x.shape, self.options, generator=self.generator,
                                      device=x.device)
        return cross_norm(x, eps=self.eps, **args)

    def extra_repr(self) -> str:
        o = self.options
        return f"mode={o.mode}, crop={o.crop}, beta={o.beta}, threshold={o.threshold}"
