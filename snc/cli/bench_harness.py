"""The timing harness of every benchmark of ``scripts/bench.py``: variants timed interleaved.

A :class:`Variant` is a name, a zero-argument ``build`` (untimed: models, loaders, warm state)
returning the variant's step (a zero-argument callable), and the items (images, sentences) one
step handles. :func:`time_variants` builds the variants, runs the warm-up steps, then the timed
steps of all variants interleaved, so that slow drifts of a busy machine hit all alike, with
CUDA synchronisation around each step on GPUs. A step that measures itself returns its own
seconds (e.g. without untimed preparation); otherwise the wall time of the call counts.
:func:`print_table` prints one row per variant.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

Step = Callable[[], Optional[float]]


@dataclass
class Variant:
    """One timed alternative: ``build()`` returns its step; ``items`` per step."""

    name: str
    build: Callable[[], Step]
    items: float = 1.0


@dataclass
class Timing:
    """The timed steps of one variant; ``center`` is the median (CPU) or mean (CUDA)."""

    name: str
    step: Step
    items: float
    cuda: bool
    times: List[float] = field(default_factory=list)
    peak_mb: float = 0.0

    @property
    def center(self) -> float:
        return (statistics.mean if self.cuda else statistics.median)(self.times)

    @property
    def spread(self) -> float:
        return statistics.stdev(self.times) if len(self.times) > 1 else 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the allocator's peak since the last reset; CPU: the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], device: torch.device, own: bool = False) -> float:
    """Wall seconds of one call of ``fn``, synchronised on CUDA; with ``own``, the seconds
    ``fn`` returns where it returns some (a step that measures itself)."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return float(result) if own and result is not None else time.perf_counter() - start


def time_variants(variants: Iterable[Variant], device: torch.device, steps: int, warmup: int,
                  rounds: int = 1, lead: int = 0) -> Dict[str, Timing]:
    """Builds ``variants`` (in order), runs ``warmup`` untimed rounds, then ``steps`` timed
    steps of each, interleaved.

    With ``rounds=1`` the variants alternate step by step. With ``rounds > 1`` they alternate
    in blocks of ``ceil(steps / rounds)`` timed steps, each block after ``lead`` untimed steps:
    a reference whose DataLoader workers keep ``workers * prefetch_factor`` batches ahead would
    otherwise make them while the *other* variant is being timed (stealing its CPU on a busy
    machine) and then time its own steps on batches made for free. ``lead`` untimed steps let
    both the queue and the other variant's background work settle to the steady state, which
    the timed steps then measure.
    """
    cuda = device.type == "cuda"
    timings = {v.name: Timing(v.name, v.build(), v.items, cuda) for v in variants}
    for _ in range(warmup):
        for t in timings.values():
            t.step()

    def measure(t: Timing) -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t.times.append(timed(t.step, device, own=True))
        t.peak_mb = max(t.peak_mb, peak_memory_mb(device))

    if rounds <= 1:
        for _ in range(steps):
            for t in timings.values():
                measure(t)
        return timings
    per_block = -(-steps // rounds)
    for _ in range(rounds):
        for t in timings.values():
            for _ in range(lead):
                t.step()
            for _ in range(per_block):
                measure(t)
    return timings


Column = Tuple[str, int, str, Callable[[Timing], float]]  # header, width, format, value


def rate_columns(unit: str) -> List[Column]:
    """Steps/s and ``unit``/s (items per second)."""
    return [("steps/s", 10, ".2f", lambda t: 1 / t.center),
            (f"{unit}/s", 14, ".1f", lambda t: t.items / t.center)]


def print_table(timings: Dict[str, Timing], columns: Sequence[Column],
                name_width: int = 11) -> None:
    """One row per variant: the step time (median on CPU, mean on CUDA), its standard deviation
    and ``columns``."""
    cuda = any(t.cuda for t in timings.values())
    print(f"{'variant':<{name_width}}{'step ms' if cuda else 'median ms':>10}{'± ms':>8}"
          + "".join(f"{head:>{width}}" for head, width, _, _ in columns))
    for name, t in timings.items():
        print(f"{name:<{name_width}}{1000 * t.center:>10.1f}{1000 * t.spread:>8.1f}"
              + "".join(f"{value(t):>{width}{fmt}}" for _, width, fmt, value in columns))
