"""The text attacks over the evaluated samples: per attack and in the worst case, robust accuracy, attack success
rate (of the clean-correct samples), mean fraction of words changed (over the successful adversarial texts, as
TextAttack's "average perturbed word %") and model queries per attacked sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from attacks.text.base import SampleResult, TextAttack, TextAttackOutput

if TYPE_CHECKING:
    from audit.model.text import TextModelAdapter

WORST = "worst_case"


@dataclass
class Summary:
    robust_accuracy: float
    attack_success_rate: float
    mean_words_changed: float  # NaN: no success
    queries_per_sample: float  # NaN: nothing attacked
    seconds: float
    robust: np.ndarray  # (N,) bool: clean-correct and not fooled

    def metrics(self) -> dict[str, float]:
        return {"robust_accuracy": self.robust_accuracy, "attack_success_rate": self.attack_success_rate,
                "mean_words_changed": self.mean_words_changed, "queries_per_sample": self.queries_per_sample}


@dataclass
class TextEvaluation:
    """Every text attack's per-sample results (rows of the evaluated samples) and the worst case."""

    clean_correct: np.ndarray
    outputs: dict[str, TextAttackOutput] = field(default_factory=dict)
    worst: dict[int, tuple[str, SampleResult]] = field(default_factory=dict)  # fooled row -> (attack, result)

    @property
    def n(self) -> int:
        return len(self.clean_correct)

    def summary(self, name: str) -> Summary:
        """``name``: an attack, or ``worst_case`` (fooled by any attack; its example changes the fewest words)."""
        ok = self.clean_correct
        if name == WORST:
            fooled = np.zeros(self.n, bool)
            fooled[list(self.worst)] = True
            results = [r for _, r in self.worst.values()]
            queries = [sum(o.results[row].queries for o in self.outputs.values() if row in o.results)
                       for row in np.flatnonzero(ok).tolist()]
            seconds = sum(o.seconds for o in self.outputs.values())
        else:
            out = self.outputs[name]
            fooled = out.success(self.n)
            results = [r for r in out.results.values() if r.success]
            queries = [r.queries for r in out.results.values()]
            seconds = out.seconds
        n_ok = int(ok.sum())
        robust = ok & ~fooled
        return Summary(robust_accuracy=float(robust.mean()) if self.n else math.nan,
                       attack_success_rate=float((fooled & ok).sum() / n_ok) if n_ok else math.nan,
                       mean_words_changed=float(np.mean([r.changed_fraction for r in results])) if results
                       else math.nan,
                       queries_per_sample=float(np.mean(queries)) if queries else math.nan,
                       seconds=seconds, robust=robust)


def evaluate_text(model: TextModelAdapter, texts: Sequence[str], y: np.ndarray, clean_pred: np.ndarray,
                  attacks: Sequence[TextAttack], *, progress: Any = None) -> TextEvaluation:
    """Run each attack on the clean-correct samples; the worst case keeps, per fooled sample, the successful
    adversarial text with the fewest changed words (first attack on ties)."""
    ev = TextEvaluation(clean_correct=np.asarray(clean_pred) == np.asarray(y))
    rows = np.flatnonzero(ev.clean_correct)
    for attack in attacks:
        out = attack.run(model, texts, y, rows.tolist(), progress=progress)
        ev.outputs[attack.name] = out
        for row, r in out.results.items():
            if r.success and (row not in ev.worst or r.changed_fraction < ev.worst[row][1].changed_fraction):
                ev.worst[row] = (attack.name, r)
    return ev
