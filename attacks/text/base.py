"""What every text attack shares: words of a text (edited in place, separators kept), the query-counting victim,
the constraints, word importance and the greedy word-by-word search.

A text attack edits the raw text (DeepWordBug's character edits, WordNet synonyms) or the model's token ids
(HotFlip), and asks the model through ``TextModelAdapter.text_logits``: the adversarial text is tokenized exactly
as the audited data was. Only clean-correct samples are attacked (a clean-wrong sample counts as not robust), as
in the L-p attacks. Success: the model's prediction on the final text differs from the label (untargeted).

The constraints, as TextAttack's recipes name them (``RepeatModification``, ``StopwordModification``,
``MaxWordsPerturbed``, ``LevenshteinEditDistance``), are checked before a candidate is queried:

- a word is modified at most once, and stopwords (scikit-learn's ``ENGLISH_STOP_WORDS``, which holds the
  negations "not", "no", "never": flipping those changes the meaning, not only the surface) and the protected
  tokens are never modified;
- at most ``max(1, floor(max_words_fraction * n_words))`` words of a text change;
- character attacks: the Levenshtein distance of the text to the original stays within ``max_edit_distance``
  (summed over the edited words, each edit staying inside its word);
- at most ``query_budget`` distinct texts are scored per sample (a cache answers repeats, as TextAttack's).
"""

from __future__ import annotations

import math
import re
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from attacks.base import AttackError

if TYPE_CHECKING:
    from audit.model.text import TextModelAdapter

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


@dataclass(frozen=True)
class Words:
    """A text as words and the separators around them: ``text == seps[0] + words[0] + seps[1] + ... + seps[n]``."""

    words: tuple[str, ...]
    seps: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> Words:
        words, seps, at = [], [], 0
        for match in WORD.finditer(text):
            seps.append(text[at:match.start()])
            words.append(match.group())
            at = match.end()
        seps.append(text[at:])
        return cls(tuple(words), tuple(seps))

    @property
    def text(self) -> str:
        return "".join(s + w for s, w in zip(self.seps, (*self.words, ""), strict=True))

    def __len__(self) -> int:
        return len(self.words)

    def replace(self, i: int, word: str) -> Words:
        return Words((*self.words[:i], word, *self.words[i + 1:]), self.seps)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) of two words."""
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@dataclass(frozen=True)
class Constraints:
    """The limits every text attack works under (reported beside its numbers)."""

    max_words_fraction: float = 0.25
    max_edit_distance: int = 30
    protected: frozenset[str] = frozenset()
    query_budget: int = 2000
    stopwords: frozenset[str] = field(default_factory=stopwords)

    def max_changes(self, n_words: int) -> int:
        return max(1, math.floor(self.max_words_fraction * n_words + 1e-9)) if n_words else 0

    def modifiable(self, word: str) -> bool:
        low = word.lower()
        return low not in self.stopwords and low not in self.protected

    def describe(self) -> dict[str, Any]:
        return {"max_words_fraction": self.max_words_fraction, "max_edit_distance": self.max_edit_distance,
                "protected_tokens": sorted(self.protected), "query_budget": self.query_budget,
                "stopwords": f"scikit-learn ENGLISH_STOP_WORDS ({len(self.stopwords)} words) never modified",
                "repeat_modification": "a word is modified at most once"}


class Victim:
    """The model seen by one sample's attack: probabilities of texts, a cache (a repeated text costs no query)
    and the query budget. ``scores`` returns the probabilities of as many of the texts as the budget allows."""

    def __init__(self, model: TextModelAdapter, label: int, budget: int) -> None:
        self.model, self.label, self.budget = model, label, budget
        self.queries = 0
        self.cache: dict[str, np.ndarray] = {}

    @property
    def exhausted(self) -> bool:
        return self.queries >= self.budget

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        allowed = new[: max(0, self.budget - self.queries)]
        if allowed:
            import torch

            proba = torch.softmax(self.model.text_logits(allowed).double(), dim=1).numpy()
            self.cache.update(zip(allowed, proba, strict=True))
            self.queries += len(allowed)
        kept = [t for t in texts if t in self.cache]
        return np.stack([self.cache[t] for t in kept]) if kept else np.zeros((0, self.model.num_classes))

    def score(self, proba: np.ndarray) -> np.ndarray:
        """Untargeted goal score (TextAttack's UntargetedClassification): 1 - p(label); > 0.5 not always fooled,
        fooled when another class has the top probability."""
        return 1.0 - proba[..., self.label]

    def fooled(self, proba: np.ndarray) -> bool:
        return int(np.argmax(proba)) != self.label


@dataclass
class SampleResult:
    """One attacked sample. ``unit``: what ``changed`` indexes ("word" of the original text, or "token")."""

    original: str
    adversarial: str
    success: bool
    changed: list[int]
    n_units: int
    queries: int
    proba: list[float]  # the model's probabilities on the adversarial text
    unit: str = "word"
    original_units: list[str] | None = None  # tokens (HotFlip): the units ``changed`` indexes
    adversarial_units: list[str] | None = None
    note: str = ""

    @property
    def changed_fraction(self) -> float:
        return len(self.changed) / self.n_units if self.n_units else 0.0


@dataclass
class TextAttackOutput:
    """One attack over the evaluated samples: a result per attacked (clean-correct) sample, by row."""

    attack: str
    results: dict[int, SampleResult]
    seconds: float
    settings: dict[str, Any]

    def success(self, n: int) -> np.ndarray:
        out = np.zeros(n, bool)
        for row, r in self.results.items():
            out[row] = r.success
        return out


def sample_rng(seed: int, row: int, name: str) -> np.random.Generator:
    """The random draws of one (attack, sample): the same whatever order or chunk the samples run in."""
    return np.random.default_rng([seed, row, zlib.crc32(name.encode())])


class TextAttack(ABC):
    """A text attack. Subclasses set ``name``/``unit`` and write ``attack_one``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    unit: ClassVar[str] = "word"
    library: ClassVar[str] = "nnaudit"
    needs_token_embeddings: ClassVar[bool] = False  # gradients at each token's embedding (HotFlip)

    def __init__(self, constraints: Constraints | None = None, *, seed: int = 0) -> None:
        self.constraints = constraints or Constraints()
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {"attack": self.name, "library": self.library, "unit": self.unit, **self.constraints.describe()}

    @abstractmethod
    def attack_one(self, model: TextModelAdapter, text: str, label: int, row: int) -> SampleResult:
        """Attack one clean-correct text (``row``: its row among the evaluated samples, for the seeded draws)."""

    def run(self, model: TextModelAdapter, texts: Sequence[str], y: np.ndarray, rows: Sequence[int], *,
            progress: Any = None) -> TextAttackOutput:
        """Attack ``texts[row]`` for each row in ``rows`` (the clean-correct ones)."""
        start = time.perf_counter()
        steps: Any = progress(list(rows), desc=f"{self.name} (text)", total=len(rows)) if progress else rows
        results = {int(r): self.attack_one(model, texts[int(r)], int(y[int(r)]), int(r)) for r in steps}
        return TextAttackOutput(self.name, results, time.perf_counter() - start, self.settings())


class GreedyWordAttack(TextAttack):
    """Greedy search by word importance (TextAttack's ``GreedyWordSwapWIR``, wir_method "unk"): each word's
    importance is the goal score of the text with that word replaced by the tokenizer's unknown token (deleted
    where the tokenizer cannot spell it as one token); words are visited in decreasing importance, each word's
    candidates are scored together, and the best is kept when it raises the score. Stops at success, at the
    word budget, or when the query budget is spent."""

    max_candidates: ClassVar[int | None] = None

    @abstractmethod
    def candidates(self, word: str, rng: np.random.Generator) -> list[str]:
        """Replacements of ``word`` (each one word of the text again)."""

    def allowed(self, original: str, new: str, spent: int) -> bool:
        """Whether a candidate fits the constraints given the edit distance ``spent`` so far."""
        return True

    def cost(self, original: str, new: str) -> int:
        return 0

    def attack_one(self, model: TextModelAdapter, text: str, label: int, row: int) -> SampleResult:
        c = self.constraints
        rng = sample_rng(self.seed, row, self.name)
        victim = Victim(model, label, c.query_budget)
        words = Words.of(text)
        base = victim.scores([text])
        current, score = words, float(victim.score(base[0]))
        proba, spent = base[0], 0
        changed: list[int] = []
        order = importance_order(victim, words, placeholder(model), c)
        limit = c.max_changes(len(words))
        for i in order:
            if len(changed) >= limit or victim.exhausted or victim.fooled(proba):
                break
            options = [w for w in self.candidates(words.words[i], rng) if w != words.words[i]
                       and WORD.fullmatch(w) and self.allowed(words.words[i], w, spent)]
            if not options:
                continue
            texts = [current.replace(i, w).text for w in options]
            got = victim.scores(texts)
            if not len(got):
                break
            scores = victim.score(got)
            best = int(np.argmax(scores))
            if scores[best] > score:
                current, score, proba = current.replace(i, options[best]), float(scores[best]), got[best]
                changed.append(i)
                spent += self.cost(words.words[i], options[best])
        return SampleResult(original=text, adversarial=current.text, success=victim.fooled(proba),
                            changed=sorted(changed), n_units=len(words), queries=victim.queries,
                            proba=[float(p) for p in proba])


def placeholder(model: TextModelAdapter) -> str:
    """The text that stands for a removed word: the tokenizer's unknown token when it encodes to exactly that one
    token, else "" (the word is deleted)."""
    tok = model.tokenizer
    unk = getattr(tok.backend, "unk_token", None) if tok.is_transformers else _tokenizers_unk(tok.backend)
    if not unk:
        return ""
    unk_id = _unk_id(tok, unk)
    ids = [int(i) for i in tok.encode([unk])[0] if int(i) != tok.pad_id and (int(i) not in tok.special_ids
                                                                            or int(i) == unk_id)]
    return unk if unk_id is not None and ids == [unk_id] else ""


def _tokenizers_unk(backend: Any) -> str | None:
    model = getattr(backend, "model", None)
    return getattr(model, "unk_token", None)


def _unk_id(tok: Any, unk: str) -> int | None:
    backend = tok.backend
    found = backend.convert_tokens_to_ids(unk) if tok.is_transformers else backend.token_to_id(unk)
    return None if found is None else int(found)


def importance_order(victim: Victim, words: Words, unk: str, c: Constraints) -> list[int]:
    """Modifiable word positions by decreasing leave-one-out importance (ties: text order)."""
    index = [i for i, w in enumerate(words.words) if c.modifiable(w)]
    if not index:
        return []
    got = victim.scores([words.replace(i, unk).text for i in index])
    if len(got) < len(index):  # the budget ran out while ranking: the unranked words keep text order, last
        ranked = np.argsort(-victim.score(got), kind="stable").tolist()
        return [index[j] for j in ranked] + index[len(got):]
    return [index[j] for j in np.argsort(-victim.score(got), kind="stable")]


def check_constraints(max_words_fraction: float, max_edit_distance: int, query_budget: int) -> None:
    if not 0 < max_words_fraction <= 1:
        raise AttackError(f"max_words_fraction must be in (0, 1], got {max_words_fraction}")
    if max_edit_distance < 1 or query_budget < 1:
        raise AttackError("max_edit_distance and query_budget must be >= 1")
