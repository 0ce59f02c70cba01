"""The vocabulary: the most frequent training tokens plus ``<unk>`` and ``<pad>``.

As torchtext's legacy ``Field.build_vocab(max_size=25_000)`` in the tutorial: specials first
(``<unk>`` = 0, ``<pad>`` = 1), then tokens by descending frequency, ties in string order, at
most ``max_size`` of them, minimum frequency 1. Case-sensitive.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, Iterable, List, Sequence

import numpy as np

log = logging.getLogger("snc")

UNK, PAD = "<unk>", "<pad>"


class Vocab:
    """Token <-> index.

    Attributes:
        itos: index -> token (``itos[0] = "<unk>"``, ``itos[1] = "<pad>"``).
        stoi: token -> index.
        unk_idx, pad_idx: 0 and 1.
    """

    unk_idx = 0
    pad_idx = 1

    def __init__(self, itos: Sequence[str]) -> None:
        self.itos: List[str] = list(itos)
        if self.itos[:2] != [UNK, PAD]:
            raise ValueError("a vocabulary starts with <unk>, <pad>")
        self.stoi: Dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int) -> "Vocab":
        """Counts tokens and keeps the ``max_size`` most frequent (fewer if the corpus has
        fewer distinct tokens; that is logged, not an error)."""
        counter: Counter = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        counter.pop(UNK, None)
        counter.pop(PAD, None)
        ranked = sorted(counter.items(), key=lambda kv: kv[0])
        ranked.sort(key=lambda kv: kv[1], reverse=True)  # stable: ties stay in string order
        if len(ranked) < max_size:
            log.info("vocabulary: the training split has %d distinct tokens, fewer than "
                     "vocab_size=%d; all are kept (%d rows)", len(ranked), max_size,
                     len(ranked) + 2)
        return cls([UNK, PAD] + [t for t, _ in ranked[:max_size]])

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """int32 indices, ``<unk>`` for unknown tokens."""
        get = self.stoi.get
        return np.fromiter((get(t, 0) for t in tokens), dtype=np.int32, count=len(tokens))
