"""DeepWordBug (Gao et al. 2018, "Black-box generation of adversarial text sequences to evade deep learning
classifiers"), as TextAttack's ``DeepWordBugGao2018`` recipe builds it: the four character edits of the paper
(``WordSwapNeighboringCharacterSwap``, ``WordSwapRandomCharacterSubstitution``, ``...Deletion``,
``...Insertion``, each at one random position of the word), greedy search by word importance
(``GreedyWordSwapWIR``, "unk"), constraints ``RepeatModification``, ``StopwordModification`` and
``LevenshteinEditDistance(30)``; plus the word budget (``max_words_fraction``) and protected tokens. The random
draws are seeded per (seed, sample)."""

from __future__ import annotations

import string
from typing import ClassVar

import numpy as np

from attacks.text.base import GreedyWordAttack, levenshtein

LETTERS = string.ascii_lowercase


def _letter(rng: np.random.Generator, other_than: str = "") -> str:
    pool = [c for c in LETTERS if c != other_than.lower()]
    return pool[int(rng.integers(len(pool)))]


def swap(word: str, rng: np.random.Generator) -> str | None:
    """Swap two neighbouring characters at a random position."""
    if len(word) < 2:
        return None
    i = int(rng.integers(len(word) - 1))
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def substitute(word: str, rng: np.random.Generator) -> str | None:
    """Replace the character at a random position with another random letter."""
    i = int(rng.integers(len(word)))
    return word[:i] + _letter(rng, word[i]) + word[i + 1:]


def delete(word: str, rng: np.random.Generator) -> str | None:
    """Delete the character at a random position (words of two characters or more)."""
    if len(word) < 2:
        return None
    i = int(rng.integers(len(word)))
    return word[:i] + word[i + 1:]


def insert(word: str, rng: np.random.Generator) -> str | None:
    """Insert a random letter at a random position (before the first character up to after the last)."""
    i = int(rng.integers(len(word) + 1))
    return word[:i] + _letter(rng) + word[i:]


EDITS = (swap, substitute, delete, insert)


class DeepWordBug(GreedyWordAttack):
    """DeepWordBug: one character edit (swap, substitute, delete, insert) per word, words in importance order."""

    name = "deepwordbug"
    description = "character edits (swap, substitute, delete, insert) by word importance (Gao et al. 2018)"
    max_candidates: ClassVar[int | None] = 4

    def candidates(self, word: str, rng: np.random.Generator) -> list[str]:
        out = [edit(word, rng) for edit in EDITS]
        return [w for w in dict.fromkeys(out) if w]

    def allowed(self, original: str, new: str, spent: int) -> bool:
        return spent + levenshtein(original, new) <= self.constraints.max_edit_distance

    def cost(self, original: str, new: str) -> int:
        return levenshtein(original, new)
