"""Masked 1-D statistics: SelfNorm and CrossNorm on padded token sequences.

Paper: Tang et al., ICCV 2021, Sec. 4.3 (Table 4): SN and CN sit between the GloVe embedding and
the convolutions of a TextCNN. The paper gives no code; the design chosen here
is the ``(N, C, L)`` layout with **channel = embedding dimension** and **spatial = token
positions**, so the statistics are per review and per embedding dimension over its tokens.

What this module adds to :mod:`snc.ops.stats`, :mod:`snc.ops.crossnorm` and
:mod:`snc.ops.selfnorm`:

* a ``valid`` mask ``(N, L)`` (True = a real token) so that padding positions do not enter the
  statistics, and are left unchanged in the output. Without a mask (``valid=None``) every op
  here equals its unmasked counterpart exactly (tested), i.e. padding is treated as part of the
  map, as the official 4-D ops would treat it.
* a 1-D crop: a **token span per review** instead of the official one-box-per-batch sampler
  (fed ``(N, C, L, 1)`` the official sampler never terminates: no box of a 1-wide map passes
  the area threshold). The span
  ratio ``lam ~ Beta(beta, beta)``; the span is ``centre +- int(len * lam) // 2`` around a
  uniform integer centre, clipped to the review, accepted when ``span / len > t`` (the 1-D
  analogue of the official area ratio: the "area" of a span is its length). Each review draws
  its own span inside its own tokens, so short reviews in a long-padded batch are cropped too.

The unbiased variance divides by ``count - 1``; a region of a single token (a one-token review)
divides by 1, i.e. its std is ``sqrt(eps)`` instead of undefined. Masks are right-padding masks:
real tokens first (what :mod:`snc.data.text` produces).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from snc.ops.cnsn import CNSN
from snc.ops.crossnorm import CrossNorm, restyle_affine, sample_cross_norm_args
from snc.ops.selfnorm import SelfNorm
from snc.ops.stats import CROSSNORM_EPS, channel_stats

_MAX_SPAN_TRIES = 10_000


def masked_channel_stats(x: torch.Tensor, valid: Optional[torch.Tensor], eps: float
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and ``sqrt(unbiased var + eps)`` over the valid positions.

    Args:
        x: ``(N, C, L)`` tensor of any floating dtype.
        valid: ``(N, L)`` bool, True where a position counts; None = every position (then the
            result equals :func:`snc.ops.channel_stats`).
        eps: added to the unbiased variance before the square root.

    Returns:
        ``(mean, std)``, float32 ``(N, C, 1)``. A sample with a single valid position gets its
        value as the mean and ``sqrt(eps)`` as the std.

    Raises:
        ValueError: if a sample has no valid position.
    """
    if valid is None:
        return channel_stats(x, eps)
    if valid.shape != (x.shape[0], x.shape[-1]):
        raise ValueError(f"mask shape {tuple(valid.shape)} does not match input "
                         f"{tuple(x.shape)}: expected (N, L) = ({x.shape[0]}, {x.shape[-1]})")
    weight = valid.to(torch.float32).unsqueeze(1)  # (N, 1, L)
    count = weight.sum(-1, keepdim=True)  # (N, 1, 1)
    if bool((count == 0).any()):
        raise ValueError("a sample has no valid position; empty sequences must be dropped "
                         "before the model (snc.data.text skips and counts them)")
    xf = x.float()
    mean = (xf * weight).sum(-1, keepdim=True) / count
    var = ((xf - mean) * weight).square().sum(-1, keepdim=True) / (count - 1).clamp_min(1)
    return mean, (var + eps).sqrt()


def sample_spans(lengths: torch.Tensor, generator: Optional[torch.Generator] = None,
                 beta: float = 1.0, threshold: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """One token span per sequence, the 1-D CrossNorm crop (see the module docstring).

    Args:
        lengths: ``(N,)`` integer lengths of the sequences (real tokens).
        generator: CPU generator the draws come from (torch's default one if None).
        beta: Beta(beta, beta) parameter of the span ratio.
        threshold: a span is accepted when ``span / length > threshold``.

    Returns:
        ``(start, stop)``, int64 ``(N,)`` each (stop exclusive). A sequence in which no span
        above the threshold can be drawn (lengths 1 and 2) gets its whole length.
    """
    lengths = lengths.detach().to("cpu", torch.int64)
    n = lengths.shape[0]
    start = torch.zeros(n, dtype=torch.int64)
    stop = lengths.clone()
    # the widest span the sampler can make is 2 * ((len - 1) // 2) tokens (lam < 1); where even
    # that is not above the threshold (lengths 1 and 2 for small t) the whole review is used
    widest = 2 * ((lengths - 1).clamp_min(0) // 2)
    todo = torch.nonzero(widest.float() > threshold * lengths.float()).flatten()
    rng = None
    if beta != 1.0:  # Beta(1, 1) is uniform: stay on the torch generator, else NumPy's Beta
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    for _ in range(_MAX_SPAN_TRIES):
        if todo.numel() == 0:
            break
        m = todo.numel()
        if rng is not None:
            lam = torch.from_numpy(rng.beta(beta, beta, m)).float()
        else:
            lam = torch.rand(m, generator=generator)
        size = lengths[todo]
        cut = (size.float() * lam).long()
        centre = (torch.rand(m, generator=generator) * size.float()).long().clamp_max(size - 1)
        a = (centre - cut // 2).clamp(min=0)
        b = torch.minimum(centre + cut // 2, size)
        ok = (b - a).float() / size.float() > threshold
        start[todo[ok]] = a[ok]
        stop[todo[ok]] = b[ok]
        todo = todo[~ok]
    return start, stop


def span_mask(start: torch.Tensor, stop: torch.Tensor, length: int,
              device: Optional[torch.device] = None) -> torch.Tensor:
    """``(N, length)`` bool mask, True on ``[start, stop)`` of each row."""
    pos = torch.arange(length, device=device)
    return (pos >= start.to(device).unsqueeze(1)) & (pos < stop.to(device).unsqueeze(1))


def _region(valid: Optional[torch.Tensor], span: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if span is None:
        return valid
    return span if valid is None else span & valid


def masked_cross_norm(
    x: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    perm: Optional[torch.Tensor] = None,
    channel_perm: Optional[torch.Tensor] = None,
    style_span: Optional[torch.Tensor] = None,
    content_span: Optional[torch.Tensor] = None,
    eps: float = CROSSNORM_EPS,
) -> torch.Tensor:
    """CrossNorm on ``(N, C, L)`` with a padding mask and token-span crops (pure function).

    Args:
        x: ``(N, C, L)`` features (C = embedding dimension, L = tokens).
        valid: ``(N, L)`` bool, True on real tokens; None = all positions count.
        perm: ``(N,)`` style partner of each sample (2-instance); None = itself.
        channel_perm: ``(C,)`` partner channel of each channel (1-instance / channel shuffle).
        style_span: ``(N, L)`` bool span of each sample its statistics are read from when it is
            a partner (None: its whole valid length).
        content_span: ``(N, L)`` bool span of each sample that is re-styled (None: the whole
            valid length); outside it (and on padding) the output equals ``x``.
        eps: variance epsilon (official: 1e-5).

    Returns:
        Tensor of the shape and dtype of ``x``. With ``valid``, ``style_span`` and
        ``content_span`` all None this equals :func:`snc.ops.cross_norm`.
    """
    content_region = _region(valid, content_span)
    style_region = _region(valid, style_span)
    mean_c, std_c = masked_channel_stats(x, content_region, eps)
    if style_span is None and content_span is None:
        mean_s, std_s = mean_c, std_c
    else:
        mean_s, std_s = masked_channel_stats(x, style_region, eps)
    scale, shift = restyle_affine(mean_c, std_c, mean_s, std_s, perm, channel_perm)
    restyled = (x.float() * scale + shift).to(x.dtype)
    if content_region is None:
        return restyled
    return torch.where(content_region.unsqueeze(1), restyled, x)


class MaskedCrossNorm(CrossNorm):
    """A :class:`~snc.ops.CrossNorm` unit for ``(N, C, L)`` sequences with a padding mask.

    It is a CrossNorm (found by :func:`snc.ops.find_cross_norm_units`, switched on by the
    :class:`~snc.ops.CrossNormController`, identity in eval mode or when inactive) whose
    statistics skip padding and whose crops are token spans (module docstring). Same options
    (:class:`~snc.ops.options.CrossNormOptions`) as CrossNorm.
    """

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: ``x (N, C, L)``; ``valid (N, L)`` bool or None (every position counts)."""
        if not self.acts():
            return x
        o = self.options
        if o.mode == "two_instance" and x.shape[0] < 2:
            return x
        # partners from the shared sampler; the crop is drawn here as token spans
        args = sample_cross_norm_args(x.shape, o, generator=self.generator, device=x.device,
                                      crop="neither")
        n, length = x.shape[0], x.shape[-1]
        lengths = (valid.sum(-1) if valid is not None
                   else torch.full((n,), length, dtype=torch.int64))
        spans = {}
        for key, crops in (("style_span", ("style", "both")),
                           ("content_span", ("content", "both"))):
            if o.crop in crops:
                start, stop = sample_spans(lengths, self.generator, o.beta, o.threshold)
                spans[key] = span_mask(start, stop, length, x.device)
        return masked_cross_norm(x, valid, perm=args["perm"], channel_perm=args["channel_perm"],
                                 eps=self.eps, **spans)


class MaskedSelfNorm(SelfNorm):
    """A :class:`~snc.ops.SelfNorm` unit whose statistics skip padding.

    Without a mask it is exactly SelfNorm (the official unit, 4*C parameters with one gate).
    With a mask the gate reads the masked ``(mean, std)`` and padding positions are returned
    unchanged. Same parameters and names as SelfNorm, so weights load either way.
    """

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: ``x (N, C, L)``; ``valid (N, L)`` bool or None (every position counts)."""
        if valid is None:
            return super().forward(x)
        if self.training and x.shape[0] < 2:
            raise ValueError(
                "SelfNorm needs a batch of at least 2 in training mode (its gate normalizes over "
                "the batch); use a larger batch or call eval()")
        mean, std = masked_channel_stats(x, valid, self.eps)
        with torch.autocast(device_type=x.device.type, enabled=False):
            g = self._g(mean, std)
            out = x * g.to(x.dtype)
            if self.gates == 2:
                out = out + (mean * (self._f(mean, std) - g)).to(x.dtype)
        return torch.where(valid.unsqueeze(1), out, x)


class MaskedCNSN(CNSN):
    """One site on a sequence: MaskedCrossNorm and/or MaskedSelfNorm in ``order``.

    Args:
        cn: the CrossNorm unit, or None.
        sn: the SelfNorm unit, or None.
        order: ``cn_sn`` (official) or ``sn_cn``.
    """

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        first, second = (self.cn, self.sn) if self.order == "cn_sn" else (self.sn, self.cn)
        if first is not None:
            x = first(x, valid)
        if second is not None:
            x = second(x, valid)
        return x
