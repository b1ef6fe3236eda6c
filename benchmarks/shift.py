"""Benchmark the corruptions: nnaudit's torch implementation (one batched call per corruption, on the chosen device)
against the reference, the ``imagecorruptions`` package (one numpy / OpenCV / PIL call per image), on the same
images at the same severity.

Images: the first ``--images`` Fashion-MNIST test images (default 64), padded to 32x32 and made RGB (three equal
channels: the reference's own treatment of gray images); ``--size 224`` uses 224x224 crops of scikit-learn's
sample photographs instead (ImageNet's size). Each repeat times both implementations once, in alternating order;
the median and the fastest repeat of each are reported, with the time per image and the ratio nnaudit /
reference measured in this run (below 1: nnaudit is faster). On a shared machine other jobs only ever add time,
so the ratio of the fastest repeats is the steadier one. "overall" sums the 19 corruptions.

Then, in the same run, the OOD detectors against pytorch-ood on the same inputs and model (``benchmarks/ood.py``;
``--no-ood`` leaves them out).

Usage: ``python benchmarks/shift.py [--severity 3] [--repeats 5] [--threads 1] [--device cpu|cuda]
[--size 32|224] [--images 64] [--only NAME ...] [--no-ood]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from shift_reference import compatible, fashion_images, import_reference  # noqa: E402

from audit.shift.catalog import IMAGE_CORRUPTIONS  # noqa: E402
from audit.shift.corruptions import corrupt  # noqa: E402
from audit.shift.sampling import sample_seeds  # noqa: E402


def images(size: int, count: int) -> np.ndarray:
    """(count, size, size, 3) uint8 RGB."""
    if size == 32:
        gray = fashion_images(count)
        return np.repeat(gray[..., None], 3, axis=-1)
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    out = []
    for k in range(count):
        photo = photos[k % len(photos)]
        top, left = (k * 37) % (photo.shape[0] - size), (k * 53) % (photo.shape[1] - size)
        out.append(photo[top : top + size, left : left + size])
    return np.stack(out)


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=32, choices=(32, 224))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--no-ood", action="store_true", help="skip the OOD detectors against pytorch-ood")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ic = import_reference()
    data = images(args.size, args.images)
    batch = (torch.as_tensor(data, dtype=torch.float32).permute(0, 3, 1, 2) / 255).contiguous().to(device)
    names = args.only or list(IMAGE_CORRUPTIONS)
    print(f"{len(data)} images {args.size}x{args.size} RGB, severity {args.severity}, device {device}, "
          f"torch threads {args.threads}, {args.repeats} repeats; ms per image (median / fastest)")
    print(f"{'corruption':18s} {'nnaudit':>17s} {'reference':>17s} {'ratio med':>9s} {'ratio min':>9s}")
    totals = {"nnaudit": [0.0, 0.0], "reference": [0.0, 0.0]}
    with compatible(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            seeds = sample_seeds(0, "bench", name, args.severity, range(len(data)))

            def ours(name: str = name, seeds: list[int] = seeds) -> object:
                return corrupt(batch, name, args.severity, seeds=seeds)

            def theirs(name: str = name) -> object:
                np.random.seed(0)
                return [ic.corrupt(img, corruption_name=name, severity=args.severity)  # type: ignore[attr-defined]
                        for img in data]

            ours()  # warm-up: texture cache, kernels, first-call overheads
            theirs()
            runs: dict[str, list[float]] = {"nnaudit": [], "reference": []}
            for repeat in range(args.repeats):
                order = [("nnaudit", ours), ("reference", theirs)]
                for label, fn in order if repeat % 2 == 0 else order[::-1]:
                    runs[label].append(timed(fn, sync))
            row = {k: (statistics.median(v), min(v)) for k, v in runs.items()}
            for k, (med, low) in row.items():
                totals[k][0] += med
                totals[k][1] += low
            per = {k: (1000 * med / len(data), 1000 * low / len(data)) for k, (med, low) in row.items()}
            print(f"{name:18s} {per['nnaudit'][0]:8.3f} /{per['nnaudit'][1]:7.3f} "
                  f"{per['reference'][0]:8.3f} /{per['reference'][1]:7.3f} "
                  f"{row['nnaudit'][0] / row['reference'][0]:8.3f}x {row['nnaudit'][1] / row['reference'][1]:8.3f}x")
    n = len(data)
    ours_t, ref_t = totals["nnaudit"], totals["reference"]
    print(f"{'overall':18s} {1000 * ours_t[0] / n:8.3f} /{1000 * ours_t[1] / n:7.3f} "
          f"{1000 * ref_t[0] / n:8.3f} /{1000 * ref_t[1] / n:7.3f} "
          f"{ours_t[0] / ref_t[0]:8.3f}x {ours_t[1] / ref_t[1]:8.3f}x")
    if not args.no_ood:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from ood import run as run_ood

        print()
        run_ood(repeats=args.repeats)


if __name__ == "__main__":
    main()
