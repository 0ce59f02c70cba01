#!/usr/bin/env python
"""Same as ``python -m snc.cli.make_corrupted`` (documented there)."""

import sys

from snc.cli.make_corrupted import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
