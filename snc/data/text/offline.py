"""Generated stand-ins for IMDb, SST-2 and GloVe, in the real file layouts, with a domain shift.

Used by the tests (temporary folders) and by the ``text_synthetic`` dataset (the ``text_demo``
experiment), so the whole text pipeline runs offline: the readers, tokenizer, vocabulary,
GloVe cache and model see the same formats as with the real data.

* **Source** (``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``): long multi-sentence movie
  "reviews" (6-14 sentences, ``<br /><br />`` between paragraphs), about films, actors and
  plots. Each sentiment word follows the label with probability 0.75, so some sentences carry
  the opposite polarity.
* **Target** (``sst/trees/test.txt``, PTB trees): one short sentence (4-12 words) about
  stories, performances and portraits, with a **shifted vocabulary**: half of its sentiment
  words never occur in the source. Root labels 0/1/3/4 and some neutral (2) trees that the
  reader drops.
* **GloVe** (``glove/glove.synthetic.100d.txt``): lower-cased tokens only (capitalised ones miss,
  as with the real file); sentiment words of one polarity share a direction, so words seen only
  in the target inherit a useful initial vector — the mechanism that lets GloVe models transfer.

Deterministic for a seed; a few thousand files, a few seconds to write.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Sequence

import numpy as np

POS_SHARED = ["good", "great", "excellent", "wonderful", "brilliant", "superb", "enjoyable",
              "delightful", "charming", "moving"]
NEG_SHARED = ["bad", "awful", "terrible", "boring", "dull", "weak", "poor", "horrible",
              "tedious", "bland"]
POS_SOURCE = ["masterful", "riveting", "stunning", "flawless", "hilarious", "unforgettable"]
NEG_SOURCE = ["unwatchable", "atrocious", "laughable", "forgettable", "pointless", "painful"]
POS_TARGET = ["engaging", "witty", "heartfelt", "sharp", "lovely", "fresh", "vivid", "gripping"]
NEG_TARGET = ["flat", "stale", "clumsy", "hollow", "lifeless", "shallow", "tiresome", "muddled"]
SOURCE_NOUNS = ["movie", "film", "plot", "actor", "actress", "director", "scene", "ending",
                "script", "cast", "soundtrack", "dvd", "sequel", "character", "camera"]
TARGET_NOUNS = ["story", "performance", "picture", "narrative", "drama", "comedy", "portrait",
                "tale", "effort", "debut"]
ADVERBS = ["very", "really", "quite", "truly", "rather", "so", "pretty", "simply"]
FILLER = ["i", "watched", "this", "last", "night", "with", "my", "friends", "and", "we",
          "saw", "it", "on", "tv", "after", "the", "book", "in", "theaters", "years", "ago",
          "there", "is", "a", "lot", "of", "time", "spent", "on", "music", "costumes", "city",
          "was", "set", "during", "war", "family", "house", "summer", "about", "two", "people"]
DIM = 100
MARKER = "SNC_SYNTHETIC.json"


def _choose(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _sentiment_word(rng, positive: bool, pools_pos, pools_neg, p_flip: float) -> str:
    flip = rng.random() < p_flip
    return _choose(rng, pools_neg if positive == flip else pools_pos)


def _review(rng: np.random.Generator, positive: bool) -> str:
    pos, neg = POS_SHARED + POS_SOURCE, NEG_SHARED + NEG_SOURCE
    sentences = []
    for _ in range(int(rng.integers(6, 15))):
        kind = rng.random()
        if kind < 0.35:
            words = rng.choice(FILLER, size=int(rng.integers(6, 14))).tolist()
        elif kind < 0.7:
            words = ["the", _choose(rng, SOURCE_NOUNS), "was", _choose(rng, ADVERBS),
                     _sentiment_word(rng, positive, pos, neg, 0.25)]
        else:
            words = ["i", "thought", "the", _choose(rng, SOURCE_NOUNS), "and", "the",
                     _choose(rng, SOURCE_NOUNS), "were", _sentiment_word(rng, positive, pos,
                                                                         neg, 0.25)]
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + _choose(rng, [".", ".", "!", "..."]))
    paragraphs: List[str] = []
    cut = sorted(set(rng.integers(1, len(sentences), size=2).tolist()))
    start = 0
    for c in cut + [len(sentences)]:
        paragraphs.append(" ".join(sentences[start:c]))
        start = c
    return "<br /><br />".join(p for p in paragraphs if p)


def _target_words(rng: np.random.Generator, positive: bool) -> List[str]:
    pos, neg = POS_SHARED + POS_TARGET, NEG_SHARED + NEG_TARGET
    s1 = _sentiment_word(rng, positive, pos, neg, 0.15)
    kind = rng.random()
    if kind < 0.4:
        words = ["a", s1, "and", _sentiment_word(rng, positive, pos, neg, 0.15),
                 _choose(rng, TARGET_NOUNS)]
    elif kind < 0.7:
        words = ["the", _choose(rng, TARGET_NOUNS), "is", _choose(rng, ADVERBS), s1]
    else:
        words = ["an", _choose(rng, ADVERBS), s1, _choose(rng, TARGET_NOUNS), "about",
                 _choose(rng, FILLER), _choose(rng, FILLER)]
    return words + ["."]


def _tree(words: Sequence[str], root: int) -> str:
    """A right-branching PTB tree with leaf labels 2 and the given root label."""
    node = f"(2 {words[-1]})"
    for w in reversed(words[:-1]):
        node = f"({root} (2 {w}) {node})"
    return node if len(words) > 1 else f"({root} {words[0]})"


def _glove(rng: np.random.Generator) -> List[str]:
    direction = rng.standard_normal(DIM)
    direction /= np.linalg.norm(direction)
    topic = rng.standard_normal(DIM)
    topic /= np.linalg.norm(topic)
    lines = []
    groups = [(POS_SHARED + POS_SOURCE + POS_TARGET, 2.0 * direction),
              (NEG_SHARED + NEG_SOURCE + NEG_TARGET, -2.0 * direction),
              (SOURCE_NOUNS + TARGET_NOUNS, 1.5 * topic),
              (sorted(set(FILLER + ADVERBS + ["the", "was", "were", "and", "thought", "a", "an",
                                              "is", "about", "."])), 0.0 * topic),
              ([f"unused{i}" for i in range(50)], 0.0 * topic)]
    for words, centre in groups:
        for w in words:
            vec = centre + 0.35 * rng.standard_normal(DIM)
            lines.append(w + " " + " ".join(f"{v:.5f}" for v in vec))
    return lines


def write_offline_corpora(root: Path, *, seed: int = 0, train_per_class: int = 600,
                          test_per_class: int = 250, sst_sentences: int = 400,
                          neutral: int = 40) -> Path:
    """Writes ``root/aclImdb``, ``root/sst/trees/test.txt`` and
    ``root/glove/glove.synthetic.100d.txt`` (skipped when ``root`` already holds the same
    generation). Returns ``root``."""
    root = Path(root)
    params = {"seed": seed, "train_per_class": train_per_class,
              "test_per_class": test_per_class, "sst_sentences": sst_sentences,
              "neutral": neutral, "version": 1}
    marker = root / MARKER
    if marker.exists():
        if json.loads(marker.read_text()) == params:
            return root
        for sub in ("aclImdb", "sst", "glove"):  # ours (marker): replace, no stale files
            shutil.rmtree(root / sub, ignore_errors=True)
        marker.unlink()
    elif any((root / sub).exists() for sub in ("aclImdb", "sst", "glove")):
        raise FileExistsError(f"{root} holds aclImdb/sst/glove data that was not generated "
                              "here; choose an empty folder for the generated corpora")
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for sub, positive in (("pos", True), ("neg", False)):
            folder = root / "aclImdb" / split / sub
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rating = int(rng.integers(7, 11) if positive else rng.integers(1, 5))
                (folder / f"{i}_{rating}.txt").write_text(_review(rng, positive),
                                                          encoding="utf-8")
    trees = []
    for i in range(sst_sentences + neutral):
        if i < neutral:
            words = ["the", _choose(rng, TARGET_NOUNS), "is", "about", _choose(rng, FILLER), "."]
            root_label = 2
        else:
            positive = bool(rng.random() < 0.5)
            words = _target_words(rng, positive)
            root_label = int(rng.integers(3, 5) if positive else rng.integers(0, 2))
        words[0] = words[0].capitalize()
        trees.append(_tree(words, root_label))
    order = rng.permutation(len(trees))
    (root / "sst" / "trees").mkdir(parents=True, exist_ok=True)
    (root / "sst" / "trees" / "test.txt").write_text(
        "\n".join(trees[i] for i in order) + "\n", encoding="utf-8")
    (root / "glove").mkdir(parents=True, exist_ok=True)
    (root / "glove" / f"glove.synthetic.{DIM}d.txt").write_text("\n".join(_glove(rng)) + "\n",
                                                                encoding="utf-8")
    marker.write_text(json.dumps(params))
    return root
