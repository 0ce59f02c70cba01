"""Images/s of every corruption (severity 3), per-image NumPy generator vs batched tensor path.

    python scripts/bench_corruptions.py [--device cpu|cuda] [--n32 256] [--n224 4]
                                        [--family c|cbar|all] [--repeats 1]
                                        [--corruptions NAME ...]

At 32 px (CIFAR preset) and 224 px (ImageNet preset), for the -C corruptions and the -C-bar ones
(CIFAR-10-C-bar at 32 px, ImageNet-C-bar at 224 px): the NumPy path in one process (the
generation script adds processes) and :func:`snc.corruptions.batched.corrupt_batch` on
``--device`` with the whole batch at once, their ratio, and the estimated time of a 50,000-image
ImageNet-C (15 corruptions x 5 severities) and ImageNet-C-bar (10 x 5) set at 224 px, and of a
10,000-image CIFAR-10-C set at 32 px. Random images of the real shapes. ``--repeats`` keeps the best
of several timings of each cell (on a shared machine the best is the least disturbed one);
``--corruptions`` times only the named rows (the set estimates need every row of a set).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from snc.corruptions import ALL_CORRUPTIONS, CBAR_CORRUPTIONS, CORRUPTIONS, corrupt
from snc.corruptions.cbar import CBAR_ALL

SIZES = {"cifar": 32, "imagenet": 224}


def _rate_numpy(images, name, severity, preset, repeats=1) -> float:
    corrupt(images[:2], name, severity, preset=preset)  # warm caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        corrupt(images, name, severity, preset=preset)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def _rate_batched(images, name, severity, preset, device, repeats=1) -> float:
    import torch

    from snc.corruptions.batched import corrupt_batch

    x = torch.from_numpy(images).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    corrupt_batch(x[:2], name, severity, gen, preset=preset)  # warm caches and kernels
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        corrupt_batch(x, name, severity, gen, preset=preset)
        sync()
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def _fmt(rate) -> str:
    if rate is None:
        return f"{'-':>10}"
    return f"{rate:>10.1f}" if rate < 100 else f"{rate:>10.0f}"


def bench(names, sets, presets_of, severity, device, repeats=1):
    """``{name: {preset: (numpy img/s, batched img/s, batched?)}}``, printed as a table."""
    print(f"\n{'corruption':<32}" + "".join(
        f"{f'{SIZES[p]} px numpy':>14}{'batched':>10}{'ratio':>8}" for p in SIZES))
    rates = {}
    for name in names:
        row, cells = {}, []
        for preset in SIZES:
            if preset not in presets_of(name):
                cells.append(f"{'-':>14}{'-':>10}{'-':>8}")
                continue
            numpy_rate = _rate_numpy(sets[preset], name, severity, preset, repeats)
            fast = _rate_batched(sets[preset], name, severity, preset, device, repeats)
            row[preset] = (numpy_rate, fast)
            ratio = f"{fast / numpy_rate:>7.1f}x"
            cells.append(f"{_fmt(numpy_rate):>14}{_fmt(fast)}{ratio}")
        rates[name] = row
        print(f"{name:<32}{''.join(cells)}", flush=True)
    return rates


def _hours(rates, names, preset, n, column) -> float:
    return sum(5 * n / rates[name][preset][column] for name in names) / 3600


def _duration(hours: float) -> str:
    return f"{hours:.2f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device of the batched path (the NumPy path runs on the CPU)")
    parser.add_argument("--n32", type=int, default=256, help="images at 32 px")
    parser.add_argument("--n224", type=int, default=4, help="images at 224 px")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--family", choices=("c", "cbar", "all"), default="all",
                        help="-C corruptions, -C-bar corruptions or both")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timings per cell; the best one is kept")
    parser.add_argument("--corruptions", nargs="+", default=None, metavar="NAME",
                        choices=ALL_CORRUPTIONS + CBAR_ALL, help="only these rows")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    only = set(args.corruptions or ALL_CORRUPTIONS + CBAR_ALL)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    sets = {"cifar": rng.integers(0, 256, (args.n32, 32, 32, 3), dtype=np.uint8),
            "imagenet": rng.integers(0, 256, (args.n224, 224, 224, 3), dtype=np.uint8)}
    print(f"images/s at severity {args.severity}: NumPy per image (one CPU process) vs batched "
          f"on {device} ({args.n32} images at 32 px, {args.n224} at 224 px)")
    rates = {}
    if args.family in ("c", "all"):
        rates.update(bench([n for n in ALL_CORRUPTIONS if n in only], sets, lambda name: SIZES,
                           args.severity, device, args.repeats))
    if args.family in ("cbar", "all"):
        rates.update(bench([n for n in CBAR_ALL if n in only], sets,
                           lambda name: [p for p in SIZES if name in CBAR_CORRUPTIONS[p]],
                           args.severity, device, args.repeats))
    print()
    jobs = []
    if args.family in ("c", "all"):
        jobs += [("ImageNet-C, 50,000 images x 15 x 5 at 224 px", CORRUPTIONS, "imagenet",
                  50_000),
                 ("CIFAR-10-C, 10,000 images x 15 x 5 at 32 px", CORRUPTIONS, "cifar", 10_000)]
    if args.family in ("cbar", "all"):
        jobs += [("ImageNet-C-bar, 50,000 images x 10 x 5 at 224 px",
                  CBAR_CORRUPTIONS["imagenet"], "imagenet", 50_000)]
    for label, names, preset, n in jobs:
        if any(name not in rates for name in names):
            continue  # a row of the set was not timed
        numpy_h = _hours(rates, names, preset, n, 0)
        fast_h = _hours(rates, names, preset, n, 1)
        print(f"{label}: NumPy, one process {_duration(numpy_h)}; batched on {device} "
              f"{_duration(fast_h)} ({numpy_h / fast_h:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
