#!/usr/bin/env python
"""Same as ``python -m snc.cli.download_dg`` (documented there)."""

import sys

from snc.cli.download_dg import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
