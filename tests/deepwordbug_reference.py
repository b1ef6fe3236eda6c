"""An independent reference of TextAttack's DeepWordBug recipe (``DeepWordBugGao2018``), written for the
cross-check from the recipe's description, sharing no code with ``attacks/text``:

- goal: untargeted classification; score = 1 - p(true label); success when another class is predicted;
- search: greedy word swap by word importance, "unk" method: each word's importance is the score of the text with
  that word replaced by "[UNK]"; words in decreasing importance; at each word, all its transformations are
  scored and the best is kept if it beats the current score; stop at success;
- transformation: one random edit per kind (swap neighbouring characters, substitute a random letter, delete a
  character, insert a random letter);
- constraints: RepeatModification, StopwordModification (the same stopword list as nnaudit, a setting, not code),
  LevenshteinEditDistance(30) of the whole text to the original, at most max(1, floor(fraction * words)) words
  changed, a query budget of distinct texts per sample.

TextAttack itself does not install in this environment (its pinned dependencies conflict), so this stands in for
it. Words here: maximal runs of letters, digits, apostrophes and hyphens (found with a character loop); draws: the
standard library's ``random.Random``; the edit distance: a row-vectorised dynamic programme over whole texts.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable, Sequence

import numpy as np


def split_words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word: maximal runs of alphanumerics, with inner apostrophes or hyphens."""
    spans, i, n = [], 0, len(text)
    while i < n:
        if text[i].isalnum():
            j = i
            while j < n and (text[j].isalnum() or (text[j] in "'-’" and j + 1 < n and text[j + 1].isalnum())):
                j += 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    return spans


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance of whole texts (common prefix and suffix removed first, which keeps it exact)."""
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    a, b = a[p:], b[p:]
    s = 0
    while s < min(len(a), len(b)) and a[len(a) - 1 - s] == b[len(b) - 1 - s]:
        s += 1
    a, b = a[: len(a) - s], b[: len(b) - s]
    if not a or not b:
        return max(len(a), len(b))
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(b) + 1)
    prev = cols.copy()
    for i, ch in enumerate(a, 1):
        cost = (bb != ord(ch)).astype(np.int64)
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        # insertions: cur[j] = min(cur[j], cur[j-1] + 1) along the row, as a running minimum of cur[j] - j
        cur = np.minimum.accumulate(cur - cols) + cols
        prev = cur
    return int(prev[-1])


def edits(word: str, rnd: random.Random) -> list[str]:
    letters = string.ascii_lowercase
    out = []
    if len(word) >= 2:
        k = rnd.randrange(len(word) - 1)
        out.append(word[:k] + word[k + 1] + word[k] + word[k + 2:])
    k = rnd.randrange(len(word))
    out.append(word[:k] + rnd.choice([c for c in letters if c != word[k].lower()]) + word[k + 1:])
    if len(word) >= 2:
        k = rnd.randrange(len(word))
        out.append(word[:k] + word[k + 1:])
    k = rnd.randrange(len(word) + 1)
    out.append(word[:k] + rnd.choice(letters) + word[k:])
    return out


def reference_deepwordbug(proba: Callable[[list[str]], np.ndarray], text: str, label: int, *, seed: int,
                          stop: frozenset[str], max_words_fraction: float = 0.25, max_distance: int = 30,
                          budget: int = 2000) -> tuple[bool, str, int, int]:
    """(success, adversarial text, words changed, queries) of one clean-correct text."""
    rnd = random.Random(seed)
    seen: dict[str, float] = {}
    fooled: dict[str, bool] = {}

    def ask(texts: Sequence[str]) -> list[str]:
        fresh = [t for t in dict.fromkeys(texts) if t not in seen][: max(0, budget - len(seen))]
        if fresh:
            p = proba(fresh)
            for t, row in zip(fresh, p, strict=True):
                seen[t] = 1.0 - float(row[label])
                fooled[t] = int(np.argmax(row)) != label
        return [t for t in texts if t in seen]

    spans = split_words(text)
    words = [text[a:b] for a, b in spans]

    def build(ws: list[str]) -> str:
        out, at = [], 0
        for (a, b), w in zip(spans, ws, strict=True):
            out += [text[at:a], w]
            at = b
        return "".join(out) + text[at:]

    ask([text])
    candidates = [i for i, w in enumerate(words) if w.lower() not in stop]
    unk = ask([build([*words[:i], "[UNK]", *words[i + 1:]]) for i in candidates])
    ranked = sorted(range(len(unk)), key=lambda j: (-seen[unk[j]], j))
    order = [candidates[j] for j in ranked] + candidates[len(unk):]
    limit = max(1, math.floor(max_words_fraction * len(words) + 1e-9))
    current, cur_text, changed = list(words), text, 0
    for i in order:
        if changed >= limit or len(seen) >= budget or fooled[cur_text]:
            break
        options = []
        for w in dict.fromkeys(edits(words[i], rnd)):
            if w == words[i] or not w or not all(c.isalnum() or c in "'-’" for c in w) or not w[0].isalnum() \
                    or not w[-1].isalnum():
                continue
            t = build([*current[:i], w, *current[i + 1:]])
            if edit_distance(text, t) <= max_distance:
                options.append((w, t))
        if not options:
            continue
        got = set(ask([t for _, t in options]))
        scored = [(seen[t], w, t) for w, t in options if t in got]
        if not scored:
            break
        best = max(scored, key=lambda s: s[0])
        if best[0] > seen[cur_text]:
            current[i], cur_text = best[1], best[2]
            changed += 1
    return fooled[cur_text], cur_text, changed, len(seen)
