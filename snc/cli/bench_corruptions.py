"""Images/s of every corruption (severity 3) at 32 px (CIFAR preset) and 224 px (ImageNet preset).

    python scripts/bench_corruptions.py [--n32 500] [--n224 8]

Random images of the real shapes; one process (the generation script adds processes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from snc.data.corruptions import ALL_CORRUPTIONS, corrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n32", type=int, default=500, help="images at 32 px")
    parser.add_argument("--n224", type=int, default=8, help="images at 224 px")
    parser.add_argument("--severity", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    sets = {"cifar": rng.integers(0, 256, (args.n32, 32, 32, 3), dtype=np.uint8),
            "imagenet": rng.integers(0, 256, (args.n224, 224, 224, 3), dtype=np.uint8)}
    print(f"{'corruption':<20}{'32 px img/s':>14}{'224 px img/s':>14}")
    total32 = 0.0
    for name in ALL_CORRUPTIONS:
        rates = []
        for preset, images in sets.items():
            corrupt(images[:2], name, args.severity, preset=preset)  # warm caches
            start = time.perf_counter()
            corrupt(images, name, args.severity, preset=preset)
            elapsed = time.perf_counter() - start
            rates.append(len(images) / elapsed)
            if preset == "cifar" and name in ALL_CORRUPTIONS[:15]:
                total32 += 10_000 * 5 / rates[-1]
        print(f"{name:<20}{rates[0]:>14.0f}{rates[1]:>14.1f}")
    print(f"15 corruptions x 5 severities of 10,000 images at 32 px, one process: "
          f"{total32 / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
