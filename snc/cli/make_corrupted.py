"""Build a corrupted copy of a test set in the published layout (CIFAR-C or ImageNet-C style).

Examples::

    # CIFAR-10 test set (torchvision files under data/) -> data/CIFAR-10-C-generated
    python scripts/make_corrupted.py --source cifar10 --out data/CIFAR-10-C-generated
    # your own arrays (npz with test_images uint8 (N,H,W,3) and test_labels)
    python scripts/make_corrupted.py --source my_set.npz --out data/my_set-C --preset cifar
    # an ImageNet-style class-folder validation set -> <corruption>/<severity>/<class>/*.JPEG
    python scripts/make_corrupted.py --source /data/imagenet/val --layout imagenet \\
        --out data/ImageNet-C-generated

    # on a GPU: the batched tensor corruptions (snc.corruptions.batched)
    python scripts/make_corrupted.py --source cifar10 --out data/CIFAR-10-C-gpu --device cuda

The run is resumable (finished corruption files are skipped) and writes manifest.json with a
SHA-256 per file and "generated": true.

--device cpu (the default) is the exact per-image NumPy generator, in --workers processes: the
sets and hashes of earlier versions. --device cuda runs the batched corruptions on the GPU,
--batch-size images at a time (halved and logged on out-of-memory), one process; their random
draws differ from the NumPy ones (same distributions), and the manifest records the backend, so
the two never mix in one folder. The draws are made per block of 32 images of the set, so the
output does not depend on --batch-size (a set may be resumed with another one). --device auto
picks cuda when available, else the exact CPU path. Every -C and -C-bar corruption has a
batched form.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from snc.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, PRESETS
from snc.corruptions.batched import resolve_device
from snc.corruptions.cbar import CBAR_ALL
from snc.corruptions.sets import (
    default_workers,
    generate_cifar_style,
    generate_imagenet_style,
)


def load_arrays(source: str, data_dir: Path):
    """(images, labels) of a CIFAR test set or an npz file."""
    if source in ("cifar10", "cifar100"):
        from snc.data.cifar import load_cifar

        _, (images, labels) = load_cifar(source, data_dir, download=False)
        return images, labels
    path = Path(source)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return f["test_images"], f["test_labels"]
    raise SystemExit(f"--source {source!r}: use cifar10, cifar100, an .npz file, or a folder "
                     "with --layout imagenet")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True,
                        help="cifar10 | cifar100 | path/to/arrays.npz | class-folder directory")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--layout", choices=("cifar", "imagenet"), default="cifar")
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="parameter table (default: cifar for the cifar layout, "
                             "imagenet for the imagenet layout)")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS),
                        choices=ALL_CORRUPTIONS + CBAR_ALL, metavar="NAME")
    parser.add_argument("--extra", action="store_true", help="also the 4 extra corruptions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="cpu: exact per-image generator (default); cuda: batched on the "
                             "GPU; auto: cuda when available, else cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per batch on the GPU (default: 500 for the cifar layout, "
                             "64 for the imagenet layout)")
    parser.add_argument("--no-resize-crop", action="store_true",
                        help="imagenet layout: skip Resize(256)+CenterCrop(224)")
    args = parser.parse_args(argv)
    corruptions = list(dict.fromkeys(args.corruptions + (
        ["speckle_noise", "gaussian_blur", "spatter", "saturate"] if args.extra else [])))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    print(f"corrupting on {device}"
          + (" (exact per-image generator)" if device.type == "cpu" else " (batched)"))
    start = time.time()
    if args.layout == "imagenet":
        manifest = generate_imagenet_style(
            Path(args.source), args.out, corruptions=corruptions,
            preset=args.preset or "imagenet", seed=args.seed, workers=args.workers,
            resize_crop=not args.no_resize_crop, device=device.type,
            chunk=args.batch_size or 64)
    else:
        images, labels = load_arrays(args.source, args.data_dir)
        manifest = generate_cifar_style(
            images, labels, args.out, corruptions=corruptions, preset=args.preset or "cifar",
            seed=args.seed, workers=args.workers, source=str(args.source), device=device.type,
            batch_size=args.batch_size or 500)
    print(f"wrote {args.out} ({manifest['num_images']} images x {len(corruptions)} corruptions "
          f"x 5 severities) in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
