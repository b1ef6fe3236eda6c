"""Word substitution with WordNet synonyms, read offline.

The synonym source is Princeton WordNet 3.0 as Debian's ``wordnet-base`` package installs it
(``/usr/share/wordnet``; another directory with ``NNAUDIT_WORDNET``), read with nltk's ``WordNetCorpusReader``.
Why: it is the lexicon of TextAttack's ``WordSwapWordNet`` (the PWWS recipe), it needs no download at run time
(nltk's own ``wordnet`` corpus comes from the nltk downloader, counter-fitted embeddings from a web archive), and a
system package pins its version. Two gaps of the Debian files are bridged here, without changing what is read:
Debian leaves out ``lexnames`` (the 45 lexicographer-file names that the WordNet C library has compiled in; the
README.Debian of wordnet-base says so), so the reader gets that fixed table; and nltk's mapping of other WordNet
versions to 3.0 (for multilingual data, unused here) is turned off, the files being 3.0 already.

Candidates of a word: the one-word lemmas of every synset of the word (any part of speech, as
``WordSwapWordNet``), other than the word, in WordNet's order, capitalised like the word; at most
``max_candidates``."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from attacks.base import AttackNotApplicable
from attacks.text.base import Constraints, GreedyWordAttack

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_ENV = "NNAUDIT_WORDNET"
# lexnames(5WN): the lexicographer files of WordNet 3.0, number -> name (syntactic category 1 noun ... 4 adverb)
LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1",
    "noun.feeling 1", "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1",
    "noun.person 1", "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1",
    "verb.body 2", "verb.change 2", "verb.cognition 2", "verb.communication 2", "verb.competition 2",
    "verb.consumption 2", "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2",
    "verb.perception 2", "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)


def wordnet_dir() -> Path:
    return Path(os.environ.get(WORDNET_ENV) or WORDNET_DIR)


def wordnet_missing() -> str | None:
    """Why WordNet cannot be read (None: it can)."""
    root = wordnet_dir()
    if not (root / "data.noun").is_file() or not (root / "index.adj").is_file():
        return (f"WordNet data files not found at {root} (apt-get install wordnet-base, or set {WORDNET_ENV} to a "
                "directory holding WordNet 3.0's data.* and index.* files)")
    try:
        import nltk  # noqa: F401
    except ImportError:
        return "the synonym attack reads WordNet with nltk: pip install \"nnaudit[text]\""
    return None


@functools.cache
def wordnet(root: str | None = None) -> Any:
    """nltk's WordNet reader on the WordNet 3.0 files at ``root`` (default ``wordnet_dir()``)."""
    missing = wordnet_missing() if root is None else None
    if missing:
        raise AttackNotApplicable(missing)
    import warnings

    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    path = str(Path(root or wordnet_dir()).resolve())
    if path not in nltk.data.path:
        nltk.data.path.append(path)  # nltk reads only under its data paths (nltk.pathsec)

    class Reader(WordNetCorpusReader):
        def open(self, fileid: str) -> Any:
            if fileid == "lexnames" and not (Path(path) / "lexnames").is_file():
                return io.StringIO("".join(f"{i:02d}\t{n.replace(' ', chr(9))}\n" for i, n in enumerate(LEXNAMES)))
            return super().open(fileid)

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "multilingual functions are not available": not used
        return Reader(path, None)


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> tuple[str, ...]:
    """One-word WordNet synonyms of ``word`` (lower case), in WordNet's order, without the word."""
    low = word.lower()
    out: dict[str, None] = {}
    for synset in wordnet().synsets(low):
        for lemma in synset.lemma_names():
            name = str(lemma)
            if "_" not in name and " " not in name and name.lower() != low and name.isalpha():
                out[name.lower()] = None
    return tuple(out)


def _case_like(word: str, new: str) -> str:
    if word.isupper() and len(word) > 1:
        return new.upper()
    return new[:1].upper() + new[1:] if word[:1].isupper() else new


class SynonymSwap(GreedyWordAttack):
    """Word substitution with WordNet synonyms (offline, Debian's wordnet-base), words in importance order."""

    name = "synonym"
    description = "WordNet synonym substitution by word importance (Debian wordnet-base via nltk)"
    max_candidates: ClassVar[int | None] = 50

    def __init__(self, constraints: Constraints | None = None, *, seed: int = 0, max_candidates: int = 50) -> None:
        super().__init__(constraints, seed=seed)
        wordnet()  # not installed: AttackNotApplicable now, with what to install
        self.limit = max_candidates

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "synonyms": f"WordNet 3.0 at {wordnet_dir()} (nltk reader)",
                "max_candidates": self.limit, "max_edit_distance": "n/a (whole words)"}

    def candidates(self, word: str, rng: np.random.Generator) -> list[str]:
        if not word.isalpha():  # numbers, codes: WordNet's "synonyms" of 95 are Roman numerals
            return []
        return [_case_like(word, s) for s in synonyms(word)[: self.limit]]
