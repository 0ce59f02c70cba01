"""The CNSN unit (CrossNorm then SelfNorm at one site) and the controller that switches CN on.

Official counterpart: ``CNSN`` in the official ``cnsn.py`` (CN, if active, then SN) and the
model-level ``_enable_cross_norm``: per training step, with probability ``cn_prob`` the forward
is called with CN on, and the model switches on ``active_num`` distinct CN units drawn uniformly
without replacement, for that one forward.

Difference from the official code: the official units clear their own flag inside the forward,
which under ``nn.DataParallel`` happens on the replicas, so the flags stay set on the master copy
(they accumulate from step to step). Here the controller sets the flags *before* the forward and
clears them after it returns, on the modules the caller owns, so DataParallel replicas (which copy
the flags when they are made) and DDP processes (each with its own controller) behave like one
device. All draws come from the controller's own CPU generator: no host-device synchronisation,
and the state is saved in checkpoints for exact resume.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence

import torch
from torch import nn

from snc.ops.crossnorm import CrossNorm
from snc.ops.options import ORDERS, check_choice


class CNSN(nn.Module):
    """One site: CrossNorm and/or SelfNorm (or SE), applied in ``order``.

    Args:
        cn: the CrossNorm unit, or None.
        sn: the recalibration unit (``SelfNorm`` or ``SqueezeExcitation``), or None.
        order: ``cn_sn`` (official, paper default) or ``sn_cn`` (paper Table 7).
    """

    def __init__(
        self, cn: Optional[CrossNorm] = None, sn: Optional[nn.Module] = None, order: str = "cn_sn"
    ) -> None:
        super().__init__()
        check_choice("CNSN order", order, ORDERS)
        if cn is None and sn is None:
            raise ValueError("a CNSN unit needs a CrossNorm or a SelfNorm/SE unit")
        self.cn = cn
        self.sn = sn
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = (self.cn, self.sn) if self.order == "cn_sn" else (self.sn, self.cn)
        if first is not None:
            x = first(x)
        if second is not None:
            x = second(x)
        return x


def find_cross_norm_units(model: nn.Module) -> List[CrossNorm]:
    """Every CrossNorm module of ``model``, in registration (network) order."""
    return [m for m in model.modules() if isinstance(m, CrossNorm)]


class CrossNormController:
    """Chooses which CrossNorm units act in a training forward pass.

    Args:
        units: the CrossNorm units of one model, in network order.
        active_num: how many distinct units are switched on per CN forward.
        prob: probability that a training step uses CN (drawn by :meth:`draw`).
        seed: seed of the controller's CPU generator.

    Raises:
        ValueError: if ``prob`` is outside [0, 1], or ``active_num`` is not between 1 and the
            number of units.

    Example::

        ctrl = model.cn_controller
        with ctrl.step():          # with probability prob: active_num units on
            loss = criterion(model(x), y)
    """

    def __init__(
        self, units: Sequence[CrossNorm], active_num: int = 1, prob: float = 0.5, seed: int = 0
    ) -> None:
        self.units = list(units)
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"cn.prob must be in [0, 1], got {prob}")
        if self.units and not 1 <= int(active_num) <= len(self.units):
            raise ValueError(
                f"cn.active_num={active_num} but the model has {len(self.units)} CrossNorm units; "
                f"use 1 <= cn.active_num <= {len(self.units)} (or place CN in more blocks)"
            )
        self.active_num = int(active_num)
        self.prob = float(prob)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        for unit in self.units:
            unit.generator = self.generator
        self.last_active: List[int] = []

    def __len__(self) -> int:
        return len(self.units)

    def draw(self) -> bool:
        """One Bernoulli(prob) draw: does this training step use CN?"""
        if not self.units or self.prob <= 0.0:
            return False
        if self.prob >= 1.0:
            return True
        return bool(torch.rand((), generator=self.generator) < self.prob)

    def choose(self) -> List[int]:
        """Indices of ``active_num`` distinct units, drawn uniformly without replacement."""
        order = torch.randperm(len(self.units), generator=self.generator)
        return sorted(order[: self.active_num].tolist())

    @contextlib.contextmanager
    def activate(self, indices: Optional[Sequence[int]] = None) -> Iterator[List[int]]:
        """Switches units on for the forward pass run inside the block, then off again.

        Args:
            indices: which units; None draws ``active_num`` of them with :meth:`choose`.

        Yields:
            the indices switched on.
        """
        chosen = list(indices) if indices is not None else (self.choose() if self.units else [])
        for i in chosen:
            self.units[i].active = True
        self.last_active = chosen
        try:
            yield chosen
        finally:
            for i in chosen:
                self.units[i].active = False

    @contextlib.contextmanager
    def step(self) -> Iterator[bool]:
        """With probability ``prob``, :meth:`activate` for the forward run inside the block.

        Yields:
            whether CN is on for this forward.
        """
        if self.draw():
            with self.activate():
                yield True
        else:
            self.last_active = []
            yield False

    def state_dict(self) -> dict:
        """The generator state, for exact resume."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
