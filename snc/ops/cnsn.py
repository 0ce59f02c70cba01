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
device. All draws come from the controller's own generators: a CPU one in host mode (eager CPU:
flags and slices), one on the model's device in capture mode (GPUs, ``compile=true``: every unit
armed, gated and cropped by masks, so a compiled step is one graph for every draw). Neither
synchronises host and device, and both states are saved in checkpoints for exact resume.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from snc.ops.crossnorm import BOX_CANDIDATES, KEY_HIGH, CrossNorm
from snc.ops.options import ORDERS, check_choice
from snc.ops.switched import SwitchedUnit


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


def find_switched_units(model: nn.Module) -> List[nn.Module]:
    """Every unit a controller switches (CrossNorm, or a style method's
    :class:`~snc.ops.style.StyleUnit` in its slot), in network order."""
    return [m for m in model.modules() if isinstance(m, SwitchedUnit)]


class CrossNormController:
    """Chooses which CrossNorm units act in a training forward pass.

    Two ways to draw, one distribution:

    * **host** (default; eager CPU): the draws come from a CPU generator and switch the chosen
      units on with Python flags, the crops are slices. Fastest on CPU.
    * **capture** (:meth:`enable_capture`; GPUs and ``compile=true``): every draw comes from a
      generator on the model's device and is applied as masks and gathers of fixed shape. The
      draws of one training step (its Bernoulli coins, the ``active_num``-of-K choices, the
      partners' and channels' sort keys, the box candidates) are made by :meth:`begin_step`
      outside the compiled step, into tensors the step reads: no host synchronisation and no
      Python branch on a drawn value, so one captured graph serves every draw. :meth:`step`
      and :meth:`draw` then yield device booleans; every unit is armed and applies its draw
      through ``torch.where`` with its gate ``chosen & coin``.

    Args:
        units: the CrossNorm units of one model, in network order.
        active_num: how many distinct units are switched on per CN forward.
        prob: probability that a training step uses CN (drawn by :meth:`draw`).
        seed: seed of the controller's generators (the same on every rank: the same units
            fire on every rank, see :mod:`snc.distributed`).

    Raises:
        ValueError: if ``prob`` is outside [0, 1], or ``active_num`` is not between 1 and the
            number of units.

    Example::

        ctrl = model.cn_controller
        with ctrl.step():          # with probability prob: active_num units on
            loss = criterion(model(x), y)
    """

    forwards = 2
    """CN forwards per training step the capture plan holds (the consistency objectives run
    two)."""

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
        self.seed = int(seed)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        for i, unit in enumerate(self.units):
            unit.generator = self.generator
            unit.controller = self
            unit.index = i
        self.last_active: List[int] = []
        # capture mode (enable_capture)
        self.capture = False
        self.capacity = 1024  # rows (batch size of one forward) the partner keys cover
        self.channel_capacity = 4096  # channels the channel keys cover, when a unit needs them
        self.device_generator: Optional[torch.Generator] = None
        self.plan: Optional[Dict[str, torch.Tensor]] = None
        self._slot = 0  # the CN forward of this step that is running
        self._forwards_used = 0
        self._coins_used = 0
        self._coin: Optional[int] = None  # the coin gating the running forward (step())
        self._last_coin: Optional[int] = None
        self._explicit: Optional[set] = None  # activate(indices) in capture mode

    def __len__(self) -> int:
        return len(self.units)

    # ----- capture mode ------------------------------------------------------------------------
    def enable_capture(self, device: torch.device) -> None:
        """Draws on ``device`` from now on (see the class docstring). The device generator is
        seeded with the controller's seed.

        Raises:
            ValueError: naming the unit that has no capture form (a subclass with its own
                forward, e.g. the masked text units), with the fallback.
        """
        problem = self.capture_problem()
        if problem is not None:
            raise ValueError(problem)
        self.device = torch.device(device)
        self.device_generator = torch.Generator(device=self.device)
        self.device_generator.manual_seed(self.seed)
        self.capture = True
        self.plan = None

    def capture_problem(self) -> Optional[str]:
        """Why these units cannot draw on the device (None: they can): a subclass with its
        own forward (e.g. the masked text units), or ``beta > 2``, where Johnk's method accepts
        too few of the 128 box candidates (``1 / C(2 beta, beta)`` each) to keep the box
        distribution."""
        for unit in self.units:
            if type(unit).forward is not CrossNorm.forward:
                return (f"{type(unit).__name__} (CrossNorm unit {unit.index}) draws on the host "
                        "and cannot be captured; train it eagerly (compile=false)")
            if unit.options.beta > 2 and unit.options.crop != "neither":
                return (f"cn.beta={unit.options.beta}: the device box sampler keeps the official "
                        "distribution for beta <= 2 only; train eagerly (compile=false) or use "
                        "cn.beta <= 2")
        return None

    def _needs(self):
        channels = any(u.options.mode == "one_instance" or u.options.channel_shuffle
                       for u in self.units)
        boxes = any(u.options.crop != "neither" for u in self.units)
        return channels, boxes

    def begin_step(self) -> None:
        """Makes the draws of one training step on the device (capture mode; outside any
        compiled region): ``forwards`` coins, choice keys, partner/channel keys and box
        candidates. A no-op in host mode."""
        if not self.capture or not self.units:
            return
        g, dev = self.device_generator, self.device
        f, k = self.forwards, len(self.units)
        channels, boxes = self._needs()
        if self.plan is None:
            plan = {
                "coin": torch.empty(f, device=dev),
                "choice": torch.empty(f, k, dtype=torch.int64, device=dev),
                "rows": torch.empty(f, k, self.capacity, dtype=torch.int64, device=dev),
            }
            if channels:
                plan["channels"] = torch.empty(f, k, self.channel_capacity, dtype=torch.int64,
                                               device=dev)
            if boxes:  # 2 boxes (style, content) x candidates x (2 + up to 3 spatial dims)
                plan["boxes"] = torch.empty(f, k, 2, BOX_CANDIDATES, 5, device=dev)
            self.plan = plan
        plan = self.plan
        plan["coin"].uniform_(generator=g)
        for key in ("choice", "rows", "channels"):
            if key in plan:
                plan[key].random_(0, KEY_HIGH, generator=g)
        if "boxes" in plan:
            plan["boxes"].uniform_(generator=g)
        self._forwards_used = self._coins_used = 0

    def _fresh(self, counter: str, limit: int) -> int:
        """The next coin / forward index of the plan; draws a new plan in eager code when this
        step's are used up (a step run without :meth:`begin_step`)."""
        used = getattr(self, counter)
        if self.plan is None or used >= limit:
            if torch.compiler.is_compiling():
                raise RuntimeError(
                    "CrossNormController: call begin_step() before a compiled step (the draws "
                    f"are made outside the graph), and use at most {self.forwards} CN forwards "
                    "per step")
            self.begin_step()
            used = 0
        setattr(self, counter, used + 1)
        return used

    def unit_draws(self, index: int) -> Dict[str, torch.Tensor]:
        """The running forward's draws for unit ``index`` (capture mode): ``gate`` (0-d bool:
        the unit acts), ``rows`` (P,) sort keys of the partners, ``channels`` (P',) sort keys
        of the channels (or None), ``boxes`` (2, T, 5) box candidates (style, content)."""
        plan, s = self.plan, self._slot
        choice = plan["choice"][s]
        if self._explicit is not None:  # activate(indices): the armed units act
            gate = torch.ones((), dtype=torch.bool, device=choice.device)
        else:  # the unit is among the active_num with the least keys: uniform, no replacement
            gate = (choice < choice[index]).sum() < self.active_num
        if self._coin is not None:
            gate = gate & (plan["coin"][self._coin] < self.prob)
        return {"gate": gate, "rows": plan["rows"][s, index],
                "channels": plan["channels"][s, index] if "channels" in plan else None,
                "boxes": plan["boxes"][s, index] if "boxes" in plan else None}

    # ----- the draws -----------------------------------------------------------------------
    def draw(self):
        """One Bernoulli(prob) draw: does this training step use CN? A bool in host mode, a
        0-d bool tensor on the device in capture mode."""
        if self.capture:
            if not self.units or self.prob <= 0.0:
                return torch.zeros((), dtype=torch.bool, device=self.device)
            coin = self._fresh("_coins_used", self.forwards)
            self._last_coin = coin
            return self.plan["coin"][coin] < self.prob
        if not self.units or self.prob <= 0.0:
            return False
        if self.prob >= 1.0:
            return True
        return bool(torch.rand((), generator=self.generator) < self.prob)

    def choose(self) -> List[int]:
        """Indices of ``active_num`` distinct units, drawn uniformly without replacement
        (host mode)."""
        order = torch.randperm(len(self.units), generator=self.generator)
        return sorted(order[: self.active_num].tolist())

    @contextlib.contextmanager
    def activate(self, indices: Optional[Sequence[int]] = None,
                 _coin: Optional[int] = None) -> Iterator[List[int]]:
        """Switches units on for the forward pass run inside the block, then off again.

        Args:
            indices: which units; None draws ``active_num`` of them (:meth:`choose` in host
                mode; in capture mode every unit is armed and gated by the device draw).

        Yields:
            the indices switched on (capture mode with drawn units: every index, armed).
        """
        if self.capture and indices is None and self.units:
            self._slot = self._fresh("_forwards_used", self.forwards)
            self._coin = _coin
            chosen = list(range(len(self.units)))
        else:
            chosen = (list(indices) if indices is not None
                      else (self.choose() if self.units else []))
            if self.capture:  # explicit units: the host choice, always on
                self._slot = self._fresh("_forwards_used", self.forwards)
                self._coin = None
        for i in chosen:
            self.units[i].active = True
        if self.capture and indices is not None:
            self._explicit = set(chosen)
        self.last_active = chosen
        try:
            yield chosen
        finally:
            for i in chosen:
                self.units[i].active = False
            self._coin = None
            self._explicit = None

    @contextlib.contextmanager
    def step(self) -> Iterator:
        """With probability ``prob``, :meth:`activate` for the forward run inside the block.

        Yields:
            whether CN is on for this forward: a bool (host mode) or a 0-d bool tensor on the
            device (capture mode, where the units are armed and gated by it).
        """
        if self.capture and self.units:
            on = self.draw()
            if self.prob <= 0.0:
                yield on
                return
            with self.activate(_coin=self._last_coin):
                yield on
            return
        if self.draw():
            with self.activate():
                yield True
        else:
            self.last_active = []
            yield False

    def state_dict(self) -> dict:
        """The generators' states, for exact resume."""
        state = {"generator": self.generator.get_state()}
        if self.device_generator is not None:
            state["device_generator"] = self.device_generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.device_generator is not None and "device_generator" in state:
            self.device_generator.set_state(state["device_generator"])
            self._forwards_used = self._coins_used = self.forwards  # next use draws anew
