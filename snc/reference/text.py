"""GloVe loaded as a run of bentrevett/pytorch-sentiment-analysis (notebook 4) without a
vector cache does it: the text file parsed before training.

snc parses ``glove.6B.100d.txt`` once and memory-maps the ``.npy`` cache written beside it
(:func:`snc.data.text.glove.load_glove`); each call here parses a fresh copy of the text file
(with snc's parser), where no cache exists yet, as every first run does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from snc.data.text.glove import load_glove


class GloveFirstParse:
    """Parses a fresh copy of the GloVe file ``source`` (``dim`` wide) under ``scratch`` per
    call and returns the seconds of the parse; :attr:`last` is the latest copy (now with its
    cache beside it) and :attr:`from_cache` whether a call found a cache (never, if sound)."""

    def __init__(self, source: Path, dim: int, scratch: Path) -> None:
        self.source, self.dim, self.scratch = Path(source), dim, Path(scratch)
        self.copies, self.from_cache = 0, False

    @property
    def last(self) -> Path:
        return self.scratch / str(self.copies) / self.source.name

    def __call__(self) -> float:
        self.copies += 1
        self.last.parent.mkdir(parents=True)
        shutil.copy2(self.source, self.last)
        g = load_glove(self.last, self.dim, md5=None, cache=True)
        self.from_cache = self.from_cache or g.from_cache
        return g.seconds
