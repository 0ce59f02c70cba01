"""The paper presets (``configs/experiment``), grouped by table, with what each reproduces.

    python -m snc.cli.presets            # every preset, by table
    python -m snc.cli.presets table3     # the presets of one table (or any name prefix)
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

from snc.config import CONFIG_DIR


def describe(path: Path) -> str:
    """The preset's first explanatory header line (the one after ``# @package``/marker)."""
    for line in path.read_text().splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text and not text.startswith(("@package", "Written by")):
            return text
    return ""


def group_of(name: str) -> str:
    match = re.match(r"(imagenet_)?(table\d+|fig\d+)", name)
    return match.group(2) if match else "demos and others"


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prefix = argv[0] if argv else ""
    groups: Dict[str, List[Path]] = defaultdict(list)
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        if path.stem.startswith(prefix) or group_of(path.stem) == prefix:
            groups[group_of(path.stem)].append(path)
    if not groups:
        print(f"no preset matches {prefix!r}", file=sys.stderr)
        return 1

    def key(g: str):
        m = re.match(r"(table|fig)(\d+)", g)
        return (0, m.group(1), int(m.group(2))) if m else (1, g, 0)

    for group in sorted(groups, key=key):
        print(f"{group} ({len(groups[group])} presets)")
        width = max(len(p.stem) for p in groups[group])
        for path in groups[group]:
            print(f"  {path.stem.ljust(width)}  {describe(path)}")
    print("run one with: python train.py experiment=<name>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
