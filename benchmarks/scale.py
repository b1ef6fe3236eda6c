"""Benchmark: the robustness section at scale. Time and peak memory against the number of samples, the cost of
chunking against one pass over all samples (what the section did before chunks), and Ray with 1 and 2 workers
against a single process on the same machine.

Run: ``python benchmarks/scale.py [--sizes 250 500 1000 2000] [--repeats 3] [--steps 10] [--no-ray]``.

Workload: Fashion-MNIST test images (/usr/share/datasets/fashion-mnist, 28x28), a small CNN trained for one epoch
on 2,000 training images, L-inf PGD (10 steps, random start) at eps 0.1; red flags, minimal-norm attacks and the
gallery off, so the section's time is the attack pass. Every measurement runs in a fresh subprocess with one torch
thread (each Ray worker too) and reports the section's seconds and the process's peak resident memory (VmHWM: the
kernel's high-water mark, counting torch's allocations).

1. Samples: the section (default ``chunk_size`` 512) at each size: seconds, seconds per sample, peak memory; the
   peak at the largest size over the smallest (8x the samples with the default sizes; target < 1.5x).
2. Chunk overhead: the section in chunks vs ``evaluate_norm`` on every sample in one call (the single pass the
   section made before chunks: all adversarial examples in memory), both timed from the same clean predictions;
   interleaved, median of ``--repeats`` (target: at most 5% more).
3. Ray: the same section through ``RayBackend`` with 1 and 2 workers (a local Ray with that many CPUs, started
   and its workers warmed up before the clock starts) against the single process, at the largest size.

Ratios compare runs made in the same invocation, so they stay meaningful on a loaded machine; absolute seconds
do not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# this file is named like nothing it imports, but keep its folder off the import path like the other benchmarks
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == _HERE:
    sys.path.pop(0)
sys.path.insert(0, os.path.dirname(_HERE))

FASHION = "/usr/share/datasets/fashion-mnist"
EPS = 0.1
STEPS = 10


def fashion(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from audit.data import read_idx

    prefix = "train" if split == "train" else "t10k"
    x = read_idx(f"{FASHION}/{prefix}-images-idx3-ubyte.gz")[:n].astype(np.float32)[:, None] / 255.0
    y = read_idx(f"{FASHION}/{prefix}-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    return x, y


def small_cnn() -> Any:
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM starts afresh at exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def train(state: Path) -> None:
    import torch

    from audit.demo import _train

    torch.manual_seed(0)
    model = small_cnn()
    x, y = fashion("train", 2000)
    _train(model, x, y, epochs=1, lr=3e-3, seed=0)
    torch.save(model.state_dict(), state)


def context(state: str, n: int, run_dir: str) -> Any:
    import torch

    from audit.context import AuditContext
    from audit.data import AuditData
    from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter

    model = small_cnn()
    model.load_state_dict(torch.load(state, weights_only=True))
    model.eval()
    x, y = fashion("test", n)
    data = AuditData(name="fashion-mnist", x=x, y=y, class_names=[str(c) for c in range(10)], modality="image")
    network = AdaptedNetwork(model, None, SelectOutput(None, "logits", False))
    adapter = TorchModelAdapter(network, num_classes=10, output_kind="logits", bounds=Bounds(0.0, 1.0),
                                device=torch.device("cpu"), batch_size=256, source="benchmark", sha256="0" * 64)
    return AuditContext(model=adapter, data=data, run_dir=Path(run_dir), seed=0, batch_size=256)


def section() -> Any:
    from attacks.section import RobustnessSection

    return RobustnessSection(eps=[EPS], attacks=["pgd"], steps=STEPS, minimal_norm=[], red_flags=False,
                             gallery_size=0, max_samples=None)


def child(mode: str, state: str, n: int, workers: int, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = context(state, n, run_dir)
        before = rss_mb()
        if mode == "single":  # the section's attack pass before chunks: evaluate_norm on every sample at once
            from attacks.base import Domain
            from attacks.evaluate import evaluate_norm, make_attack

            start = time.perf_counter()  # after the imports, like the section below
            pred = ctx.clean_predictions()
            ev = evaluate_norm(ctx.model, ctx.data.x, ctx.data.y, norm="linf", eps=[EPS],
                               attacks=[make_attack("pgd", norm="linf", steps=STEPS)], minimal_attacks=[],
                               minimal_index=np.zeros(0, np.int64), domain=Domain.from_model_data(ctx.model, ctx.data),
                               clean_pred=pred, batch_size=ctx.batch_size)
            seconds = time.perf_counter() - start
            robust = float(ev.worst_accuracy(EPS))
        else:
            if mode == "ray":
                import ray

                from audit.engine.backends import RayBackend

                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)

                @ray.remote(num_cpus=1)
                def warm() -> int:
                    import attacks.chunks  # noqa: F401 - torch and the attacks imported before the clock starts

                    time.sleep(1.0)
                    return os.getpid()

                pids = set(ray.get([warm.remote() for _ in range(workers)]))
                assert len(pids) == workers, pids
                ctx.backend = RayBackend(workers=workers, threads_per_worker=1)
            plugin = section()  # imports the section's modules before the clock starts
            start = time.perf_counter()
            ctx.clean_predictions()
            result = plugin(ctx)
            seconds = time.perf_counter() - start
            if result.status != "ok":
                raise SystemExit(f"section failed: {result.error}")
            robust = float(result.metrics[f"robustness.worst_case.linf.eps={EPS:g}.robust_accuracy"])
        Path(out).write_text(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "before_mb": before,
                                         "robust": robust}))


def measure(mode: str, state: Path, n: int, workers: int = 0) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NNAUDIT_PROGRESS": "0",
           "GIT_PYTHON_REFRESH": "quiet"}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, "--state", str(state),
                           "--n", str(n), "--workers", str(workers), "--out", out, "--steps", str(STEPS)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} n={n} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(Path(out).read_text())
    os.unlink(out)
    return result


def main() -> None:
    global STEPS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the chunk-overhead pair")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--steps", type=int, default=STEPS, help="PGD steps (more steps: more work per chunk, so "
                        "Ray's fixed cost per task weighs less)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    STEPS = args.steps
    if args.child:
        child(args.child, args.state, args.n, args.workers, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "cnn.pt"
        train(state)
        print(f"robustness section: L-inf PGD {STEPS} steps at eps {EPS}, Fashion-MNIST 28x28, 1 torch thread per "
              "process, chunk_size 512 (default)\n")
        print("1. samples            seconds   s/sample   peak MB   robust acc")
        rows = {}
        for n in args.sizes:
            r = rows[n] = measure("section", state, n)
            print(f"   {n:>6}           {r['seconds']:8.2f}   {1e3 * r['seconds'] / n:6.2f} ms"
                  f"   {r['peak_mb']:7.0f}   {r['robust']:.3f}")
        small, large = min(args.sizes), max(args.sizes)
        print(f"   peak memory at {large} / at {small} samples ({large / small:g}x): "
              f"{rows[large]['peak_mb'] / rows[small]['peak_mb']:.2f}x (target < 1.5x)")
        per = [rows[n]["seconds"] / n for n in args.sizes]
        print(f"   seconds per sample, largest / smallest size: {per[-1] / per[0]:.2f}x\n")

        single, chunked = [], []
        for _ in range(args.repeats):
            single.append(measure("single", state, large))
            chunked.append(measure("section", state, large))
        s = statistics.median(r["seconds"] for r in single)
        c = statistics.median(r["seconds"] for r in chunked)
        print(f"2. chunk overhead at {large} samples (median of {args.repeats}, interleaved)")
        peak_single = statistics.median(r["peak_mb"] for r in single)
        peak_chunked = statistics.median(r["peak_mb"] for r in chunked)
        print(f"   one pass (evaluate_norm, all samples): {s:8.2f} s, peak {peak_single:.0f} MB")
        print(f"   section in chunks of 512:              {c:8.2f} s, peak {peak_chunked:.0f} MB")
        print(f"   overhead: {100 * (c / s - 1):+.1f}% (target <= 5%); robust acc {single[0]['robust']:.3f} vs "
              f"{chunked[0]['robust']:.3f} (same attack, other random draws)\n")

        if args.no_ray:
            return
        print(f"3. Ray at {large} samples (local Ray, 1 torch thread per worker, workers warmed up)")
        local = statistics.median(r["seconds"] for r in chunked)
        one = measure("ray", state, large, workers=1)
        two = measure("ray", state, large, workers=2)
        print(f"   single process:  {local:8.2f} s   1.00x")
        print(f"   Ray, 1 worker:   {one['seconds']:8.2f} s   {local / one['seconds']:.2f}x")
        print(f"   Ray, 2 workers:  {two['seconds']:8.2f} s   {local / two['seconds']:.2f}x  "
              f"(2 vs 1 worker: {one['seconds'] / two['seconds']:.2f}x)")
        print(f"   robust acc: single {chunked[0]['robust']:.3f}, Ray 1 worker {one['robust']:.3f}, "
              f"2 workers {two['robust']:.3f} (equal: seeds per chunk)")
        print(f"\ncores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end (a shared machine "
              "makes absolute seconds noisy)")


if __name__ == "__main__":
    main()
