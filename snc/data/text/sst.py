"""SST-2, the target domain of the paper's Table 4: the labelled 1,821-sentence binary test split.

Accepted inputs (``dataset.sst_path``):

* the PTB trees of the Stanford Sentiment Treebank: ``trainDevTestTrees_PTB.zip`` (read from
  ``trees/test.txt`` inside it) or the unpacked ``test.txt``. One tree per line; the root label
  gives the sentence label: 0-1 negative, 3-4 positive, 2 (neutral) dropped; 2,210 test trees
  give 1,821 sentences. The sentence is the leaves joined by spaces with the PTB escapes undone
  (``-LRB-``/``-RRB-`` -> brackets, PTB quotes -> ``"``), then tokenised like IMDb (one
  tokenizer for both domains).
* a tab-separated file ``sentence<TAB>label`` with labels 0/1 (SentEval's ``sentiment-test``,
  labelled copies of the split); an optional header line ``sentence<TAB>label`` is skipped.

GLUE's SST-2 ``test.tsv`` has no labels (``index<TAB>sentence``; label -1 in HF copies) and is
refused with the reason: accuracy cannot be computed on it.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path
from typing import List, Tuple

import numpy as np

from snc.data.text.imdb import TextSplit
from snc.errors import ConfigError

log = logging.getLogger("snc")

SST_TEST_SIZE = 1821
HOW_TO_GET = (
    "Get the labelled 1,821-sentence SST-2 test split: trainDevTestTrees_PTB.zip from "
    "https://nlp.stanford.edu/sentiment/ (point dataset.sst_path at the zip or at "
    "trees/test.txt), or SentEval's SST/binary/sentiment-test (sentence<TAB>label)")
_LEAF = re.compile(r"\(\d+ ([^()\s]+)\)")
_ROOT = re.compile(r"^\s*\((\d+)\s")
_PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{",
                "-RCB-": "}", "\\/": "/", "\\*": "*", "``": '"', "''": '"'}
GLUE_UNLABELLED = (
    "is GLUE's unlabelled SST-2 test file (index<TAB>sentence, or label -1): its labels are "
    "not published, so target accuracy cannot be computed on it. " + HOW_TO_GET)


def parse_tree(line: str) -> Tuple[int, str]:
    """``(root label 0-4, sentence)`` of one PTB-format sentiment tree."""
    m = _ROOT.match(line)
    if m is None:
        raise ValueError("not a PTB tree")
    words = [_PTB_ESCAPES.get(w, w) for w in _LEAF.findall(line)]
    if not words:
        raise ValueError("tree without leaves")
    return int(m.group(1)), " ".join(words)


def _read_lines(path: Path) -> List[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("trees/test.txt")]
            if not names:
                raise ConfigError(f"{path} has no trees/test.txt. {HOW_TO_GET}")
            data = zf.read(names[0])
    else:
        data = path.read_bytes()
    try:
        return io.StringIO(data.decode("utf-8")).read().splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not valid UTF-8 ({err.reason} at byte {err.start}): "
                          f"the file is damaged. {HOW_TO_GET}") from None


def read_sst(path: Path) -> TextSplit:
    """Reads the SST-2 target split from PTB trees or ``sentence<TAB>label`` (module docstring).

    Raises:
        ConfigError: a missing file (with where to get it), GLUE's unlabelled test file, a
            line that is neither format, or a file without a binary sentence.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"SST-2 file {path} is missing. {HOW_TO_GET}")
    lines = [ln for ln in _read_lines(path) if ln.strip()]
    if not lines:
        raise ConfigError(f"{path} is empty. {HOW_TO_GET}")
    texts: List[str] = []
    labels: List[float] = []
    skipped = {"neutral": 0, "empty": 0}
    if lines[0].lstrip().startswith("("):
        for number, line in enumerate(lines, 1):
            try:
                label, sentence = parse_tree(line)
            except ValueError as err:
                raise ConfigError(f"{path}:{number}: {err}; expected one PTB tree per line"
                                  ) from None
            if label == 2:
                skipped["neutral"] += 1
                continue
            if label not in (0, 1, 3, 4):
                raise ConfigError(f"{path}:{number}: root label {label}; SST labels are 0-4")
            texts.append(sentence)
            labels.append(1.0 if label >= 3 else 0.0)
    else:
        header = [h.strip().lower() for h in lines[0].split("\t")]
        if "index" in header and "label" not in header:
            raise ConfigError(f"{path} {GLUE_UNLABELLED}")
        if header == ["sentence", "label"]:
            lines = lines[1:]
        for number, line in enumerate(lines, 1):
            parts = line.rsplit("\t", 1)
            if len(parts) != 2:
                raise ConfigError(f"{path}:{number}: expected sentence<TAB>label, got "
                                  f"{line[:60]!r}")
            sentence, label = parts[0], parts[1].strip()
            if label == "-1":
                raise ConfigError(f"{path} {GLUE_UNLABELLED}")
            if label not in ("0", "1"):
                raise ConfigError(f"{path}:{number}: label {label!r}; SST-2 labels are 0 or 1")
            if not sentence.strip():
                skipped["empty"] += 1
                continue
            texts.append(sentence)
            labels.append(float(label))
    if not texts:
        raise ConfigError(f"{path} has no binary-labelled sentence. {HOW_TO_GET}")
    if len(texts) != SST_TEST_SIZE:
        log.warning("SST-2 %s: %d sentences; the paper's target is the 1,821-sentence test "
                    "split", path, len(texts))
    return TextSplit(texts, np.asarray(labels, dtype=np.float32), skipped, str(path))
