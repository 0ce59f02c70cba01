"""Download CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich, ICLR 2019) into the data folder.

    python scripts/download_cifar_c.py cifar10 [--root data]
    python scripts/download_cifar_c.py cifar100 --root /datasets

Resumable (an interrupted download continues from data/CIFAR-10-C.tar.part), the archive and
every unpacked file are checked against their published MD5s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from snc.data.download import download_cifar_c


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=("cifar10", "cifar100"))
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--url", default=None, help="mirror URL of the .tar")
    parser.add_argument("--keep-archive", action="store_true")
    args = parser.parse_args(argv)
    out = download_cifar_c(args.name, args.root, url=args.url, keep_archive=args.keep_archive)
    print(f"{out} is complete and verified")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
