"""Feature inversion (Mahendran & Vedaldi, CVPR 2015) as the paper's appendix sets it.

Find an image ``x`` whose representation ``Phi(x)`` at one site matches a target ``Phi0``:

    loss = l2_weight * ||Phi(x) - Phi0||^2 / ||Phi0||^2     (normalised squared L2)
         + 1e-7 * sum(x^6)                                   (alpha-norm, alpha = 6)
         + 1e-8 * TV_beta(x)                                 (total variation, beta = 2)

minimised by SGD (lr 1e4, momentum 0.9) for 200 iterations with the lr divided by 10 every 40
(paper appendix). The network is frozen in eval mode; ``x`` lives in the network's input space
(normalised pixels) and is displayed de-normalised and clipped to [0, 1].

Two variants of the widely used PyTorch code (utkuozbulak/pytorch-cnn-visualizations,
``src/inverted_representation.py``, whose numbers the appendix matches) are options:

- ``tv="mv"`` (default): M&V's total variation, squared differences of vertically and
  horizontally adjacent pixels of each channel,
  ``sum_{c,i,j} ((x[c,i+1,j]-x[c,i,j])^2 + (x[c,i,j+1]-x[c,i,j])^2)^(beta/2)``.
  ``tv="vis"``: that code's term, which slices a 4-D ``(1, 3, H, W)`` tensor as if it were
  ``(3, H, W)`` and so differences adjacent **channels** and adjacent **rows** (no horizontal
  term).
- ``schedule="paper"`` (default): 200 steps, step ``i`` at ``lr * 0.1 ** (i // 40)``.
  ``schedule="vis"``: that code's loop, 201 steps (i = 0..200) dividing after every step with
  ``i % 40 == 0``, step 0 included: 1e4 once, then 1e3 (steps 1-40), 1e2, 10, 1, 0.1.
  That code also weighs the L2 term by 0.1 (``l2_weight=0.1``; the paper states no weight).

One addition: ``bounds`` (the figures set it unless ``clamp=false``) projects ``x`` back onto
the valid image range (pixels in [0, 1], in the input space) after every step. At CIFAR scale
(3,072 pixels) the normalised L2 has per-pixel gradients near 1e-2, so lr 1e4 moves pixels by
~100 per step and the alpha-norm (x^6) overflows within a few steps without it; with the box,
the first, large steps saturate and the later, smaller ones refine. M&V bound the pixel range
as well (their B constraint), as a penalty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from snc.errors import ConfigError

TV_KINDS = ("mv", "vis")
SCHEDULES = ("paper", "vis")


@dataclass(frozen=True)
class InversionOptions:
    """Settings of one inversion (defaults: the paper's appendix)."""

    lr: float = 1e4
    momentum: float = 0.9
    iterations: int = 200
    decay_every: int = 40
    decay: float = 0.1
    schedule: str = "paper"
    l2_weight: float = 1.0
    alpha: float = 6.0
    alpha_weight: float = 1e-7
    beta: float = 2.0
    tv_weight: float = 1e-8
    tv: str = "mv"
    bounds: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def __post_init__(self) -> None:
        if self.tv not in TV_KINDS:
            raise ConfigError(f"tv={self.tv!r}: choose one of {', '.join(TV_KINDS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}: choose one of "
                              f"{', '.join(SCHEDULES)}")
        if self.iterations < 1:
            raise ConfigError(f"iterations={self.iterations}: use at least 1")

    def with_(self, **kw) -> "InversionOptions":
        return replace(self, **kw)


def alpha_norm(x: torch.Tensor, alpha: float = 6.0) -> torch.Tensor:
    """``sum(x ** alpha)`` (the code's form; even alpha, so it equals ``sum |x|^alpha``)."""
    return x.pow(alpha).sum()


def total_variation(x: torch.Tensor, beta: float = 2.0, kind: str = "mv") -> torch.Tensor:
    """Total variation of ``x``: ``(N, C, H, W)``; see the module docstring for ``kind``."""
    if kind == "mv":
        dv = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        dh = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    elif kind == "vis":  # 3-D slicing of a 4-D tensor: channels and rows
        dv = x[:, 1:, :-1] - x[:, :-1, :-1]
        dh = x[:, :-1, 1:] - x[:, :-1, :-1]
    else:
        raise ConfigError(f"tv={kind!r}: choose one of {', '.join(TV_KINDS)}")
    return (dv.pow(2) + dh.pow(2)).pow(beta / 2).sum()


def normalised_l2(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum_n ||output_n - target_n||^2 / ||target_n||^2``: per sample, so that a batch of
    inversions is a batch of independent ones (the frozen eval-mode network treats samples
    independently, and the regularisers are sums)."""
    n = target.shape[0]
    err = (output - target).pow(2).reshape(n, -1).sum(1)
    return (err / target.pow(2).reshape(n, -1).sum(1).clamp_min(1e-30)).sum()


def learning_rates(opts: InversionOptions) -> List[float]:
    """The lr of every step."""
    if opts.schedule == "paper":
        return [opts.lr * opts.decay ** (i // opts.decay_every) for i in range(opts.iterations)]
    rates, lr = [], opts.lr
    for i in range(opts.iterations + 1):
        rates.append(lr)
        if i % opts.decay_every == 0:
            lr *= opts.decay
    return rates


@dataclass
class InversionResult:
    """``image``: the optimised network input ``(N, 3, H, W)``; ``losses``: the total loss
    before each step and once after the last; ``terms``: the last step's loss terms."""

    image: torch.Tensor
    losses: List[float] = field(default_factory=list)
    terms: dict = field(default_factory=dict)


def invert(represent: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor,
           init: torch.Tensor, opts: Optional[InversionOptions] = None) -> InversionResult:
    """Optimises the network input from ``init`` so that ``represent(x)`` matches ``target``.

    Args:
        represent: ``x -> Phi(x)``, the frozen network read at one site.
        target: ``Phi0`` (detached).
        init: the start ``(N, 3, H, W)`` in the network's input space (an image or noise).
        opts: the optimiser and loss settings (default: the paper's).

    Returns:
        :class:`InversionResult` (the image in the network's input space, same shape as init).
    """
    opts = opts or InversionOptions()
    target = target.detach()
    x = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.SGD([x], lr=opts.lr, momentum=opts.momentum)

    def loss_of(x: torch.Tensor):
        terms = {
            "l2": opts.l2_weight * normalised_l2(represent(x), target),
            "alpha": opts.alpha_weight * alpha_norm(x, opts.alpha),
            "tv": opts.tv_weight * total_variation(x, opts.beta, opts.tv),
        }
        return sum(terms.values()), terms

    losses: List[float] = []
    for lr in learning_rates(opts):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_of(x)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the inversion diverged at step {len(losses)} (loss {loss.item()}); lower lr")
        losses.append(float(loss.detach()))
        # the gradient of the image only (a frozen model's SelfNorm gates keep requires_grad)
        (x.grad,) = torch.autograd.grad(loss, [x])
        optimizer.step()
        if opts.bounds is not None:  # projection onto the valid image range (see the docstring)
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, opts.bounds[1]), opts.bounds[0]))
    with torch.no_grad():
        loss, terms = loss_of(x)
    losses.append(float(loss.detach()))
    return InversionResult(x.detach(), losses, {k: float(v) for k, v in terms.items()})


class _Stop(Exception):
    pass


class SiteReader:
    """``reader(x)``: the representation at one site module of a frozen model (a forward hook;
    the forward stops there). ``off=True`` switches the site's unit off: the site returns its
    input (paper Fig. 6)."""

    def __init__(self, model: nn.Module, module: nn.Module, off: bool = False) -> None:
        self.model, self.module, self.off = model, module, off

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        box = {}

        def hook(_module, inputs, output):
            box["out"] = inputs[0] if self.off else output
            raise _Stop

        handle = self.module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "out" not in box:
            raise ConfigError("the chosen site was not reached in the forward pass")
        return box["out"]
