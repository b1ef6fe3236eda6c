"""Benchmark nnaudit's FGSM and PGD against a hand-written torch loop and peer libraries.

Models: the digits CNN (1x8x8) and a CIFAR-shaped ResNet (3x32x32, random weights: timing only).
Peers, interleaved in one run (each repeat runs every peer once, medians reported):

- ``hand-written``: the minimal PGD loop most people write (``loss.backward()``, weights keep
  ``requires_grad``, so weight gradients are computed too): the baseline, ratio 1.00x;
- ``frozen loop``: the same loop with frozen parameters and ``torch.autograd.grad`` on the input;
- ``nnaudit``: ``attacks.PGD`` / ``attacks.FGSM`` (input gradients only, drops samples once fooled);
- ``foolbox``, and ``torchattacks`` / ``ART`` when importable (install them into a separate venv:
  ``python -m venv --system-site-packages /tmp/benchenv && /tmp/benchenv/bin/pip install --no-deps
  torchattacks adversarial-robustness-toolbox``, then run this script with ``/tmp/benchenv/bin/python``).

Usage: ``python benchmarks/attacks.py [--repeats 5] [--threads 1]``. Prints the time per peer,
the ratio to the hand-written loop, and the robust accuracy each reaches (same eps, steps, step size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from attacks import FGSM, PGD, Domain
from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter

Runner = Callable[[], torch.Tensor]  # returns the adversarial batch


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.skip(x))


def cifar_resnet(width: int = 16) -> nn.Module:
    """A small ResNet for 3x32x32 inputs (ResNet-8 layout)."""
    return nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 10))


def digits_setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from audit.data import load_digits_data
    from audit.demo import _train
    from audit.zoo import digits_cnn

    train, test = load_digits_data("train"), load_digits_data("test")
    model = digits_cnn()
    _train(model, train.x, train.y, epochs=15, lr=3e-3, seed=0)
    return model.eval(), torch.as_tensor(test.x[:256]), torch.as_tensor(test.y[:256])


def cifar_setup(n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = cifar_resnet().eval()
    x = torch.rand(n, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)  # random weights: label = clean prediction, so clean accuracy is 1
    return model, x, y


def hand_written(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                 frozen: bool) -> torch.Tensor:
    for p in model.parameters():
        p.requires_grad_(not frozen)
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        if frozen:
            (grad,) = torch.autograd.grad(loss, adv)
        else:
            model.zero_grad()
            loss.backward()
            grad = adv.grad
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv


def peers(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> dict[str, Runner]:
    alpha = 2.5 * eps / steps
    adapter = TorchModelAdapter(AdaptedNetwork(model, None, SelectOutput(None, "logits", False)), num_classes=10,
                                output_kind="logits", bounds=Bounds(0.0, 1.0), device=torch.device("cpu"),
                                batch_size=len(x), source="bench", sha256="0")
    domain = Domain.build(input_shape=tuple(x.shape[1:]), lower=0.0, upper=1.0)
    xn, yn = x.numpy(), y.numpy()
    out: dict[str, Runner] = {
        "hand-written": lambda: hand_written(model, x, y, eps, alpha, steps, frozen=False),
        "frozen loop": lambda: hand_written(model, x, y, eps, alpha, steps, frozen=True),
        "nnaudit": lambda: torch.as_tensor(PGD(steps=steps, abs_step_size=alpha)(adapter, xn, yn, eps=eps,
                                                                                 domain=domain).x_adv),
        "nnaudit fgsm": lambda: torch.as_tensor(FGSM()(adapter, xn, yn, eps=eps, domain=domain).x_adv),
    }
    import foolbox

    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0), device="cpu")
    fb_pgd = foolbox.attacks.LinfPGD(steps=steps, abs_stepsize=alpha, random_start=True)
    out["foolbox"] = lambda: fb_pgd(fmodel, x, y, epsilons=eps)[1]
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        out["torchattacks"] = lambda: ta(x, y)
    except ImportError as err:
        print(f"skipping torchattacks: cannot import it ({err}); see the module docstring to install it")
    try:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0.0, 1.0))
        art_pgd = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                                  num_random_init=1, batch_size=len(x), verbose=False)
        out["ART"] = lambda: torch.as_tensor(art_pgd.generate(x=xn, y=yn))
    except ImportError as err:
        print(f"skipping ART: cannot import it ({err}); see the module docstring to install it")
    return out


def bench(title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
          repeats: int) -> None:
    runners = peers(model, x, y, eps, steps)
    times: dict[str, list[float]] = {name: [] for name in runners}
    accs: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(repeats):  # interleaved: every peer once per repeat
        for name, run in runners.items():
            torch.manual_seed(r)
            start = time.perf_counter()
            adv = run()
            times[name].append(time.perf_counter() - start)
            with torch.no_grad():
                accs[name].append(float((model(adv.float()).argmax(1) == y).float().mean()))
            for p in model.parameters():  # peers may leave requires_grad on
                p.requires_grad_(False)
    base = statistics.median(times["hand-written"])
    print(f"\n{title}: {len(x)} inputs {list(x.shape[1:])}, L-inf eps={eps}, PGD {steps} steps, "
          f"step {2.5 * eps / steps:.4g}, median of {repeats}")
    print(f"{'peer':<14} {'median s':>9} {'vs hand-written':>16} {'robust acc':>11}")
    for name in runners:
        med = statistics.median(times[name])
        print(f"{name:<14} {med:>9.3f} {med / base:>15.2f}x {statistics.median(accs[name]):>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared box)")
    parser.add_argument("--cifar-batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, x, y = digits_setup()
    bench("digits CNN", model, x, y, eps=0.1, steps=20, repeats=args.repeats)
    model, x, y = cifar_setup(args.cifar_batch)
    bench("CIFAR-shaped ResNet-8 (random weights)", model, x, y, eps=8 / 255, steps=10, repeats=args.repeats)


if __name__ == "__main__":
    main()
