"""Bootstrap speed: fairlearn MetricFrame per resample vs nnaudit's vectorized bincount bootstrap.

    python benchmarks/fairness.py [--rows 100000] [--resamples 1000] [--frames 5]

MetricFrame is timed on a few resamples (``--frames``) and extrapolated per resample; the
vectorized bootstrap runs all ``--resamples``. Both compute the same seven group metrics per
group; the script checks the point estimates agree, then prints seconds per resample and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from audit.fairness_metrics import (
    BINARY_METRICS,
    bootstrap,
    confusion_counts,
    disparities,
    encode_groups,
    metric_frame,
    metrics_from_counts,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=5, help="MetricFrame resamples to time")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.rows
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    sex, race = rng.choice(["female", "male"], n), rng.choice(["a", "b", "c", "d"], n, p=[0.6, 0.2, 0.15, 0.05])
    codes, groups = encode_groups([sex, race])

    frame = metric_frame(y, pred, {"sex": sex, "race": race}, binary=True)
    ours = metrics_from_counts(confusion_counts(codes, y, pred, len(groups), 2))
    for j, g in enumerate(groups):
        for m in BINARY_METRICS:
            if abs(ours[m][j] - float(frame.by_group.loc[tuple(g.split(" & ")), m])) > 1e-9:
                raise SystemExit(f"point estimates differ for group {g}, metric {m}")

    start = time.perf_counter()
    for _ in range(args.frames):
        idx = rng.integers(0, n, n)
        f = metric_frame(y[idx], pred[idx], {"sex": sex[idx], "race": race[idx]}, binary=True)
        f.difference()
    per_frame = (time.perf_counter() - start) / args.frames

    def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
        per = metrics_from_counts(confusion_counts(codes, y, pred, len(groups), 2, index))
        return {**{f"group.{k}": v for k, v in per.items()}, **disparities(per)}

    start = time.perf_counter()
    bootstrap(codes, args.resamples, 0, statistic)
    vectorized = (time.perf_counter() - start) / args.resamples

    print(f"rows={n} groups={len(groups)} metrics={len(BINARY_METRICS)}")
    print(f"MetricFrame per resample:           {per_frame * 1e3:9.2f} ms  (timed on {args.frames})")
    print(f"vectorized bootstrap per resample:  {vectorized * 1e3:9.2f} ms  (timed on {args.resamples})")
    print(f"{args.resamples} resamples: MetricFrame ~{per_frame * args.resamples:.1f} s (extrapolated), "
          f"vectorized {vectorized * args.resamples:.1f} s")
    print(f"ratio (MetricFrame / vectorized): {per_frame / vectorized:.1f}x")


if __name__ == "__main__":
    main()
