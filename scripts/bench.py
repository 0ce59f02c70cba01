#!/usr/bin/env python
"""Same as ``python -m snc.cli.bench`` (documented there)."""

import sys

from snc.cli.bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
