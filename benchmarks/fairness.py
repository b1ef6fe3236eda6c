"""Bootstrap speed: fairlearn MetricFrame per resample vs nnaudit's vectorized bincount bootstrap.

    python benchmarks/fairness.py [--rows 100000] [--resamples 1000] [--frames 5] [--positive 1]

MetricFrame is timed on a few resamples (``--frames``) and extrapolated per resample; the
vectorized bootstrap runs all ``--resamples`` of the statistic the fairness section resamples
(``audit.fairness.parity.group_statistic``: seven group metrics per group, every disparity, and the
headline disparities over the groups with enough rows). Both refer to the favourable label
``--positive``; the script checks the point estimates agree, then prints seconds per resample and
the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from audit.bootstrap import bootstrap
from audit.fairness.groups import BINARY_METRICS, encode_groups, metric_frame
from audit.fairness.parity import group_statistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=5, help="MetricFrame resamples to time")
    parser.add_argument("--positive", type=int, default=1, choices=(0, 1), help="the favourable label")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.rows
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    sex, race = rng.choice(["female", "male"], n), rng.choice(["a", "b", "c", "d"], n, p=[0.6, 0.2, 0.15, 0.05])
    codes, groups = encode_groups([sex, race])
    statistic, _, _ = group_statistic(codes, y, pred, len(groups), 2, positive=args.positive, min_count=30)

    frame = metric_frame(y, pred, {"sex": sex, "race": race}, args.positive)
    ours = statistic(None)
    for j, g in enumerate(groups):
        for m in BINARY_METRICS:
            if abs(ours[f"group.{m}"][j] - float(frame.by_group.loc[tuple(g.split(" & ")), m])) > 1e-9:
                raise SystemExit(f"point estimates differ for group {g}, metric {m}")

    start = time.perf_counter()
    for _ in range(args.frames):
        idx = rng.integers(0, n, n)
        f = metric_frame(y[idx], pred[idx], {"sex": sex[idx], "race": race[idx]}, args.positive)
        f.difference()
    per_frame = (time.perf_counter() - start) / args.frames

    start = time.perf_counter()
    bootstrap(codes, args.resamples, 0, statistic)
    vectorized = (time.perf_counter() - start) / args.resamples

    print(f"rows={n} groups={len(groups)} metrics={len(BINARY_METRICS)} favourable label={args.positive}")
    print(f"MetricFrame per resample:           {per_frame * 1e3:9.2f} ms  (timed on {args.frames})")
    print(f"vectorized bootstrap per resample:  {vectorized * 1e3:9.2f} ms  (timed on {args.resamples})")
    print(f"{args.resamples} resamples: MetricFrame ~{per_frame * args.resamples:.1f} s (extrapolated), "
          f"vectorized {vectorized * args.resamples:.1f} s")
    print(f"ratio (MetricFrame / vectorized): {per_frame / vectorized:.1f}x")


if __name__ == "__main__":
    main()
