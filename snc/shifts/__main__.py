"""``python -m snc.shifts list | download <name> ...``: the registry on the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snc.console import error_line
from snc.errors import ConfigError
from snc.shifts.entries import get_shift, list_shifts
from snc.shifts.fetch import download

log = logging.getLogger("snc")


# ----------------------------------------------------------------------------- command line


def _table() -> str:
    rows = [("name", "images", "classes", "kind", "checksum", "folder")]
    for name in list_shifts():
        s = get_shift(name)
        rows.append((name, f"{s.num_images:,}", str(s.num_classes), s.kind,
                     "published" if s.checksums else ("-" if not s.published else "none"),
                     s.dirname))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The published distribution-shift test sets.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered sets")
    get = sub.add_parser("download", help="download, verify and unpack sets")
    get.add_argument("names", nargs="+")
    get.add_argument("--data-dir", type=Path, default=Path("data"))
    get.add_argument("--keep-archive", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(_table())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for name in args.names:
            out = download(get_shift(name), args.data_dir, keep_archive=args.keep_archive)
            print(f"{name}: {out}")
    except ConfigError as err:
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
