#!/usr/bin/env python
"""Same as ``python -m snc.cli.report`` (documented there)."""

import sys

from snc.cli.report import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
