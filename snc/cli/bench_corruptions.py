"""Images/s of every corruption (severity 3) at 32 px (CIFAR preset) and 224 px (ImageNet preset),
for the -C corruptions and the -C-bar ones (CIFAR-10-C-bar at 32 px, ImageNet-C-bar at 224 px).

    python scripts/bench_corruptions.py [--n32 500] [--n224 8] [--family c|cbar|all]

Random images of the real shapes; one process (the generation script adds processes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from snc.corruptions import ALL_CORRUPTIONS, CBAR_CORRUPTIONS, corrupt
from snc.corruptions.cbar import CBAR_ALL


def _rate(images, name, severity, preset) -> float:
    corrupt(images[:2], name, severity, preset=preset)  # warm caches
    start = time.perf_counter()
    corrupt(images, name, severity, preset=preset)
    return len(images) / (time.perf_counter() - start)


def bench_cbar(sets, severity: int) -> None:
    """-C-bar images/s per corruption at its benchmark's size, and the time of a full set."""
    print(f"\n{'-C-bar corruption':<34}{'32 px img/s':>14}{'224 px img/s':>14}")
    total = {"cifar": 0.0, "imagenet": 0.0}
    for name in CBAR_ALL:
        cells = []
        for preset in ("cifar", "imagenet"):
            if name in CBAR_CORRUPTIONS[preset]:
                rate = _rate(sets[preset], name, severity, preset)
                total[preset] += 1 / rate
                cells.append(f"{rate:>14.1f}")
            else:
                cells.append(f"{'-':>14}")
        print(f"{name:<34}{''.join(cells)}")
    for preset, label, n in (("cifar", "CIFAR-10-C-bar (32 px)", 10_000),
                             ("imagenet", "ImageNet-C-bar (224 px)", 50_000)):
        hours = 5 * n * total[preset] / 3600
        print(f"{label}: {10 / total[preset]:.1f} img/s over its 10 corruptions; "
              f"10 x 5 severities of {n:,} images, one process: {hours:.2f} h")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n32", type=int, default=500, help="images at 32 px")
    parser.add_argument("--n224", type=int, default=8, help="images at 224 px")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--family", choices=("c", "cbar", "all"), default="all",
                        help="-C corruptions, -C-bar corruptions or both")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    sets = {"cifar": rng.integers(0, 256, (args.n32, 32, 32, 3), dtype=np.uint8),
            "imagenet": rng.integers(0, 256, (args.n224, 224, 224, 3), dtype=np.uint8)}
    if args.family in ("cbar", "all"):
        bench_cbar(sets, args.severity)
    if args.family == "cbar":
        return 0
    print(f"{'corruption':<20}{'32 px img/s':>14}{'224 px img/s':>14}")
    total32 = 0.0
    for name in ALL_CORRUPTIONS:
        rates = []
        for preset, images in sets.items():
            rates.append(_rate(images, name, args.severity, preset))
            if preset == "cifar" and name in ALL_CORRUPTIONS[:15]:
                total32 += 10_000 * 5 / rates[-1]
        print(f"{name:<20}{rates[0]:>14.0f}{rates[1]:>14.1f}")
    print(f"15 corruptions x 5 severities of 10,000 images at 32 px, one process: "
          f"{total32 / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
