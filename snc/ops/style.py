"""Feature-statistics augmentations from related work: MixStyle, DSU, EFDMix, Permuted AdaIN.

Each op comes in three parts, as CrossNorm does (:mod:`snc.ops.crossnorm`): a pure function
with every random choice given as an argument, a ``sample_*_args`` function that draws those
choices (and the apply coin) from a CPU ``torch.Generator``, and a thin unit
(:class:`StyleUnit`) that is off by default, switched on by a controller, and acts only when
training *and* active. Inputs are ``(N, C, *spatial)``; statistics are per sample and channel
over the spatial positions, ``mu = mean(x)`` and ``sig = sqrt(var(x) + eps)`` with the unbiased
variance (divided by ``L - 1``, as in the authors' code and :mod:`snc.ops.stats`). They are
computed in float32 (float64 for float64 inputs) and the output has the dtype of ``x``.

Papers:
    MixStyle: Zhou et al., "Domain Generalization with MixStyle", ICLR 2021, Sec. 3.
    DSU: Li et al., "Uncertainty Modeling for Out-of-Distribution Generalization", ICLR 2022,
        Eqs. 3-8.
    EFDMix: Zhang et al., "Exact Feature Distribution Matching for Arbitrary Style Transfer
        and Domain Generalization", CVPR 2022 (EFDM and its EFDMix form).
    Permuted AdaIN: Nuriel, Benaim and Wolf, "Permuted AdaIN: Reducing the Bias Towards
        Global Statistics in Image Classification", CVPR 2021.

The units draw on the host only; they have no capture form for compiled steps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from snc.ops.options import DSUOptions, EFDMixOptions, MixStyleOptions, PermutedAdaINOptions
from snc.ops.switched import SwitchedUnit

Args = Optional[Dict[str, Any]]
"""What a sampler returns: the keyword arguments of its op, or None when the coin says no."""
PerSample = Union[float, torch.Tensor]
"""A mixing weight: one number for the whole batch or an ``(N,)`` tensor."""


# ----- shared pieces -------------------------------------------------------------------------
def _work(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype the ops compute in: float32, or float64 for float64 inputs."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def style_stats(x: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel ``mu = mean`` and ``sig = sqrt(unbiased var + eps)``.

    Args:
        x: ``(N, C, *spatial)`` tensor with at least 2 spatial positions.
        eps: added to the variance before the square root.

    Returns:
        ``(mu, sig)`` of shape ``(N, C, 1, ..., 1)`` in the computing dtype (see :func:`_work`),
        differentiable (callers detach where their paper says so).

    Raises:
        ValueError: with a single spatial position (the unbiased variance is undefined).
    """
    n, c = x.shape[:2]
    count = math.prod(x.shape[2:])
    if count < 2:
        raise ValueError(
            f"style statistics need at least 2 spatial positions, got {tuple(x.shape[2:])}; "
            "place the style unit before the final pooling"
        )
    flat = _work(x).reshape(n, c, count)
    var, mu = torch.var_mean(flat, dim=-1, keepdim=True)
    shape = (n, c) + (1,) * (x.dim() - 2)
    return mu.reshape(shape), (var + eps).sqrt().reshape(shape)


def _per_sample(value: PerSample, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor broadcastable over ``like`` (an ``(N,)`` tensor becomes
    ``(N, 1, ..., 1)``), in the dtype and on the device of ``like``."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.reshape((-1,) + (1,) * (like.dim() - 1)) if t.dim() else t


def _restyle(xw: torch.Tensor, mu: torch.Tensor, sig: torch.Tensor, mu_new: torch.Tensor,
             sig_new: torch.Tensor) -> torch.Tensor:
    """``(x - mu) / sig * sig_new + mu_new``: ``x`` standardized and given new statistics."""
    return (xw - mu) / sig * sig_new + mu_new


def _coin(p: float, generator: Optional[torch.Generator]) -> bool:
    """One Bernoulli(p) draw on the CPU generator (no device synchronisation)."""
    return bool(torch.rand((), generator=generator) < p)


def sample_partners(n: int, mix: str = "random",
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Each sample's style partner, an ``(N,)`` CPU permutation.

    ``random``: a uniformly random permutation of the batch (a sample may be its own partner).
    ``crossdomain``: the batch holds two domains as halves ``[A; B]`` (``N = 2h``); the first
    half's partners are a random permutation of B and the second half's a random permutation
    of A: ``perm = cat(h + randperm(h), randperm(h))``. (The MixStyle authors' code takes the
    reversed index ``N-1, ..., 0``, shuffles each of its halves and concatenates them: the
    same distribution.)

    Raises:
        ValueError: ``crossdomain`` with an odd batch.
    """
    if mix == "crossdomain":
        _check_even(n)
        half = n // 2
        return torch.cat([half + torch.randperm(half, generator=generator),
                          torch.randperm(half, generator=generator)])
    return torch.randperm(n, generator=generator)


def _check_even(n: int) -> None:
    if n % 2:
        raise ValueError(
            f"style.mix=crossdomain pairs the two halves of a batch sorted by domain and needs "
            f"an even batch size, got {n}; use an even batch_size (and drop the last incomplete "
            "batch) or style.mix=random"
        )


def sample_beta(n: int, alpha: float, generator: Optional[torch.Generator] = None
                ) -> torch.Tensor:
    """``(N,)`` float32 draws of Beta(alpha, alpha), seeded from the CPU ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.from_numpy(lam).float()


def _to(device: Optional[torch.device], **tensors: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The CPU draws moved to ``device`` without waiting for the copy."""
    if device is None:
        return tensors
    return {k: t.to(device, non_blocking=True) for k, t in tensors.items()}


def _mixing_args(shape: Sequence[int], options, generator, device) -> Args:
    """Coin, partners and Beta weights of the two mixing ops (MixStyle, EFDMix)."""
    n = int(shape[0])
    if options.mix == "crossdomain":
        _check_even(n)  # before the coin: an odd batch fails on every step, not on some
    if not _coin(options.p, generator):
        return None
    perm = sample_partners(n, options.mix, generator)
    return _to(device, perm=perm, lam=sample_beta(n, options.alpha, generator))


# ----- MixStyle ------------------------------------------------------------------------------
def mixstyle(x: torch.Tensor, *, perm: torch.Tensor, lam: PerSample,
             eps: float = 1e-6) -> torch.Tensor:
    """MixStyle with its choices given (pure function). Paper Sec. 3, Eqs. 3-5::

        mu_mix  = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        out     = sig_mix * (x - mu) / sig + mu_mix

    with ``mu``, ``sig`` of :func:`style_stats` *detached* (no gradient flows through the
    statistics, as in the paper's code).

    Args:
        x: ``(N, C, *spatial)``.
        perm: ``(N,)`` index of each sample's partner.
        lam: mixing weight, ``(N,)`` or one number (1: the identity).
        eps: added to the variance.
    """
    xw = _work(x)
    mu, sig = (s.detach() for s in style_stats(x, eps))
    lam = _per_sample(lam, xw)
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    return _restyle(xw, mu, sig, mu_mix, sig_mix).to(x.dtype)


def sample_mixstyle_args(shape: Sequence[int], options: Optional[MixStyleOptions] = None, *,
                         generator: Optional[torch.Generator] = None,
                         device: Optional[torch.device] = None) -> Args:
    """Draws one MixStyle call: the coin (probability ``p``), then ``perm``
    (:func:`sample_partners`) and ``lam ~ Beta(alpha, alpha)`` per sample.

    Returns:
        keyword arguments of :func:`mixstyle`, or None when the coin says no.

    Raises:
        ValueError: ``crossdomain`` with an odd batch (whatever the coin).
    """
    opts = options if options is not None else MixStyleOptions()
    args = _mixing_args(shape, opts, generator, device)
    return None if args is None else {**args, "eps": opts.eps}


# ----- DSU -----------------------------------------------------------------------------------
def _check_batch(n: int) -> None:
    if n < 2:
        raise ValueError(
            "DSU estimates the variance of the statistics over the batch; use batch_size >= 2 "
            "(and drop the last incomplete batch), or call eval()"
        )


def dsu(x: torch.Tensor, *, noise_mu: torch.Tensor, noise_sig: torch.Tensor,
        factor: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """DSU with its noise given (pure function). Paper Eqs. 3-8::

        Sigma_mu  = sqrt(var_batch(mu) + eps)         (per channel, unbiased over the batch)
        Sigma_sig = sqrt(var_batch(sig) + eps)
        beta      = mu + factor * noise_mu * Sigma_mu
        gamma     = sig + factor * noise_sig * Sigma_sig
        out       = gamma * (x - mu) / sig + beta

    Nothing is detached: gradients flow through ``mu``, ``sig`` and the Sigmas.

    Args:
        x: ``(N, C, *spatial)`` with ``N >= 2``.
        noise_mu, noise_sig: ``(N, C)`` standard normal draws.
        factor: scale of the perturbation (0: the identity up to float error).
        eps: added to the variances.

    Raises:
        ValueError: with a batch of one.
    """
    _check_batch(x.shape[0])
    xw = _work(x)
    mu, sig = style_stats(x, eps)
    shape = mu.shape
    sd_mu = (mu.var(dim=0, keepdim=True) + eps).sqrt()
    sd_sig = (sig.var(dim=0, keepdim=True) + eps).sqrt()
    beta = mu + factor * noise_mu.to(xw.dtype).reshape(shape) * sd_mu
    gamma = sig + factor * noise_sig.to(xw.dtype).reshape(shape) * sd_sig
    return _restyle(xw, mu, sig, beta, gamma).to(x.dtype)


def sample_dsu_args(shape: Sequence[int], options: Optional[DSUOptions] = None, *,
                    generator: Optional[torch.Generator] = None,
                    device: Optional[torch.device] = None) -> Args:
    """Draws one DSU call: the coin (probability ``p``), then ``noise_mu`` and ``noise_sig``,
    ``(N, C)`` standard normal each.

    Returns:
        keyword arguments of :func:`dsu`, or None when the coin says no.

    Raises:
        ValueError: with a batch of one (whatever the coin).
    """
    opts = options if options is not None else DSUOptions()
    n, c = int(shape[0]), int(shape[1])
    _check_batch(n)
    if not _coin(opts.p, generator):
        return None
    noise = _to(device, noise_mu=torch.randn(n, c, generator=generator),
                noise_sig=torch.randn(n, c, generator=generator))
    return {**noise, "factor": opts.factor, "eps": opts.eps}


# ----- EFDMix --------------------------------------------------------------------------------
def efdmix(x: torch.Tensor, *, perm: torch.Tensor, lam: PerSample) -> torch.Tensor:
    """EFDMix with its choices given (pure function). With ``x`` flattened to ``(N, C, L)``,
    ``tau_i`` the rank of position ``i`` in its row of ``x`` and ``y = x[perm]`` sorted per
    row, the EFDMix equation::

        o_i = x_i + (1 - lam) * y_sorted[tau_i] - (1 - lam) * <x_i>

    where ``<.>`` stops the gradient: the value is ``lam * x_i + (1 - lam) * y_sorted[tau_i]``
    (each value moves toward the partner's value of the same rank), the gradient reaches ``x``
    with weight 1 and the partner through its sorted values with weight ``1 - lam``. Ties are
    ranked by position (stable sort).

    Args:
        x: ``(N, C, *spatial)``.
        perm: ``(N,)`` index of each sample's partner.
        lam: mixing weight, ``(N,)`` or one number (1: ``x``; 0: the partner's sorted values in
            ``x``'s order).
    """
    n, c = x.shape[:2]
    flat = _work(x).reshape(n, c, -1)
    values_x, index_x = flat.detach().sort(dim=-1, stable=True)
    values_p = flat[perm].sort(dim=-1, stable=True).values
    shift = torch.zeros_like(flat).scatter(-1, index_x, values_p - values_x)
    out = flat + (1 - _per_sample(lam, flat)) * shift
    return out.reshape(x.shape).to(x.dtype)


def sample_efdmix_args(shape: Sequence[int], options: Optional[EFDMixOptions] = None, *,
                       generator: Optional[torch.Generator] = None,
                       device: Optional[torch.device] = None) -> Args:
    """Draws one EFDMix call: the coin, ``perm`` and ``lam`` as :func:`sample_mixstyle_args`.

    Returns:
        keyword arguments of :func:`efdmix`, or None when the coin says no.
    """
    return _mixing_args(shape, options if options is not None else EFDMixOptions(),
                        generator, device)


# ----- Permuted AdaIN ------------------------------------------------------------------------
def permuted_adain(x: torch.Tensor, *, perm: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Permuted AdaIN with its partners given (pure function)::

        out = AdaIN(x, sg(x[perm])) = sg(sig[perm]) * (x - mu) / sig + sg(mu[perm])

    The partner's statistics are the style target and carry no gradient (the authors' code,
    onuriel/PermutedAdaIN ``permutedAdaIN.py``, computes them on ``style_feat.detach()``); the
    content's do. That code also adds ``eps`` a second time to the content's std, a shift of
    1e-5 not reproduced here. Equal in value to :func:`~snc.ops.crossnorm.cross_norm` with the
    same ``perm`` and no crop (tested).
    """
    xw = _work(x)
    mu, sig = style_stats(x, eps)
    return _restyle(xw, mu, sig, mu.detach()[perm], sig.detach()[perm]).to(x.dtype)


def sample_permuted_adain_args(shape: Sequence[int],
                               options: Optional[PermutedAdaINOptions] = None, *,
                               generator: Optional[torch.Generator] = None,
                               device: Optional[torch.device] = None) -> Args:
    """Draws one Permuted AdaIN call: the coin (probability ``p``, 0.01 by default), then a
    random permutation ``perm`` of the batch.

    Returns:
        keyword arguments of :func:`permuted_adain`, or None when the coin says no.
    """
    opts = options if options is not None else PermutedAdaINOptions()
    if not _coin(opts.p, generator):
        return None
    perm = sample_partners(int(shape[0]), "random", generator)
    return {**_to(device, perm=perm), "eps": opts.eps}


# ----- the units -----------------------------------------------------------------------------
class StyleUnit(SwitchedUnit):
    """A style augmentation unit: acts only when training *and* active.

    Off by default (``active = False``); a controller switches units on for a forward pass,
    sets ``generator`` (the CPU generator the draws come from; torch's default one if None),
    ``controller`` and ``index``. When it acts, the unit draws its choices with ``sampler``
    (including the apply coin of probability ``options.p``) and applies ``function``. In eval
    mode, or when not active, or when the coin says no, it returns its input.

    Args:
        options: the unit's options (default: the paper's settings); keyword ``overrides``
            replace single fields, e.g. ``MixStyle(mix="crossdomain")``.
    """

    options_class: type
    sampler: Callable[..., Args]
    function: Callable[..., torch.Tensor]

    def __init__(self, options: Optional[Any] = None, **overrides: Any) -> None:
        super().__init__()
        base = options if options is not None else self.options_class()
        if not isinstance(base, self.options_class):
            raise TypeError(f"{type(self).__name__} takes {self.options_class.__name__}, got "
                            f"{type(base).__name__}")
        self.options = dataclasses.replace(base, **overrides) if overrides else base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.acts():
            return x
        if getattr(self.controller, "capture", False):
            raise ValueError(f"{type(self).__name__} (style unit {self.index}) draws on the "
                             "host and cannot be captured; train it eagerly (compile=false)")
        args = self.sampler(x.shape, self.options, generator=self.generator, device=x.device)
        return x if args is None else self.function(x, **args)

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.options, f.name)}"
                         for f in dataclasses.fields(self.options))


class MixStyle(StyleUnit):
    """MixStyle unit (:func:`mixstyle`; options :class:`~snc.ops.options.MixStyleOptions`)."""

    options_class = MixStyleOptions
    sampler = staticmethod(sample_mixstyle_args)
    function = staticmethod(mixstyle)


class DSU(StyleUnit):
    """DSU unit (:func:`dsu`; options :class:`~snc.ops.options.DSUOptions`). Raises with a
    batch of one when it is active in training."""

    options_class = DSUOptions
    sampler = staticmethod(sample_dsu_args)
    function = staticmethod(dsu)


class EFDMix(StyleUnit):
    """EFDMix unit (:func:`efdmix`; options :class:`~snc.ops.options.EFDMixOptions`)."""

    options_class = EFDMixOptions
    sampler = staticmethod(sample_efdmix_args)
    function = staticmethod(efdmix)


class PermutedAdaIN(StyleUnit):
    """Permuted AdaIN unit (:func:`permuted_adain`; options
    :class:`~snc.ops.options.PermutedAdaINOptions`)."""

    options_class = PermutedAdaINOptions
    sampler = staticmethod(sample_permuted_adain_args)
    function = staticmethod(permuted_adain)


STYLE_METHODS: Dict[str, Tuple[type, type]] = {
    "mixstyle": (MixStyleOptions, MixStyle),
    "dsu": (DSUOptions, DSU),
    "efdmix": (EFDMixOptions, EFDMix),
    "padain": (PermutedAdaINOptions, PermutedAdaIN),
}
"""Method name -> (options dataclass, unit class)."""


def style_unit(options: Any) -> StyleUnit:
    """A new unit of the method whose options ``options`` are (see :data:`STYLE_METHODS`).

    Raises:
        TypeError: if ``options`` is not one of the style options dataclasses.
    """
    for options_class, unit_class in STYLE_METHODS.values():
        if type(options) is options_class:
            return unit_class(options)
    names = ", ".join(o.__name__ for o, _ in STYLE_METHODS.values())
    raise TypeError(f"no style unit takes {type(options).__name__}; use one of {names}")
