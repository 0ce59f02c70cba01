"""Tokenisation: spaCy's English rules, no lower-casing (the tutorial's ``tokenize='spacy'``).

``spacy.blank("en")`` gives the rule-based English tokenizer without any model download (the
same English rules as the tokenizer of ``en_core_web_sm``, which the 2021 tutorial loads; the
statistical pipeline does not change tokens). spaCy is an optional dependency (the ``[text]``
extra). Where it is missing, ``tokenizer=basic`` is a small documented approximation:
whitespace split, then leading/trailing punctuation and English clitics (``n't 's 're 've 'll
'd 'm``) split off and ellipses made tokens of their own, as spaCy's prefix/suffix/infix/
exception rules do for ordinary text. It differs from spaCy on URLs, emoticons, single letters
with a period (``i.``) and HTML remains such as ``/><br`` (spaCy splits ``<br`` off after an
ellipsis); on the generated demo corpus about half of the reviews tokenise identically, so
results obtained with it are not the tutorial's. ``auto`` picks spaCy when it is installed.
"""

from __future__ import annotations

import logging
import re
from sys import intern
from typing import Callable, Iterable, List

from snc.errors import ConfigError

log = logging.getLogger("snc")

TOKENIZERS = ("spacy", "basic", "auto")
Tokenizer = Callable[[Iterable[str]], List[List[str]]]

_PREFIX = re.compile(r"""^[\"'(\[{<`$£€#*]""")
_SUFFIX = re.compile(r"""[\"')\]}>.,!?;:%`*]$""")
_CLITIC = re.compile(r"(?i)(n't|'s|'re|'ve|'ll|'d|'m)$")


_ELLIPSIS = re.compile(r"(\.\.\.+)")


def _basic_one(text: str) -> List[str]:
    out: List[str] = []
    for word in (w for chunk in text.split() for w in _ELLIPSIS.split(chunk) if w):
        if _ELLIPSIS.fullmatch(word):
            out.append(word)
            continue
        head: List[str] = []
        tail: List[str] = []
        while len(word) > 1 and _PREFIX.match(word):
            head.append(word[0])
            word = word[1:]
        changed = True
        while changed and len(word) > 1:
            changed = False
            if _SUFFIX.search(word):
                tail.append(word[-1])
                word = word[:-1]
                changed = True
                continue
            m = _CLITIC.search(word)
            if m and m.start() > 0:
                tail.append(m.group(1))
                word = word[: m.start()]
                changed = True
        out.extend(head)
        if word:
            out.append(word)
        out.extend(reversed(tail))
    return out


def basic_tokenize(texts: Iterable[str]) -> List[List[str]]:
    """The fallback tokenizer (module docstring), one token list per text."""
    return [[intern(tok) for tok in _basic_one(t)] for t in texts]


def spacy_available() -> bool:
    try:
        import spacy  # noqa: F401
    except ImportError:
        return False
    return True


def get_tokenizer(name: str) -> Tokenizer:
    """``spacy`` | ``basic`` | ``auto`` -> a function from texts to token lists.

    Raises:
        ConfigError: unknown name, or ``spacy`` asked for but not installed.
    """
    if name not in TOKENIZERS:
        raise ConfigError(f"dataset.tokenizer={name!r}; choose one of {', '.join(TOKENIZERS)}")
    if name == "auto":
        name = "spacy" if spacy_available() else "basic"
        if name == "basic":
            log.warning("spaCy is not installed: using the basic fallback tokenizer, which "
                        "only approximates the tutorial's; pip install 'snc[text]' for spaCy")
    if name == "basic":
        return basic_tokenize
    if not spacy_available():
        raise ConfigError("dataset.tokenizer=spacy but spaCy is not installed: pip install "
                          "spacy (the [text] extra), or set dataset.tokenizer=basic")
    import spacy

    tokenizer = spacy.blank("en").tokenizer

    def spacy_tokenize(texts: Iterable[str]) -> List[List[str]]:
        # interned: one string object per distinct token (IMDb: ~7M tokens, ~150k distinct)
        return [[intern(tok.text) for tok in doc]
                for doc in tokenizer.pipe(texts, batch_size=512)]

    spacy_tokenize.__name__ = "spacy"
    return spacy_tokenize


def tokenizer_name(name: str) -> str:
    """The tokenizer ``name`` resolves to (``auto`` -> ``spacy`` or ``basic``)."""
    if name == "auto":
        return "spacy" if spacy_available() else "basic"
    return name
