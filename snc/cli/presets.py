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

WRAPPED = 75  # a header line this long that ends mid-sentence goes on in the next one
_NEW_PART = re.compile(r"^([A-Z][\w/ -]{0,20}: |python )")  # "Settings: ...", a command
_SENTENCE_END = re.compile(r"(?<!Fig)(?<!Figs)(?<!Table)(?<!Eq)(?<!Sec)(?<!e\.g)(?<!i\.e)(?<!al)"
                           r"(?<!vs)\.(?=\s|$)")


def describe(path: Path) -> str:
    """The preset's title: its first header comment line (after ``# @package``), continued
    over the next lines while a long line breaks off mid-sentence (the comment was wrapped)."""
    words: List[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if not text or text.startswith(("@package", "Written by")) or (
                words and _NEW_PART.match(text)):
            if words:
                break
            continue
        words.append(text)
        wrapped = len(line) >= WRAPPED and not _SENTENCE_END.search(text)
        if not wrapped:
            break
    title = " ".join(words)
    match = _SENTENCE_END.search(title)
    return title[:match.end()] if match and len(words) > 1 else title


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
        known = sorted({group_of(p.stem) for p in (CONFIG_DIR / "experiment").glob("*.yaml")})
        print(f"snc: error: no preset matches {prefix!r}; give a table or figure ("
              f"{', '.join(g for g in known if g != 'demos and others')}) or a name prefix, "
              "or nothing to list them all", file=sys.stderr)
        return 2

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
