"""Benchmark nnaudit's text attacks against the independent DeepWordBug reference, in one run.

Model and data: the fine-food review classifier of the tests (``tests/text_helpers.py``: word-level tokenizer,
``MeanPoolText``, 200 held-out reviews); every attack runs on the same clean-correct reviews with the same
constraints (max_words_fraction, Levenshtein 30, query budget).

Peers (each repeat runs every peer once; medians reported):

- ``reference deepwordbug``: the hand-written reference of TextAttack's DeepWordBug recipe
  (``tests/deepwordbug_reference.py``), the baseline, ratio 1.00x. TextAttack itself does not install here (its
  pinned dependencies conflict with this environment), so it is not timed;
- ``nnaudit deepwordbug``, ``nnaudit synonym`` (WordNet; left out when Debian's wordnet-base is missing),
  ``nnaudit hotflip``.

Then, in the same run, nnaudit's Layer IG against captum's ``LayerIntegratedGradients`` called directly on the same
texts (``benchmarks/text_explain.py``'s ``layer_ig``; that script alone also times shap_text and lime_text).

Usage: ``python benchmarks/text.py [--repeats 3] [--samples 100] [--threads 1] [--ig-samples 64]``. Prints seconds
per attacked sample, the ratio to the reference, success rate, mean words changed and queries per sample, then Layer
IG's time per text against captum's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from deepwordbug_reference import reference_deepwordbug  # noqa: E402
from text_helpers import text_problem  # noqa: E402

from attacks.text.base import Constraints, stopwords  # noqa: E402
from attacks.text.charedit import DeepWordBug  # noqa: E402
from attacks.text.hotflip import HotFlip  # noqa: E402
from attacks.text.wordnet import wordnet_missing  # noqa: E402

Stats = tuple[float, float, float]  # success rate, mean words changed (successes), queries per sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100, help="clean-correct reviews attacked")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=0.25, help="max_words_fraction")
    parser.add_argument("--ig-samples", type=int, default=64, help="texts for Layer IG vs captum (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = text_problem()
    adapter, texts, y = p.adapter, p.data.texts, p.data.y
    assert texts is not None
    pred = adapter.logits(p.data.x).argmax(dim=1).numpy()
    rows = np.flatnonzero(pred == y)[: args.samples].tolist()
    c = Constraints(max_words_fraction=args.fraction, max_edit_distance=30, query_budget=2000)
    stop = stopwords()

    def reference() -> Stats:
        out = [reference_deepwordbug(adapter.text_predict_proba, texts[i], int(y[i]), seed=i, stop=stop,
                                     max_words_fraction=args.fraction, max_distance=30, budget=2000) for i in rows]
        from attacks.text.base import Words

        changed = [k / max(len(Words.of(texts[i])), 1) for (s, _, k, _), i in zip(out, rows, strict=True) if s]
        return (float(np.mean([o[0] for o in out])), float(np.mean(changed)) if changed else float("nan"),
                float(np.mean([o[3] for o in out])))

    def ours(attack: object) -> Callable[[], Stats]:
        def run() -> Stats:
            out = attack.run(adapter, texts, y, rows)  # type: ignore[attr-defined]
            res = list(out.results.values())
            changed = [r.changed_fraction for r in res if r.success]
            return (float(np.mean([r.success for r in res])), float(np.mean(changed)) if changed else float("nan"),
                    float(np.mean([r.queries for r in res])))
        return run

    peers: dict[str, Callable[[], Stats]] = {"reference deepwordbug": reference,
                                             "nnaudit deepwordbug": ours(DeepWordBug(c, seed=0))}
    if wordnet_missing() is None:
        from attacks.text.wordnet import SynonymSwap

        peers["nnaudit synonym"] = ours(SynonymSwap(c, seed=0))
    else:
        print(f"synonym left out: {wordnet_missing()}")
    peers["nnaudit hotflip"] = ours(HotFlip(c, seed=0))
    times: dict[str, list[float]] = {k: [] for k in peers}
    stats: dict[str, Stats] = {}
    for _ in range(args.repeats):
        for name, fn in peers.items():
            start = time.perf_counter()
            stats[name] = fn()
            times[name].append((time.perf_counter() - start) / len(rows))
    base = statistics.median(times["reference deepwordbug"])
    print(f"{len(rows)} clean-correct reviews, max_words_fraction {args.fraction}, Levenshtein 30, query budget "
          f"2000, {args.repeats} repeats, {torch.get_num_threads()} thread(s); TextAttack: not installable here")
    print(f"{'peer':24s} {'s/sample':>9s} {'ratio':>7s} {'success':>8s} {'words chg':>9s} {'queries':>8s}")
    for name in peers:
        t = statistics.median(times[name])
        s, w, q = stats[name]
        print(f"{name:24s} {t:9.4f} {t / base:6.2f}x {s:8.3f} {w:9.3f} {q:8.1f}")
    if args.ig_samples:
        from text_explain import layer_ig

        ig_texts = texts[: args.ig_samples]
        layer_ig(p, ig_texts, adapter.predict(adapter.encode(ig_texts)), 32, 64, max(3, args.repeats))


if __name__ == "__main__":
    main()
