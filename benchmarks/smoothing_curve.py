"""Certified vs empirical robust accuracy of the smoothed demo digits CNN (docs/defenses.md's table).

Trains the demo's digits CNN (``nnaudit demo``'s recipe), then for each sigma runs CERTIFY on the
digits test split and EOT-PGD (L2) on the same smoothed classifier, and prints certified accuracy and
empirical robust accuracy at each L2 radius. Certified must never exceed empirical.

Usage: ``python benchmarks/smoothing_curve.py [--samples 450] [--n 10000] [--sigma 0.12 0.25 0.5]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from attacks.smoothing import certify, curve_rows, smoothed_empirical
from audit.data import load_digits_data, stratified_subset
from audit.demo import _train
from audit.zoo import digits_cnn
from benchmarks.defenses import adapter

RADII = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=450)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.12, 0.25, 0.5])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eot", type=int, default=16)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_digits_data("train"), load_digits_data("test")
    torch.manual_seed(0)
    model = digits_cnn()
    _train(model, train.x, train.y, epochs=15, lr=3e-3, seed=0)
    index = stratified_subset(test.y, args.samples, 0)
    x, y = test.x[index], test.y[index]
    net = adapter(model.eval())
    print(f"demo digits CNN, {len(y)} test images, n0 {args.n0}, n {args.n}, alpha {args.alpha}; EOT-PGD L2 "
          f"{args.steps} steps, {args.eot} draws per step, majority vote of {args.n_eval}")
    for sigma in args.sigma:
        start = time.perf_counter()
        cert = certify(net, x, y, sigma=sigma, n0=args.n0, n=args.n, alpha=args.alpha, batch=1024, ids=index)
        mid = time.perf_counter()
        emp = smoothed_empirical(net, x, y, sigma=sigma, radii=RADII, steps=args.steps, eot_samples=args.eot,
                                 n_eval=args.n_eval, batch=1024, ids=index)
        end = time.perf_counter()
        print(f"\nsigma {sigma:g} (abstained {cert.abstained.mean():.3f}; certify {mid - start:.1f} s, "
              f"EOT-PGD {end - mid:.1f} s)")
        print(f"{'L2 radius':>10} {'certified':>10} {'empirical':>10}")
        for r, c, e in curve_rows(cert, emp, RADII):
            flag = "" if e is None or c <= e else "  CERTIFIED ABOVE EMPIRICAL"
            print(f"{r:>10.2f} {c:>10.3f} {e if e is not None else float('nan'):>10.3f}{flag}")


if __name__ == "__main__":
    main()
