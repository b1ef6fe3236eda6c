"""What the gradient-masking red flags cost, against the robustness section that runs them.

The red flags reuse the section's own attack outputs (see attacks/redflags/): this script measures the
split. It runs the robustness section with its defaults (APGD-CE + APGD-DLR, 50 steps, FMN on 100
samples, red flags on 100 check samples) at one eps per norm on 200 test images of

- digits (8x8), with the demo's CNN recipe;
- Fashion-MNIST (28x28, the IDX files in /usr/share/datasets/fashion-mnist or ``--fashion DIR``), with a
  small CNN trained here on ``--train`` images for ``--epochs`` epochs.

The eps are chosen where an undefended model keeps part of its accuracy (the checks attack the samples
the headline calls robust, so this is where they cost most). Per run it prints the section's seconds,
the headline attacks' seconds (bounded and minimal-norm, from the settings table), the red flags'
seconds (from the red-flag table) and their share of the section (target: under 25%), then each check's
seconds and verdict.

Usage: ``python benchmarks/redflags.py [--threads 1] [--samples 200] [--skip-fashion]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("NNAUDIT_PROGRESS", "0")

from attacks.section import RobustnessSection
from audit.context import AuditContext
from audit.data import AuditData, load_digits_data, read_idx, stratified_subset
from audit.demo import _train
from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter
from audit.zoo import digits_cnn

FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def fashion(root: Path, n_train: int, epochs: int) -> tuple[nn.Module, AuditData]:
    def images(name: str) -> np.ndarray:
        return read_idx(next(root.glob(f"{name}-images*")))[:, None].astype(np.float32) / 255.0

    def labels(name: str) -> np.ndarray:
        return read_idx(next(root.glob(f"{name}-labels*"))).astype(np.int64)

    x, y = images("train")[:n_train], labels("train")[:n_train]
    torch.manual_seed(0)
    model = fashion_cnn()
    _train(model, x, y, epochs=epochs, lr=1e-3, seed=0, batch_size=128)
    names = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
    test = AuditData(name="fashion-mnist[test]", x=images("t10k"), y=labels("t10k"), class_names=names,
                     modality="image", lower=np.zeros((1, 28, 28), np.float32),
                     upper=np.ones((1, 28, 28), np.float32))
    return model.eval(), test


def digits() -> tuple[nn.Module, AuditData]:
    train = load_digits_data("train")
    torch.manual_seed(0)
    model = digits_cnn()
    _train(model, train.x, train.y, epochs=15, lr=3e-3, seed=0)
    return model.eval(), load_digits_data("test")


def measure(name: str, model: nn.Module, data: AuditData, samples: int, norm: str, eps: float) -> float:
    data = data.subset(stratified_subset(data.y, samples, 0))
    adapter = TorchModelAdapter(AdaptedNetwork(model, None, SelectOutput(None, "logits", False)),
                                num_classes=data.num_classes, output_kind="logits", bounds=Bounds(0.0, 1.0),
                                device=torch.device("cpu"), batch_size=256, source="bench", sha256="0" * 64)
    ctx = AuditContext(model=adapter, data=data, run_dir=Path("/tmp/nnaudit-bench-redflags"), seed=0)
    start = time.perf_counter()
    result = RobustnessSection(norm=norm, eps=[eps])(ctx)
    section = time.perf_counter() - start
    if result.status != "ok":
        raise SystemExit(f"{name}: the section failed: {result.error}")
    tables: dict[str, Any] = {t.name: t for t in result.tables}
    attacks = sum(float(r[-1]) for r in tables["settings"].rows)
    flags = sum(float(r[5]) for r in tables["red_flags"].rows)
    m = result.metrics
    print(f"\n{name} ({samples} images, {norm} eps={eps:g}): clean {m['robustness.clean_accuracy']:.3f}, worst case "
          f"{m[f'robustness.worst_case.{norm}.eps={eps:g}.robust_accuracy']:.3f}, reliable "
          f"{m.get('robustness.reliable')}")
    print(f"  section {section:7.2f} s | headline attacks {attacks:6.2f} s | red flags {flags:6.2f} s "
          f"= {flags / section:5.1%} of the section")
    for row in tables["red_flags"].rows:
        print(f"    {row[0]:<46} {row[2]:<13} {float(row[5]):6.3f} s")
    return flags / section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--fashion", type=Path, default=FASHION)
    parser.add_argument("--train", type=int, default=10_000, help="Fashion-MNIST training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-fashion", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shares = []
    model, data = digits()
    shares.append(measure("digits CNN", model, data, args.samples, "linf", 0.1))
    shares.append(measure("digits CNN", model, data, args.samples, "l2", 0.5))
    if not args.skip_fashion:
        if not args.fashion.is_dir():
            raise SystemExit(f"no Fashion-MNIST at {args.fashion}; pass --fashion DIR or --skip-fashion")
        model, data = fashion(args.fashion, args.train, args.epochs)
        shares.append(measure("Fashion-MNIST CNN", model, data, args.samples, "linf", 0.03))
        shares.append(measure("Fashion-MNIST CNN", model, data, args.samples, "l2", 0.5))
    print(f"\nred flags / section: largest share {max(shares):.1%} (target < 25%)")


if __name__ == "__main__":
    main()
