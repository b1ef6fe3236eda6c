"""Benchmark randomized-smoothing certification and adversarial training against plain loops.

1. CERTIFY: ``attacks.smoothing.certify`` (keyed noise per sample and block of draws, through the model
   adapter, the noisy copies of many samples in each forward pass) against the plain loop of Cohen et al.'s
   reference code (``torch.randn_like`` per batch, a forward, ``bincount``; then the Clopper-Pearson bound),
   same n0, n, batch and model, at n = 1000 and 10000 on the digits CNN; beside them nnaudit one sample at a
   time (``sample_counts`` per sample, what ``certify`` did before), whose certificates the batched ones must
   equal exactly (checked in every run: the script stops if they differ).
2. Adversarial training, one epoch: ``attacks.training.train_defense`` (``pgd_at``) against a
   hand-written PGD-AT loop (uniform start, ``steps`` signed-gradient steps with ``torch.autograd.grad``
   on the input, clamp to the ball and the box, then a cross-entropy step of Adam), same data order
   size, steps, step size and batch size.

Models: the digits CNN (1x8x8, trained) and a CIFAR-shaped ResNet-8 (3x32x32, random weights: timing
only). Peers run interleaved (each repeat runs both once, in alternating order); the median and the
fastest repeat of each are reported with the ratios nnaudit / plain, measured in this run. On a
shared machine other jobs only ever add time, so the ratio of the fastest repeats is the steadier
one (``timeit``'s advice); both are printed. Targets: CERTIFY at or below 0.5x the plain loop at n = 1000
and at or below 1.0x at n = 10000; the PGD-AT epoch at or below 1.05x.

Usage: ``python benchmarks/defenses.py [--repeats 5] [--threads 1] [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from attacks import Domain
from attacks.smoothing import STREAM_ESTIMATE, STREAM_SELECT, CertifyResult, certificates, certify, sample_counts
from attacks.training import TrainingParams, train_defense
from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter
from benchmarks.attacks import cifar_setup, digits_setup

T = TypeVar("T")


def adapter(model: nn.Module, classes: int = 10) -> TorchModelAdapter:
    return TorchModelAdapter(AdaptedNetwork(model, None, SelectOutput(None, "logits", False)), num_classes=classes,
                             output_kind="logits", bounds=Bounds(0.0, 1.0), device=torch.device("cpu"),
                             batch_size=256, source="bench", sha256="0" * 64)


def alternate(runners: dict[str, Callable[[], T]], repeat: int) -> list[tuple[str, Callable[[], T]]]:
    """The peers in turn, the order reversed every other repeat (neither always runs first)."""
    items = list(runners.items())
    return items if repeat % 2 == 0 else items[::-1]


# -- 1. CERTIFY ----------------------------------------------------------------------------------


@torch.no_grad()
def plain_certify(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float,
                  batch: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The loop of Cohen et al.'s reference ``Smooth.certify``, one sample at a time."""
    from scipy.stats import beta, norm

    def counts(xi: torch.Tensor, num: int) -> np.ndarray:
        out = np.zeros(classes, np.int64)
        remaining = num
        while remaining > 0:
            size = min(batch, remaining)
            remaining -= size
            copies = xi.unsqueeze(0).repeat(size, *([1] * xi.ndim))
            pred = model(copies + torch.randn_like(copies) * sigma).argmax(1)
            out += np.bincount(pred.numpy(), minlength=classes)
        return out

    preds, radii = [], []
    for xi in x:
        c_a = int(counts(xi, n0).argmax())
        n_a = int(counts(xi, n)[c_a])
        p_a = beta.ppf(alpha, n_a, n - n_a + 1) if n_a else 0.0
        preds.append(c_a if p_a >= 0.5 else -1)
        radii.append(sigma * norm.ppf(p_a) if p_a >= 0.5 else 0.0)
    return np.array(preds), np.array(radii)


def per_sample_certify(model: TorchModelAdapter, x: np.ndarray, y: np.ndarray, *, sigma: float, n0: int, n: int,
                       alpha: float, batch: int) -> CertifyResult:
    """nnaudit's CERTIFY one sample at a time (what ``certify`` did before it batched samples): the same keyed
    draws through ``sample_counts``, the same decision."""
    ids = np.arange(len(x))
    xt = torch.as_tensor(x)
    counts0 = np.stack([sample_counts(model, xt[i], sigma=sigma, num=n0, seed=0, stream=STREAM_SELECT, sample_id=i,
                                      batch=batch) for i in ids])
    counts = np.stack([sample_counts(model, xt[i], sigma=sigma, num=n, seed=0, stream=STREAM_ESTIMATE, sample_id=i,
                                     batch=batch) for i in ids])
    return certificates(counts0, counts, y, ids, sigma=sigma, n0=n0, n=n, alpha=alpha, seed=0)


def bench_certify(title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, n0: int,
                  n: int, batch: int, repeats: int) -> tuple[float, float]:
    wrapped = adapter(model)
    results: dict[str, CertifyResult] = {}

    def ours(name: str, fn: Callable[..., CertifyResult]) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            results[name] = fn(wrapped, x.numpy(), y.numpy(), sigma=sigma, n0=n0, n=n, alpha=0.001, batch=batch)
            return results[name].prediction
        return call

    runners: dict[str, Callable[[], np.ndarray]] = {
        "plain loop": lambda: plain_certify(model, x, sigma=sigma, n0=n0, n=n, alpha=0.001, batch=batch)[0],
        "per sample": ours("per sample", per_sample_certify),
        "nnaudit": ours("nnaudit", certify),
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    accuracy: dict[str, float] = {}
    for repeat in range(repeats):
        for name, run in alternate(runners, repeat):
            start = time.perf_counter()
            pred = run()
            times[name].append(time.perf_counter() - start)
            accuracy[name] = float((pred == y.numpy()).mean())
    a, b = results["nnaudit"], results["per sample"]
    same = all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("prediction", "radius", "p_lower", "counts0",
                                                                       "counts"))
    print(f"\nCERTIFY, {title}: {len(x)} samples, sigma {sigma:g}, n0 {n0}, n {n}, batch {batch}, "
          f"{repeats} repeats; nnaudit (samples batched) vs one sample at a time: certificates "
          f"{'IDENTICAL' if same else 'DIFFERENT'} (prediction, radius, p_lower, counts)")
    if not same:
        raise SystemExit("the batched CERTIFY differs from the per-sample one")
    ratios = report(times, "plain loop", accuracy, "certified acc (r=0)")
    share = model_share(model, runners["nnaudit"])
    print(f"where nnaudit's time goes: the model's forward passes {share:.0%}, the rest (keyed noise, bookkeeping) "
          f"{1 - share:.0%}")
    return ratios


def model_share(model: nn.Module, run: Callable[[], object]) -> float:
    """The share of one call of ``run`` spent inside ``model``'s forward passes (timed by module hooks)."""
    spent, started = [0.0], [0.0]

    def pre(*_: object) -> None:
        started[0] = time.perf_counter()

    def post(*_: object) -> None:
        spent[0] += time.perf_counter() - started[0]

    handles = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
    try:
        start = time.perf_counter()
        run()
        total = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    return spent[0] / total


# -- 2. adversarial training ---------------------------------------------------------------------


def plain_pgd_at_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, alpha: float,
                       batch: int, lr: float, seed: int) -> float:
    """One epoch of hand-written PGD adversarial training; returns the adversarial accuracy."""
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    hits = 0
    for i in range(0, len(x), batch):
        idx = order[i : i + batch]
        xb, yb = x[idx], y[idx]
        model.eval()
        adv = (xb + torch.empty_like(xb).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), yb), adv)
            adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), xb - eps), xb + eps).clamp(0, 1)
        model.train()
        opt.zero_grad(set_to_none=True)
        logits = model(adv)
        F.cross_entropy(logits, yb).backward()
        opt.step()
        hits += int((logits.argmax(1) == yb).sum())
    return hits / len(x)


def bench_training(title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                   batch: int, repeats: int) -> tuple[float, float]:
    alpha = 2.5 * eps / steps
    domain = Domain.build(input_shape=tuple(x.shape[1:]), lower=0.0, upper=1.0)
    params = TrainingParams(method="pgd_at", epochs=1, eps=eps, steps=steps, batch_size=batch, lr=1e-3)

    def ours() -> float:
        history = train_defense(copy.deepcopy(model), x.numpy(), y.numpy(), params=params, domain=domain)
        return float(history.epochs[0].adversarial_accuracy or 0.0)

    runners: dict[str, Callable[[], float]] = {
        "hand-written": lambda: plain_pgd_at_epoch(copy.deepcopy(model), x, y, eps=eps, steps=steps, alpha=alpha,
                                                   batch=batch, lr=1e-3, seed=0),
        "nnaudit": ours,
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    accuracy: dict[str, float] = {}
    for repeat in range(repeats):
        for name, run in alternate(runners, repeat):
            torch.manual_seed(0)
            start = time.perf_counter()
            accuracy[name] = run()
            times[name].append(time.perf_counter() - start)
    print(f"\nPGD adversarial training, one epoch, {title}: {len(x)} samples, eps {eps:g}, {steps} steps of "
          f"{alpha:.4g}, batch {batch}, {repeats} repeats")
    return report(times, "hand-written", accuracy, "adv. train acc")


def report(times: dict[str, list[float]], baseline: str, accuracy: dict[str, float],
           what: str) -> tuple[float, float]:
    """Print median and fastest time per peer with their ratios to the baseline; return nnaudit's ratios
    (median, fastest)."""
    base_med, base_min = statistics.median(times[baseline]), min(times[baseline])
    print(f"{'peer':<14} {'median s':>9} {'ratio':>7} {'fastest s':>10} {'ratio':>7} {what:>20}")
    for name, values in times.items():
        med, low = statistics.median(values), min(values)
        print(f"{name:<14} {med:>9.3f} {med / base_med:>6.3f}x {low:>10.3f} {low / base_min:>6.3f}x "
              f"{accuracy[name]:>20.3f}")
    return statistics.median(times["nnaudit"]) / base_med, min(times["nnaudit"]) / base_min


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared box)")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--certify-only", action="store_true", help="only the CERTIFY comparisons")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios: dict[str, tuple[float, float]] = {}
    model, x, y = digits_setup()
    k = 4 if args.quick else 20
    for n in (1000, 10_000):
        ratios[f"certify n={n}, digits CNN"] = bench_certify("digits CNN", model, x[:k], y[:k], sigma=0.25, n0=100,
                                                             n=n, batch=1000, repeats=args.repeats)
    from audit.data import load_digits_data

    train = load_digits_data("train")
    xt, yt = torch.as_tensor(train.x), torch.as_tensor(train.y)
    if args.quick:
        xt, yt = xt[:256], yt[:256]
    if not args.certify_only:
        ratios["PGD-AT epoch, digits CNN"] = bench_training("digits CNN", model, xt, yt, eps=0.1, steps=10,
                                                            batch=128, repeats=args.repeats)
    cifar, cx, cy = cifar_setup(2 if args.quick else 4)
    ratios["certify n=1000, ResNet-8"] = bench_certify("CIFAR-shaped ResNet-8", cifar, cx, cy, sigma=0.25, n0=100,
                                                       n=1000, batch=512, repeats=args.repeats)
    cifar_train = torch.rand(128 if args.quick else 512, 3, 32, 32)
    with torch.no_grad():
        labels = cifar(cifar_train).argmax(1)
    if not args.certify_only:
        ratios["PGD-AT epoch, ResNet-8"] = bench_training("CIFAR-shaped ResNet-8", cifar, cifar_train, labels,
                                                          eps=8 / 255, steps=5, batch=128, repeats=args.repeats)
    print("\nratios nnaudit / plain, measured in this run: median, fastest repeat (targets: CERTIFY <= 0.5x at "
          "n=1000, <= 1.0x at n=10000; PGD-AT epoch <= 1.05x)")
    for name, (med, low) in ratios.items():
        target = 0.5 if "n=1000," in name else 1.0 if "n=10000" in name else 1.05
        print(f"  {name:<30} {med:.3f}x  {low:.3f}x  {'ok' if med <= target else 'ABOVE TARGET'} (<= {target}x)")


if __name__ == "__main__":
    main()
