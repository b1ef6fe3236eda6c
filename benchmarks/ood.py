"""Benchmark the OOD detectors: nnaudit's (audit/shift/ood.py) against pytorch-ood's on the same inputs and model.

Model: the digits CNN (audit.zoo, width 16, random weights: speed does not depend on training), inputs: scikit-learn
digits repeated to ``--n`` rows, fit data: ``--fit`` digits rows (Mahalanobis, KNN). Each detector scores the inputs
in batches of ``--batch``; each repeat times both implementations once, in alternating order; the median and the
fastest repeat are reported with the ratio nnaudit / pytorch-ood measured in this run (below 1: nnaudit is faster).
Fitting is timed apart (``fit`` rows). The scores are checked equal (tests/test_ood_reference.py has the same
checks) before anything is timed. ``benchmarks/shift.py`` runs this too, after the corruptions.

Usage: ``python benchmarks/ood.py [--n 4096] [--fit 1347] [--batch 256] [--repeats 5] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit.data import load_digits_data  # noqa: E402
from audit.shift.ood import (  # noqa: E402
    FeatureTap,
    fit_mahalanobis,
    knn_scores,
    logit_scores,
    normalize,
    odin_scores,
)
from audit.zoo import digits_cnn  # noqa: E402


def _batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _each(fn: Callable[[torch.Tensor], Any], parts: list[torch.Tensor]) -> list[Any]:
    return [fn(b) for b in parts]


def run(*, n: int = 4096, fit: int = 1347, batch: int = 256, repeats: int = 5, k: int = 50) -> None:
    import pytorch_ood.detector as pod

    torch.manual_seed(0)
    net = digits_cnn().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    train = load_digits_data("train")
    test = load_digits_data("test")
    x = torch.as_tensor(np.resize(test.x, (n, *test.x.shape[1:])), dtype=torch.float32)
    x_fit = torch.as_tensor(train.x[:fit], dtype=torch.float32)
    y_fit = torch.as_tensor(train.y[:fit])
    tap = FeatureTap(net, net, "8", input_of=True)
    encoder = torch.nn.Sequential(*list(net.children())[:-1])
    parts = _batches(x, batch)

    def feats(t: torch.Tensor) -> torch.Tensor:
        return tap(t)[1]

    z_fit = torch.cat([feats(b) for b in _batches(x_fit, batch)])
    maha = fit_mahalanobis(z_fit, train.y[:fit], 10, ridge=1e-6 / len(z_fit))
    bank = normalize(z_fit)
    ref_maha = pod.Mahalanobis(encoder).fit_features(z_fit.float(), y_fit)
    ref_knn = pod.KNN(encoder, k=k).fit_features(z_fit.float(), y_fit)

    def logits(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(t)

    ours: dict[str, Callable[[torch.Tensor], Any]] = {
        "msp": lambda t: logit_scores(logits(t))["msp"],
        "energy": lambda t: logit_scores(logits(t))["energy"],
        "odin": lambda t: odin_scores(net, t, temperature=1000.0, eps=0.0014),
        "mahalanobis": lambda t: maha.scores(feats(t)),
        "knn": lambda t: knn_scores(feats(t), bank, k),
    }
    theirs: dict[str, Callable[[torch.Tensor], Any]] = {
        "msp": pod.MaxSoftmax(net).predict,
        "energy": pod.EnergyBased(net).predict,
        "odin": pod.ODIN(net, eps=0.0014, temperature=1000.0).predict,
        "mahalanobis": lambda t: ref_maha.predict(t) * len(z_fit),
        "knn": ref_knn.predict,
    }
    for name in ours:  # same scores before any timing
        a, b = ours[name](parts[0]).double(), theirs[name](parts[0]).double()
        if not torch.allclose(a, b, rtol=2e-3, atol=1e-3):
            raise SystemExit(f"{name}: nnaudit and pytorch-ood scores differ (max {float((a - b).abs().max()):.3g})")

    def fits() -> tuple[Callable[[], object], Callable[[], object]]:
        return (lambda: (fit_mahalanobis(z_fit, train.y[:fit], 10), normalize(z_fit)),
                lambda: (pod.Mahalanobis(None).fit_features(z_fit.float(), y_fit),
                         pod.KNN(None, k=k).fit_features(z_fit.float(), y_fit)))

    print(f"OOD detectors: {n} digits inputs in batches of {batch}, fit on {fit} rows, torch threads "
          f"{torch.get_num_threads()}, {repeats} repeats; ms per 1000 inputs (median / fastest)")
    print(f"{'detector':14s} {'nnaudit':>17s} {'pytorch-ood':>17s} {'ratio med':>9s} {'ratio min':>9s}")
    jobs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        name: (partial(_each, ours[name], parts), partial(_each, theirs[name], parts)) for name in ours}
    jobs["fit (maha+knn)"] = fits()
    for name, (mine, ref) in jobs.items():
        mine()
        ref()
        runs: dict[str, list[float]] = {"nnaudit": [], "reference": []}
        for repeat in range(repeats):
            order = [("nnaudit", mine), ("reference", ref)]
            for label, fn in order if repeat % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fn()
                runs[label].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in runs.items()}
        low = {k: min(v) for k, v in runs.items()}
        scale = 1000 * 1000 / n if not name.startswith("fit") else 1000
        print(f"{name:14s} {med['nnaudit'] * scale:8.2f} /{low['nnaudit'] * scale:7.2f} "
              f"{med['reference'] * scale:8.2f} /{low['reference'] * scale:7.2f} "
              f"{med['nnaudit'] / med['reference']:8.3f}x {low['nnaudit'] / low['reference']:8.3f}x"
              + ("  (ms per fit)" if name.startswith("fit") else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--fit", type=int, default=1347)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(n=args.n, fit=args.fit, batch=args.batch, repeats=args.repeats)


if __name__ == "__main__":
    main()
