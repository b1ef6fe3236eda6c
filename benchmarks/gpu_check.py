"""One prepared check for a GPU machine: the CUDA tests, robustness-section time on the GPU vs the CPU, and
the robust-accuracy change of bf16 autocast vs float32. Prints one table.

Usage (on the GPU machine, from the repository root):

    python benchmarks/gpu_check.py                 # device cuda: tests, timing, precision
    python benchmarks/gpu_check.py --device cpu    # smoke test anywhere: the same steps, CPU against itself

Steps:

1. ``pytest tests/test_gpu.py tests/test_scale_io.py`` (with ``NNAUDIT_TEST_COMPILE=1`` on CUDA, so the
   real torch.compile test runs too); the pass/skip/fail counts go into the table.
2. The robustness section with the demo's defaults (APGD-CE + APGD-DLR, 50 steps, eps 0.05/0.1/0.2,
   FMN on 100 samples, red-flag checks) on the demo digits CNN, trained here with the demo recipe,
   once on the CPU (the baseline, all its cores) and once on ``--device``: seconds and the ratio.
3. The same section on ``--device`` under bf16 autocast: robust accuracy per eps against float32, the
   largest difference in points, and what the precision check (attacks.precision) decides.

The digits CNN is tiny, so a GPU gains little on it (kernel launches dominate); ``--width`` widens it
(timing only matters there; accuracy is still measured on the trained model).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("NNAUDIT_PROGRESS", "0")


def run_tests(device: str, timeout: float) -> str:
    env = {**os.environ, "NNAUDIT_TEST_COMPILE": "1" if device.startswith("cuda") else "0"}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_gpu.py",
               "tests/test_scale_io.py"]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    tail = done.stdout.strip().splitlines()
    for line in tail:
        if line.startswith(("FAILED", "ERROR", "SKIPPED")):
            print("   ", line)
    summary = tail[-1] if tail else done.stderr.strip()[-200:]
    return re.sub(r"=+", "", summary).strip()


def train_demo_cnn(width: int, seed: int) -> Any:
    import torch

    from audit.data import load_digits_data
    from audit.demo import _train
    from audit.zoo import digits_cnn

    train = load_digits_data("train")
    torch.manual_seed(seed)
    model = digits_cnn(width=width)
    _train(model, train.x, train.y, epochs=15, lr=3e-3, seed=seed)
    return model.eval()


def robustness_section(model: Any, device: str, precision: str, samples: int, steps: int,
                       seed: int) -> tuple[float, dict[str, float], Any]:
    """(seconds, worst-case robust accuracy per eps, the adapter) for the demo robustness section."""
    import copy

    import torch

    from attacks.section import RobustnessSection
    from audit.context import AuditContext
    from audit.data import load_digits_data, stratified_subset
    from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter

    data = load_digits_data("test")
    if samples < data.n_samples:
        data = data.subset(stratified_subset(data.y, samples, seed))
    network = AdaptedNetwork(copy.deepcopy(model), None, SelectOutput(None, "logits", False))
    adapter = TorchModelAdapter(network, num_classes=10, output_kind="logits", bounds=Bounds(0.0, 1.0),
                                device=torch.device(device), batch_size=256, source="gpu_check", sha256="0" * 64)
    adapter.set_precision(precision)
    ctx = AuditContext(model=adapter, data=data, run_dir=Path("/tmp/nnaudit-gpu-check"), seed=seed, batch_size=256)
    ctx.clean_logits()  # the shared clean pass is not the section's cost
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = RobustnessSection(steps=steps)(ctx)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if result.status != "ok":
        raise RuntimeError(f"robustness section on {device} ({precision}): {result.status}: {result.error}")
    found = (re.fullmatch(r"robustness\.worst_case\.linf\.eps=([0-9.e-]+)\.robust_accuracy", key)
             for key in result.metrics)
    accuracy = {m.group(1): float(result.metrics[m.group(0)]) for m in found if m is not None}
    return seconds, accuracy, adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (smoke test)")
    parser.add_argument("--samples", type=int, default=450, help="digits test samples attacked (450: all)")
    parser.add_argument("--steps", type=int, default=50, help="APGD steps (the demo: 50)")
    parser.add_argument("--width", type=int, default=16, help="digits CNN width (the demo: 16)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-tests", action="store_true", help="skip step 1")
    parser.add_argument("--test-timeout", type=float, default=420.0)
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here (torch.cuda.is_available() is False); use --device cpu for the smoke test")
    gpu_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "-"
    rows: list[tuple[str, str]] = [("device", f"{args.device} ({gpu_name}); torch {torch.__version__}; "
                                    f"CPU threads {torch.get_num_threads()}")]
    if not args.skip_tests:
        print("1. tests/test_gpu.py + tests/test_scale_io.py ...", flush=True)
        rows.append(("tests (test_gpu, test_scale_io)", run_tests(args.device, args.test_timeout)))

    print("2. robustness section: CPU baseline, then", args.device, "...", flush=True)
    model = train_demo_cnn(args.width, args.seed)
    for device in dict.fromkeys(["cpu", args.device]):  # warm-up: imports, kernels, allocator caches
        robustness_section(model, device, "fp32", 16, 2, args.seed)
    cpu_s, cpu_acc, _ = robustness_section(model, "cpu", "fp32", args.samples, args.steps, args.seed)
    dev_s, dev_acc, _ = robustness_section(model, args.device, "fp32", args.samples, args.steps, args.seed)
    what = f"digits CNN width {args.width}, {args.samples} samples, {args.steps} steps"
    rows.append((f"robustness section, cpu fp32 ({what})", f"{cpu_s:.2f} s (baseline 1.00x)"))
    rows.append((f"robustness section, {args.device} fp32", f"{dev_s:.2f} s ({cpu_s / dev_s:.2f}x faster than cpu)"))

    print(f"3. robustness section under {args.precision} autocast on", args.device, "...", flush=True)
    low_s, low_acc, _ = robustness_section(model, args.device, args.precision, args.samples, args.steps, args.seed)
    rows.append((f"robustness section, {args.device} {args.precision}",
                 f"{low_s:.2f} s ({dev_s / low_s:.2f}x vs {args.device} fp32)"))
    diffs = {eps: 100 * (low_acc[eps] - dev_acc[eps]) for eps in dev_acc}
    for eps in dev_acc:
        rows.append((f"robust accuracy eps={eps}: cpu / {args.device} fp32 / {args.precision}",
                     f"{100 * cpu_acc[eps]:.2f}% / {100 * dev_acc[eps]:.2f}% / {100 * low_acc[eps]:.2f}% "
                     f"({diffs[eps]:+.2f} points)"))
    rows.append((f"largest |{args.precision} - fp32| robust accuracy", f"{max(abs(d) for d in diffs.values()):.2f} "
                 "points (limit 0.5)"))

    from audit.config import parse_config
    from audit.context import AuditContext
    from audit.data import load_digits_data
    from audit.engine.execution import prepare_execution
    from audit.runner import build_plugins

    config = parse_config({"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"},
                           "precision": args.precision, "seed": args.seed, "sections": {"robustness": {}}})
    _, _, adapter = robustness_section(model, args.device, "fp32", 8, 2, args.seed)
    ctx = AuditContext(model=adapter, data=load_digits_data("test"), run_dir=Path("/tmp/nnaudit-gpu-check"),
                       seed=config.seed, batch_size=config.batch_size)
    prepare_execution(ctx, config, build_plugins(config))
    check = adapter.precision_check or {}
    rows.append(("precision check (attacks.precision)", str(check.get("note"))))

    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'check'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
