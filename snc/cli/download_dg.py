"""Download a domain-generalization benchmark into the data folder, in DomainBed's layout.

    python scripts/download_dg.py pacs [--root data]
    python scripts/download_dg.py all --root /datasets --keep-archives

Sets: pacs, vlcs, office_home, terra_incognita, domain_net (see docs/dg_datasets.md). Archives
go to <root>/downloads/ (resumable; checked against their published checksums where there are
any); an archive fetched by hand and put there is used as it is. The set lands in
<root>/<folder>/<domain>/<class>/; a complete folder is left alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snc.atomic import read_marker
from snc.console import error_line, is_expected
from snc.data.dg_sources import DOMAIN_SETS, MARKER, download_domain_set


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=(*DOMAIN_SETS, "all"))
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--keep-archives", action="store_true",
                        help="keep the downloaded archives in <root>/downloads/")
    parser.add_argument("--url", action="append", default=[], metavar="FILENAME=URL",
                        help="a mirror for one archive (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    urls = {}
    for item in args.url:
        filename, sep, url = item.partition("=")
        if not sep:
            parser.error(f"--url {item!r}: write FILENAME=URL, e.g. PACS.zip=https://...")
        urls[filename] = url
    names = list(DOMAIN_SETS) if args.name == "all" else [args.name]
    for name in names:
        mine = {f: u for f, u in urls.items()
                if f in {a.filename for a in DOMAIN_SETS[name].archives}}
        try:
            root = download_domain_set(name, args.root, urls=mine,
                                       keep_archives=args.keep_archives)
        except Exception as err:  # one line for input errors, a traceback for bugs
            if not is_expected(err):
                raise
            print(error_line(err), file=sys.stderr, flush=True)
            return 1
        counts = read_marker(root / MARKER).get("images", {})
        print(f"{root}: " + ", ".join(f"{d} {n}" for d, n in counts.items()))
    unused = set(urls) - {a.filename for s in (DOMAIN_SETS[n] for n in names) for a in s.archives}
    if unused:
        print(f"note: no archive named {', '.join(sorted(unused))} in {', '.join(names)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
