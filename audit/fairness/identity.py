"""Identity-term fairness of text classifiers: the computing (``audit.fairness.text`` records it).

**Subgroup AUCs** (Borkan et al. 2019, "Nuanced Metrics for Measuring Unintended Bias with Real Data for Text
Classification"). A subgroup is the texts that mention an identity (any of its terms as a whole word, case
folded) or the rows of a sensitive column's value; the background is every other row. With the positive class's
score and labels ``y == positive``:

- subgroup AUC: the AUC over the subgroup's rows alone (can the model tell positives from negatives *within* it?);
- BPSN AUC (background positive, subgroup negative): the subgroup's negatives against the background's
  positives; low when negative texts that mention the identity score higher than positives that do not (false
  positives on the identity);
- BNSP AUC (background negative, subgroup positive): the subgroup's positives against the background's negatives;
  low when positive texts that mention it score lower (false negatives).

The AUC is the Mann-Whitney statistic with ties counted half (``rank_auc``; equal to scikit-learn's
``roc_auc_score``). Intervals: the one bootstrap (``audit.bootstrap``), resampling within the four cells
(subgroup or background x positive or negative), so every AUC is defined in every resample; each AUC's gap to the
overall AUC is resampled paired with it.

**Counterfactual token fairness** (Garg et al. 2019): every text that holds a term of the swap pairs (he/she,
his/her, ...) is rewritten with each such term replaced by its counterpart (case kept), and the model's
prediction and score on both are compared: the prediction flip rate and the mean score change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from audit.bootstrap import bootstrap

# gendered word pairs (Zhao et al. 2018's and Garg et al. 2019's lists, shortened); a word in several pairs
# (her: him / his) takes its first pair's counterpart
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("his", "her"), ("him", "her"), ("himself", "herself"), ("man", "woman"), ("men", "women"),
    ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("fathers", "mothers"), ("son", "daughter"),
    ("sons", "daughters"), ("brother", "sister"), ("brothers", "sisters"), ("husband", "wife"),
    ("husbands", "wives"), ("boyfriend", "girlfriend"), ("male", "female"), ("males", "females"),
    ("mr", "mrs"), ("king", "queen"), ("uncle", "aunt"), ("nephew", "niece"), ("grandfather", "grandmother"),
    ("grandson", "granddaughter"), ("dad", "mom"), ("daddy", "mommy"), ("gentleman", "lady"),
    ("gentlemen", "ladies"), ("guy", "gal"), ("sir", "madam"),
)
AUCS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")


def term_pattern(terms: Sequence[str]) -> re.Pattern[str]:
    """Any of ``terms`` as a whole word, case folded (a term may hold spaces: 'gay man')."""
    words = sorted({t.strip().lower() for t in terms if t.strip()}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


def mentions(texts: Sequence[str], terms: Sequence[str]) -> np.ndarray:
    """(N,) bool: the texts that mention any of ``terms``."""
    pattern = term_pattern(terms)
    return np.array([pattern.search(t) is not None for t in texts], dtype=bool)


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (B, n) against 0/1 ``labels`` (B, n) (ties count half); NaN where a row
    has no positive or no negative."""
    from scipy.stats import rankdata

    scores, labels = np.atleast_2d(scores), np.atleast_2d(labels).astype(bool)
    ranks = rankdata(scores, axis=1)
    pos = labels.sum(axis=1)
    neg = labels.shape[1] - pos
    u = (ranks * labels).sum(axis=1) - pos * (pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


@dataclass
class SubgroupAUCs:
    """One subgroup's three AUCs and their gaps to the overall AUC, with bootstrap samples (B,) of each."""

    name: str
    rows: int  # rows in the subgroup
    positives: int
    negatives: int
    values: dict[str, float]  # subgroup_auc, bpsn_auc, bnsp_auc and their '<name>_gap' (overall minus it)
    samples: dict[str, np.ndarray]  # the same and their '<name>_gap' (overall minus it), per resample


def _subsets(member: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """The rows each AUC is computed on (Borkan et al. 2019, section 4)."""
    return {"subgroup_auc": member, "bpsn_auc": (member & ~positive) | (~member & positive),
            "bnsp_auc": (member & positive) | (~member & ~positive)}


def subgroup_aucs(name: str, member: np.ndarray, scores: np.ndarray, positive: np.ndarray, *, n_resamples: int,
                  seed: int) -> SubgroupAUCs:
    """The three AUCs of one subgroup and, with ``n_resamples``, their resampled values (paired with the
    overall AUC's: the gaps are resampled too)."""
    member, positive = np.asarray(member, bool), np.asarray(positive, bool)
    subsets = _subsets(member, positive)
    values = {m: float(rank_auc(scores[rows], positive[rows])[0]) for m, rows in subsets.items()}
    overall = overall_auc(scores, positive)
    values |= {f"{m}_gap": overall - values[m] for m in subsets}
    samples: dict[str, np.ndarray] = {}
    if n_resamples:
        cells = 2 * member.astype(np.int64) + positive.astype(np.int64)  # the four cells keep their sizes
        present = np.unique(cells)
        codes = np.searchsorted(present, cells)

        def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
            assert index is not None
            column_cells = cells[index[0]]  # a column draws from one cell in every resample
            overall = rank_auc(scores[index], positive[index])
            out = {}
            for metric, _ in subsets.items():
                keep = np.asarray(_subsets(column_cells >= 2, (column_cells % 2) == 1)[metric])
                got = rank_auc(scores[index[:, keep]], positive[index[:, keep]])
                out[metric], out[f"{metric}_gap"] = got, overall - got
            return out

        samples = bootstrap(codes, n_resamples, seed, statistic)
    return SubgroupAUCs(name, int(member.sum()), int((member & positive).sum()), int((member & ~positive).sum()),
                        values, samples)


def overall_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    return float(rank_auc(scores, positive)[0])


# -- counterfactual swaps ----------------------------------------------------------------------------------------


def swap_map(pairs: Sequence[Sequence[str]]) -> dict[str, str]:
    """word -> counterpart, both ways, lower case; a word in several pairs keeps its first counterpart."""
    out: dict[str, str] = {}
    for a, b in pairs:
        out.setdefault(a.lower(), b.lower())
        out.setdefault(b.lower(), a.lower())
    return out


def _cased(like: str, word: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_terms(text: str, mapping: dict[str, str]) -> str:
    """``text`` with every term of ``mapping`` (a whole word, any case) replaced by its counterpart at once."""
    pattern = term_pattern(list(mapping))
    return pattern.sub(lambda m: _cased(m.group(0), mapping[m.group(0).lower()]), text)


@dataclass
class Counterfactual:
    """Texts that hold a swap term: their rows, the swapped texts, predictions and scores before and after."""

    rows: np.ndarray  # (n,) rows of the data
    swapped: list[str]
    pred: np.ndarray
    pred_swapped: np.ndarray
    score: np.ndarray  # the positive class's probability (or the predicted class's, without a positive class)
    score_swapped: np.ndarray

    @property
    def flipped(self) -> np.ndarray:
        return (self.pred != self.pred_swapped).astype(np.float64)

    @property
    def change(self) -> np.ndarray:
        return self.score_swapped - self.score


def counterfactual(texts: Sequence[str], proba: Callable[[list[str]], np.ndarray], pairs: Sequence[Sequence[str]],
                   positive: int | None) -> Counterfactual:
    """Swap the paired terms in every text that holds one; ``proba`` maps texts to class probabilities."""
    mapping = swap_map(pairs)
    pattern = term_pattern(list(mapping))
    rows = np.array([i for i, t in enumerate(texts) if pattern.search(t)], np.int64)
    originals = [texts[int(i)] for i in rows]
    swapped = [swap_terms(t, mapping) for t in originals]
    if not len(rows):
        empty = np.zeros(0)
        return Counterfactual(rows, [], empty.astype(np.int64), empty.astype(np.int64), empty, empty)
    both = proba(originals + swapped)
    before, after = both[: len(rows)], both[len(rows) :]
    pred, pred_swapped = before.argmax(axis=1), after.argmax(axis=1)
    column = pred if positive is None else np.full(len(rows), positive)
    picks = np.arange(len(rows))
    return Counterfactual(rows, swapped, pred, pred_swapped, before[picks, column], after[picks, column])
