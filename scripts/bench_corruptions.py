#!/usr/bin/env python
"""Same as ``python -m snc.cli.bench_corruptions`` (documented there)."""

import sys

from snc.cli.bench_corruptions import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
