"""Training objectives: small functions from (model, batch) to a loss, picked by name.

Official formulas (CrossNorm/SelfNorm ``cifar.py``, AugMix ``cifar.py``):

- ``ce``: cross-entropy.
- ``cn``: with probability ``prob`` the forward runs with ``active_num`` CN units on; CE on it.
- ``consistency``: with probability ``prob``, three forwards of the batch (clean, CN, CN; each CN
  forward draws its own units, partners and boxes), ``CE(clean) + consist_wt * JSD``;
  otherwise CE of the clean forward.
- ``augmix``: one forward of the 3B batch (clean, AugMix, AugMix) without CN,
  ``CE(clean) + jsd_weight * JSD``; with probability ``prob`` (when the model has CN units) two
  more B-sized forwards of the clean view with CN on add ``consist_wt * JSD(clean, CN1, CN2)``,
  the clean probabilities coming from the joint forward (official CIFAR). With
  ``cn.augmix_joint=true`` (official ImageNet, image-space CN) CN instead acts, with probability
  ``prob``, on the whole 3B batch of that single forward.

BatchNorm batches of the joint 3B forward: each process normalizes its own ``cat(clean,
aug1, aug2)`` (all views mixed) unless ``distributed.augmix_bn=official`` (with
``distributed.bn_batch``): then the rows of all processes are laid out as the official
DataParallel batch ``cat(clean, aug1, aug2)`` and cut into ``bn_batch``-row BatchNorm batches,
so most of them hold one view and the running statistics come from the first, clean, one
(:func:`snc.distributed.forward_views` declares the 3 views; :mod:`snc.distributed`).

Mixed labels (``augment=mixup|cutmix``): the labels of a batch may be
:class:`snc.augment.baselines.MixedLabels` ``(a, b, lam)``; every CE term of ``ce``, ``cn`` and
``consistency`` is then ``lam * CE(a) + (1 - lam) * CE(b)`` (the Mixup / CutMix references'
loss, equal to CE against their soft targets) via :func:`cross_entropy`; the JSD terms need no
labels. ``augmix`` refuses any ``augment`` option (see :func:`resolve_objective`).

``JSD(p0, p1, p2) = mean_i KL(p_i || M)``, ``M = clamp(mean_i p_i, 1e-7, 1)``, each KL summed
over classes and averaged over the batch; nothing is detached.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from snc.augment.baselines import MixedLabels
from snc.distributed import forward_views
from snc.errors import ConfigError
from snc.ops import CrossNormController


@dataclass
class ObjectiveConfig:
    consist_wt: float = 10.0
    jsd_weight: float = 12.0
    augmix_joint_cn: bool = False  # official ImageNet: CN on the whole 3B batch, no extra term


def jsd(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Jensen-Shannon consistency of several predictions (official formula)."""
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    mixture = torch.clamp(sum(probs) / len(probs), 1e-7, 1).log()
    return sum(F.kl_div(mixture, p, reduction="batchmean") for p in probs) / len(probs)


Result = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


def cross_entropy(logits: torch.Tensor, y) -> torch.Tensor:
    """CE of ``(B, K)`` logits against integer labels ``(B,)`` or :class:`MixedLabels`
    (``lam * CE(a) + (1 - lam) * CE(b)``); plain labels give exactly ``F.cross_entropy``."""
    if isinstance(y, MixedLabels):
        return y.lam * F.cross_entropy(logits, y.a) + (1 - y.lam) * F.cross_entropy(logits, y.b)
    return F.cross_entropy(logits, y)


def cn_consistency(model, x: torch.Tensor, clean_logits: torch.Tensor,
                   ctrl: CrossNormController) -> torch.Tensor:
    """JSD of the clean prediction and two CN forwards of ``x``, each drawing its own units,
    partners and boxes."""
    views = [clean_logits]
    for _ in range(2):
        with ctrl.activate():
            views.append(model(x))
    return jsd(views)


def flag(on) -> torch.Tensor:
    """The ``cn_on`` log value: a host bool (host draws) or the device boolean (capture)."""
    return on.float() if isinstance(on, torch.Tensor) else torch.tensor(float(on))


@contextlib.contextmanager
def running_stats_kept_unless(model: torch.nn.Module, on) -> Iterator[None]:
    """Forwards run inside the block leave the BatchNorm running statistics as they were
    unless ``on`` (a device boolean).

    In capture mode the consistency forwards always run (a compiled step has no branch on a
    draw) and their JSD term is masked by the coin; this keeps the running statistics (and
    SelfNorm's gate BatchNorm) exactly as when the official code skips those forwards.
    """
    if not isinstance(on, torch.Tensor):
        yield
        return
    bufs = [b for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in bufs]
    yield
    with torch.no_grad():
        for b, old in zip(bufs, saved, strict=True):
            b.data.copy_(torch.where(on, b, old))


def masked_term(on, term: torch.Tensor) -> torch.Tensor:
    """``term`` where the coin ``on`` (device boolean) is set, else 0 (no gradient)."""
    return torch.where(on, term, torch.zeros_like(term))


def ce(model, batch, ctrl: CrossNormController, cfg: ObjectiveConfig) -> Result:
    x, y = batch
    loss = cross_entropy(model(x), y)
    return loss, {"ce": loss.detach()}


def cn(model, batch, ctrl: CrossNormController, cfg: ObjectiveConfig) -> Result:
    x, y = batch
    with ctrl.step() as on:
        loss = cross_entropy(model(x), y)
    return loss, {"ce": loss.detach(), "cn_on": flag(on)}


def consistency(model, batch, ctrl: CrossNormController, cfg: ObjectiveConfig) -> Result:
    x, y = batch
    clean = model(x)
    loss = cross_entropy(clean, y)
    logs = {"ce": loss.detach(), "cn_on": torch.tensor(0.0)}
    if ctrl.capture:  # the two CN forwards always run; the coin masks their term
        on = ctrl.draw()
        with running_stats_kept_unless(model, on):
            term = masked_term(on, cn_consistency(model, x, clean, ctrl))
        logs.update(jsd=term.detach(), cn_on=flag(on))
        return loss + cfg.consist_wt * term, logs
    if ctrl.draw():
        term = cn_consistency(model, x, clean, ctrl)
        loss = loss + cfg.consist_wt * term
        logs.update(jsd=term.detach(), cn_on=torch.tensor(1.0))
    return loss, logs


def augmix(model, batch, ctrl: CrossNormController, cfg: ObjectiveConfig) -> Result:
    (x0, x1, x2), y = batch
    if cfg.augmix_joint_cn:  # official ImageNet image-CN + AugMix: partners mix images and views
        with ctrl.step() as on, forward_views(3):
            logits = model(torch.cat((x0, x1, x2)))
        l0, l1, l2 = torch.split(logits, len(x0))
        loss_ce = F.cross_entropy(l0, y)
        term = jsd((l0, l1, l2))
        return loss_ce + cfg.jsd_weight * term, {"ce": loss_ce.detach(), "jsd": term.detach(),
                                                 "cn_on": flag(on)}
    with forward_views(3):
        logits = model(torch.cat((x0, x1, x2)))
    l0, l1, l2 = torch.split(logits, len(x0))
    loss_ce = F.cross_entropy(l0, y)
    term = jsd((l0, l1, l2))
    loss = loss_ce + cfg.jsd_weight * term
    logs = {"ce": loss_ce.detach(), "jsd": term.detach(), "cn_on": torch.tensor(0.0)}
    if len(ctrl) and ctrl.capture:  # as in consistency: forwards always run, term masked
        on = ctrl.draw()
        with running_stats_kept_unless(model, on):
            cn_term = masked_term(on, cn_consistency(model, x0, l0, ctrl))
        logs.update(cn_jsd=cn_term.detach(), cn_on=flag(on))
        return loss + cfg.consist_wt * cn_term, logs
    if len(ctrl) and ctrl.draw():
        cn_term = cn_consistency(model, x0, l0, ctrl)
        loss = loss + cfg.consist_wt * cn_term
        logs.update(cn_jsd=cn_term.detach(), cn_on=torch.tensor(1.0))
    return loss, logs


REGISTRY: Dict[str, Callable[..., Result]] = {
    "ce": ce, "cn": cn, "consistency": consistency, "augmix": augmix,
}


# objectives that take MixedLabels (augment=mixup|cutmix) and single-view batches (any augment)
AUGMENT_OBJECTIVES = ("ce", "cn", "consistency")


def resolve_objective(name: str, *, cn_enabled: bool, augmix_enabled: bool,
                      augment: str = "none") -> str:
    """``auto`` picks as the official scripts do: augmix if AugMix is on, cn if CN is on, else
    ce. Explicit names are checked against the rest of the config.

    ``augment`` (a Table 1 baseline, :mod:`snc.augment.baselines`) works with ``ce``, ``cn`` and
    ``consistency``: it transforms the single-view batch the objective then uses (mixup/cutmix
    labels enter every CE term mixed). It is refused with AugMix (``augmix=on`` /
    ``objective=augmix``): AugMix builds its 3 views from the uint8 batch inside the loader,
    before the augment option runs, and mixing/cutting/attacking the 3 views consistently is
    neither a published baseline nor defined by the references.
    """
    if name == "auto":
        resolved = "augmix" if augmix_enabled else ("cn" if cn_enabled else "ce")
    elif name not in REGISTRY:
        raise ConfigError(f"unknown objective {name!r}; choose auto or one of "
                         f"{', '.join(REGISTRY)}")
    else:
        resolved = name
        if name in ("cn", "consistency") and not cn_enabled:
            raise ConfigError(f"objective={name} needs CrossNorm units: add cn=on")
        if name == "augmix" and not augmix_enabled:
            raise ConfigError("objective=augmix needs AugMix views: add augmix=on")
        if augmix_enabled and name != "augmix":
            raise ConfigError(f"augmix=on makes 3-view batches, which objective={name} cannot "
                             "use; use objective=augmix (or auto)")
    if augment != "none" and resolved not in AUGMENT_OBJECTIVES:
        raise ConfigError(
            f"augment={augment} cannot combine with objective={resolved}"
            + (" (augmix=on)" if augmix_enabled else "")
            + ": AugMix makes its 3 views in the loader and no reference defines "
            f"{augment} on them; use augmix=off, or augment=none with AugMix")
    return resolved
