"""Benchmark: lime and KernelSHAP batched across samples against their model-evaluation floors and against lime
called directly. Run through ``python benchmarks/explain.py --surrogates`` (also the last part of a full run).

All in one run, on two models: the digits CNN (1x8x8 images, lime with a grid of 2x2-pixel cells) and a
breast-cancer MLP (30 features, tabular lime with lime's quartile discretizer):

1. per model and method, the batched path's seconds per sample (median of the repeats), its model evaluations
   per sample and rows per forward pass, and two floors: the evaluations times the model's per-row time in passes
   of the size the method used, and times the model's best per-row time over pass sizes from 256 to 16,384 rows
   (the strict floor: what the evaluations cost at the best batch size on this machine). Each floor pass is timed
   alternately with the method. Beside them, the largest difference of the batched attributions from the library
   path's (lime / shap called per row with the row's seed), relative to the largest attribution;
2. breast-cancer MLP, 60 rows, 2,000 perturbations: nnaudit's lime (batched, then its library backend) against
   ``LimeTabularExplainer.explain_instance`` called directly per row with one explainer, medians and ratios;
3. with ``--profile``: where the batched paths' time goes (cProfile, own time per function).

numpy's BLAS runs on ``--threads`` threads like torch (threadpoolctl): on a loaded 2-core machine a multi-threaded
BLAS made scikit-learn's ridge fits inside lime 7x slower, which would flatter nnaudit.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

POOL_SIZES = (256, 1024, 4096, 16384)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_row_time(network: torch.nn.Module, x: torch.Tensor, rows: int) -> float:
    """Seconds per row of forward passes of ``rows`` rows (at least ~20 ms of passes per timing)."""
    batch = x[torch.arange(rows) % len(x)].clone()
    with torch.no_grad():
        network(batch)
        passes = max(1, int(0.02 / max(timed(lambda: network(batch)), 1e-6)))
        return timed(lambda: [network(batch) for _ in range(passes)]) / (passes * rows)


def adapter_for(module: torch.nn.Module, classes: int, bounds: Any) -> Any:
    from audit.model import AdaptedNetwork, SelectOutput, TorchModelAdapter

    network = AdaptedNetwork(module.eval(), None, SelectOutput(None, "logits", False))
    return TorchModelAdapter(network, num_classes=classes, output_kind="logits", bounds=bounds,
                             device=torch.device("cpu"), batch_size=256, source="bench", sha256="0" * 64)


def models() -> list[dict[str, Any]]:
    from audit.data import load_breast_cancer_data, load_digits_data
    from audit.demo import _train
    from audit.model import Bounds
    from audit.zoo import digits_cnn, tabular_mlp

    train, test = load_digits_data("train"), load_digits_data("test")
    torch.manual_seed(0)
    cnn = digits_cnn()
    _train(cnn, train.x, train.y, epochs=15, lr=3e-3, seed=0)
    ctrain, ctest = load_breast_cancer_data("train"), load_breast_cancer_data("test")
    torch.manual_seed(0)
    mlp = tabular_mlp(ctrain.x.shape[1])
    _train(mlp, ctrain.x, ctrain.y, epochs=30, lr=3e-3, seed=0)
    return [
        {"name": "digits CNN", "module": cnn.eval(), "adapter": adapter_for(cnn, 10, Bounds(0.0, 1.0)),
         "x": test.x, "background": test.x[-32:], "modality": "image", "lime": 100, "shap": 256},
        {"name": "cancer MLP", "module": mlp.eval(), "adapter": adapter_for(mlp, 2, None), "x": ctest.x,
         "background": ctest.x[-32:], "modality": "tabular", "lime": 2000, "shap": 256},
    ]


def floors(explainer: Any, method: Callable[[], Any], network: torch.nn.Module, x: torch.Tensor,
           repeats: int) -> tuple[float, float, float, int, int]:
    """Median seconds of ``method``, its floor at its own pass size and the strict floor, rows per pass and the
    evaluations of one call."""
    explainer.counter.rows = explainer.counter.calls = 0
    method()  # warm up, and count one call's evaluations and passes
    evaluations, calls = explainer.counter.rows, explainer.counter.calls
    rows = max(1, round(evaluations / max(calls, 1)))
    sizes = sorted({rows, *POOL_SIZES})
    times: list[float] = []
    per_row: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):  # alternated, so that load from other processes hits both alike
        times.append(timed(method))
        for size in sizes:
            per_row[size].append(per_row_time(network, x, size))
    medians = {size: statistics.median(values) for size, values in per_row.items()}
    return (statistics.median(times), evaluations * medians[rows], evaluations * min(medians.values()), rows,
            evaluations)


def profile(fn: Callable[[], Any], top: int = 8) -> str:
    """cProfile's functions with the most own time in one call of ``fn``."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(lines[start : start + top + 1])


def lime_direct(module: torch.nn.Module, rows: np.ndarray, background: np.ndarray, target: np.ndarray,
                perturbations: int) -> Callable[[], None]:
    """``LimeTabularExplainer.explain_instance`` per row on the bare network (one explainer, built beforehand)."""
    from lime.lime_tabular import LimeTabularExplainer

    lime = LimeTabularExplainer(background, mode="classification", discretize_continuous=True, random_state=0)

    def proba(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(module(torch.as_tensor(batch, dtype=torch.float32)), dim=1).numpy().astype(
                np.float64)

    def call() -> None:
        for row, label in zip(rows, target, strict=True):
            lime.explain_instance(row, proba, labels=(int(label),), top_labels=None, num_features=len(row),
                                  num_samples=perturbations)

    return call


def run(args: argparse.Namespace) -> dict[str, float]:
    """Print the figures; return the ratios by name."""
    from explain.lime_methods import LimeExplainer, _no_progress_bar
    from explain.shap_methods import ShapKernelExplainer

    warnings.simplefilter("ignore")
    ratios: dict[str, float] = {}
    setups = models()
    n = args.library_samples
    print(f"\nlime and KernelSHAP batched across samples ({n} samples, {args.threads} threads, median of "
          f"{args.repeats}); floor: evaluations x per-row time of the model in passes of the method's size, strict "
          f"floor: at the best pass size of {', '.join(map(str, POOL_SIZES))} and the method's")
    print(f"{'model':<12}{'method':<13}{'s/sample':>10}{'evals/sample':>14}{'rows/pass':>11}{'floor':>8}"
          f"{'strict':>8}{'max |diff| vs library':>23}")
    profiles: list[tuple[str, Callable[[], Any]]] = []
    for setup in setups:
        x = setup["x"][:n]
        adapter = setup["adapter"]
        target = adapter.predict(x)
        ids = np.arange(n)
        common = {"background": setup["background"], "modality": setup["modality"], "batch_size": n, "seed": 0}
        pairs = {name: [cls(adapter, n_samples=setup[key], backend=backend, **common) for backend in ("batched",
                                                                                                      "library")]
                 for name, cls, key in (("lime", LimeExplainer, "lime"), ("shap_kernel", ShapKernelExplainer, "shap"))}
        for name, (ours, library) in pairs.items():
            with _no_progress_bar():
                reference = library.explain(x, target, ids)
            values = ours.explain(x, target, ids)
            diff = float(np.abs(values - reference).max() / max(np.abs(reference).max(), 1e-300))

            def method(e: Any = ours, xs: np.ndarray = x, t: np.ndarray = target, i: np.ndarray = ids) -> Any:
                return e.explain(xs, t, i)

            seconds, floor, strict, rows, evaluations = floors(ours, method, setup["module"], torch.as_tensor(x),
                                                               args.repeats)
            evals = evaluations / n
            print(f"{setup['name']:<12}{name:<13}{seconds / n:>10.5f}{evals:>14.0f}{rows:>11d}"
                  f"{seconds / floor:>8.2f}{seconds / strict:>8.2f}{diff:>23.2e}")
            ratios[f"{name}, {setup['name']}: time / strict floor"] = seconds / strict
            ratios[f"{name}, {setup['name']}: time / floor at its pass size"] = seconds / floor
            profiles.append((f"{name}, {setup['name']}", method))

    mlp = setups[1]
    rows, perturbations = mlp["x"][: args.lime_rows], args.lime_perturbations
    target = mlp["adapter"].predict(rows)
    direct = lime_direct(mlp["module"], rows, mlp["background"], target, perturbations)
    common = {"background": mlp["background"], "modality": "tabular", "batch_size": len(rows), "seed": 0,
              "n_samples": perturbations}
    batched, library = (LimeExplainer(mlp["adapter"], backend=backend, **common) for backend in ("batched", "library"))
    peers: dict[str, Callable[[], Any]] = {
        "LimeTabularExplainer.explain_instance, direct": direct,
        "nnaudit lime (batched)": lambda: batched.explain(rows, target),
        "nnaudit lime (backend: library)": lambda: library.explain(rows, target),
    }
    times: dict[str, list[float]] = {name: [] for name in peers}
    for peer in peers.values():
        peer()
    for repeat in range(args.repeats):  # in turn, the order reversed every other repeat
        for name, peer in (list(peers.items()) if repeat % 2 == 0 else list(peers.items())[::-1]):
            times[name].append(timed(peer))
    base = statistics.median(times["LimeTabularExplainer.explain_instance, direct"])
    print(f"\nbreast-cancer MLP, {len(rows)} rows, {perturbations} perturbations each (median of {args.repeats})")
    for name, values in times.items():
        print(f"  {name:<48}{statistics.median(values):>8.3f} s{statistics.median(values) / base:>8.3f}x")
    ratios["lime, cancer MLP: nnaudit / lime direct"] = statistics.median(times["nnaudit lime (batched)"]) / base
    if args.profile:
        for name, method in profiles:
            print(f"\nprofile, {name} (own time per function, one call):\n{profile(method)}")
    return ratios


def report(ratios: dict[str, float]) -> None:
    print("\nratios measured in this run (targets: strict floor <= 1.5x, lime vs lime direct <= 0.5x)")
    for name, value in ratios.items():
        limit = 0.5 if "direct" in name else 1.5 if "strict" in name else None
        verdict = "" if limit is None else ("ok" if value <= limit else "ABOVE TARGET")
        print(f"  {name:<52}{value:>7.2f}x  {verdict}")
