"""Benchmark: what each explanation method costs against its model-evaluation floor, and nnaudit vs shap / lime
called directly; with ``--memory``, the peak memory of occlusion on MNIST-sized images.

Run: ``python benchmarks/explain.py [--samples 100] [--threads 2]``. Prints, per method, seconds per sample, the
model evaluations it made (rows through the network, counted by the explainer's counter), and the ratio of its
time to ``evaluations x per-row time of one batched pass`` measured in the same run at the same batch size
(forward only for perturbation methods, forward + input gradient for gradient methods), the two timed
alternately. Then shap and lime called directly with their best batch settings against the same work through
nnaudit, and how much of lime's and shap's time is the model (the rest is the library's own per-sample work).
Last, lime and KernelSHAP batched across samples (``benchmarks/surrogates.py``: floors on the digits CNN and a
breast-cancer MLP, equality with the libraries, lime against lime called directly); ``--surrogates`` runs only
that part.

``python benchmarks/explain.py --memory [--samples 20] [--old]``: occlusion (2x2 windows, stride 1) on 28x28
Fashion-MNIST test images (/usr/share/datasets/fashion-mnist) with the CNN of PyTorch's MNIST example, trained
for one epoch on 2,000 training images. Each variant runs in a fresh subprocess and reports its peak resident
memory (the kernel's high-water mark, VmHWM: torch's allocations are invisible to tracemalloc), the memory before
the call and the seconds, and the largest difference of its attributions from nnaudit's: nnaudit within its default
memory budget, captum called directly with 4 perturbations per evaluation, and with ``--old`` captum with
every window of the batch in one evaluation (what nnaudit did before the budget; about 10 GB).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# this file is named like the package it measures: keep its folder off the import path
_HERE = os.path.dirname(os.path.abspath(__file__))


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def floor_pass(network: torch.nn.Module, x: torch.Tensor, rows: int, *, gradient: bool) -> Callable[[], None]:
    """One batched pass of ``rows`` rows: forward, or forward + input gradient (the unit of a gradient method)."""
    batch = x[torch.arange(rows) % len(x)].clone()
    target = torch.zeros(rows, dtype=torch.long)

    def once() -> None:
        if gradient:
            xb = batch.clone().requires_grad_(True)
            out = network(xb).gather(1, target[:, None]).sum()
            torch.autograd.grad(out, xb)
        else:
            with torch.no_grad():
                network(batch)

    once()
    return once


def interleaved(method: Callable[[], Any], floor: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Best-of times of ``method`` and ``floor``, alternated so that load from other processes hits both alike."""
    method_times, floor_times = [], []
    for _ in range(repeats):
        method_times.append(best_of(method, 1))
        floor_times.append(best_of(floor, 1))
    return min(method_times), min(floor_times)


class OwnTime:
    """Time nnaudit's own code inside an explainer: everything outside the library call, plus the time in
    nnaudit's callback (numpy <-> torch, counting) outside the network's forward. On a shared machine the A/B
    difference of two timings is mostly noise; this is measured inside one run."""

    def __init__(self, explainer: Any, network: torch.nn.Module) -> None:
        self.library = self.callback = self.model = 0.0
        self.explainer = explainer
        inner = explainer.explainer
        self.name = "explain_instance" if hasattr(inner, "explain_instance") else "shap_values"
        self.original = getattr(inner, self.name)
        setattr(inner, self.name, self._timed(self.original, "library"))
        for fn in ("numpy_proba", "numpy_logits"):
            setattr(explainer, fn, self._timed(getattr(explainer, fn), "callback"))
        self.handles = [network.register_forward_pre_hook(self._pre), network.register_forward_hook(self._post)]
        self._start = 0.0

    def _timed(self, fn: Callable[..., Any], slot: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self, slot, getattr(self, slot) + time.perf_counter() - start)
        return wrapper

    def _pre(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.model += time.perf_counter() - self._start

    def reset(self) -> None:
        self.library = self.callback = self.model = 0.0

    def own_seconds(self, total: float) -> float:
        callback_own = max(0.0, self.callback - self.model) if self.callback else 0.0
        return max(0.0, total - self.library) + callback_own

    def restore(self) -> None:
        setattr(self.explainer.explainer, self.name, self.original)
        for fn in ("numpy_proba", "numpy_logits"):
            delattr(self.explainer, fn)
        for handle in self.handles:
            handle.remove()


FASHION = "/usr/share/datasets/fashion-mnist"
MEMORY_VARIANTS = ("nnaudit", "captum, 4 per evaluation", "captum, every window at once")


def mnist_cnn() -> torch.nn.Module:
    """The network of PyTorch's MNIST example (pytorch/examples, mnist/main.py) as a Sequential."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(128, 10))


def fashion(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from audit.data import read_idx

    prefix = "train" if split == "train" else "t10k"
    x = read_idx(f"{FASHION}/{prefix}-images-idx3-ubyte.gz")[:n].astype(np.float32)[:, None] / 255.0
    y = read_idx(f"{FASHION}/{prefix}-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    return x, y


def peak_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ``ru_maxrss`` would also count
    the parent's memory at the fork that started this process."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(variant: str, state: str, samples: int, out: str) -> None:
    """One variant in this (fresh) process; prints 'peak_mb before_mb seconds'."""
    from captum.attr import Occlusion

    from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter
    from explain.captum_methods import OcclusionExplainer

    module = mnist_cnn()
    module.load_state_dict(torch.load(state, weights_only=True))
    module.eval()
    x, _ = fashion("test", samples)
    with torch.no_grad():
        target = module(torch.as_tensor(x)).argmax(dim=1).numpy()
    before = peak_mb()
    start = time.perf_counter()
    if variant == "nnaudit":
        network = AdaptedNetwork(module, None, SelectOutput(None, "logits", False))
        adapter = TorchModelAdapter(network, num_classes=10, output_kind="logits", bounds=Bounds(0.0, 1.0),
                                    device=torch.device("cpu"), batch_size=256, source="bench", sha256="0" * 64)
        attr = OcclusionExplainer(adapter, batch_size=64).explain(x, target)
    else:
        per_eval = 4 if variant.startswith("captum, 4") else 27 * 27
        with torch.no_grad():
            attr = Occlusion(module).attribute(torch.as_tensor(x), sliding_window_shapes=(1, 2, 2), strides=(1, 1, 1),
                                               baselines=0.0, target=torch.as_tensor(target),
                                               perturbations_per_eval=per_eval).numpy()
    seconds = time.perf_counter() - start
    np.save(out, attr)
    print(f"{peak_mb():.0f} {before:.0f} {seconds:.2f}")


def memory_main(args: argparse.Namespace) -> None:
    from audit.demo import _train

    torch.manual_seed(0)
    module = mnist_cnn()
    x, y = fashion("train", 2000)
    _train(module, x, y, epochs=1, lr=1e-3, seed=0)
    test_x, test_y = fashion("test", 1000)
    with torch.no_grad():
        accuracy = float((module.eval()(torch.as_tensor(test_x)).argmax(dim=1).numpy() == test_y).mean())
    print(f"occlusion (2x2 windows, stride 1: 729 per image) on {args.samples} Fashion-MNIST 28x28 test images; "
          f"CNN of PyTorch's MNIST example (1.2M parameters), one epoch on 2,000 images, test accuracy "
          f"{accuracy:.3f} on 1,000; {args.threads} threads; each variant in a fresh process\n")
    print(f"{'variant':<32}{'peak RSS MB':>12}{'before MB':>11}{'seconds':>9}{'max |diff| vs nnaudit':>23}")
    variants = MEMORY_VARIANTS if args.old else MEMORY_VARIANTS[:2]
    with tempfile.TemporaryDirectory() as folder:
        state = os.path.join(folder, "cnn.pt")
        torch.save(module.state_dict(), state)
        results: dict[str, np.ndarray] = {}
        for variant in variants:
            out = os.path.join(folder, f"{len(results)}.npy")
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            run = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", variant, "--state", state,
                                  "--samples", str(args.samples), "--out", out], capture_output=True, text=True,
                                 env=env, check=True)
            peak, before, seconds = run.stdout.split()[-3:]
            results[variant] = np.load(out)
            diff = float(np.abs(results[variant] - results["nnaudit"]).max())
            print(f"{variant:<32}{peak:>12}{before:>11}{seconds:>9}{diff:>23.3g}")


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("NNAUDIT_PROGRESS", "0")
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    from audit.data import load_digits_data
    from audit.demo import _train
    from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter
    from audit.zoo import digits_cnn
    from explain.captum_methods import (
        DeepLiftExplainer,
        GradientShapExplainer,
        IntegratedGradientsExplainer,
        OcclusionExplainer,
        SaliencyExplainer,
    )
    from explain.lime_methods import LimeExplainer, _no_progress_bar, grid_segments
    from explain.lrp import LRPExplainer
    from explain.shap_methods import ShapDeepExplainer, ShapGradientExplainer, ShapKernelExplainer, import_shap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--library-samples", type=int, default=50,
                        help="samples for the per-sample libraries (kernel shap, lime) and the direct comparisons")
    parser.add_argument("--methods", default="",
                        help="comma-separated methods to time (default: all, then the direct comparisons)")
    parser.add_argument("--memory", action="store_true", help="peak memory of occlusion on 28x28 images")
    parser.add_argument("--old", action="store_true", help="with --memory: also every window at once (~10 GB)")
    parser.add_argument("--surrogates", action="store_true",
                        help="only lime and KernelSHAP batched across samples: floors, equality, lime direct")
    parser.add_argument("--lime-rows", type=int, default=60, help="with --surrogates: rows of lime vs lime direct")
    parser.add_argument("--lime-perturbations", type=int, default=2000,
                        help="with --surrogates: perturbations per row of lime vs lime direct")
    parser.add_argument("--profile", action="store_true", help="with --surrogates: where the batched paths' time goes")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--state", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # numpy's BLAS too: the libraries' own fits use it
    warnings.simplefilter("ignore")
    if args.child:
        memory_child(args.child, args.state, args.samples, args.out)
        return
    if args.memory:
        if "--samples" not in sys.argv:
            args.samples = 20
        memory_main(args)
        return
    sys.path.insert(0, os.path.dirname(_HERE))
    from benchmarks import surrogates

    if args.surrogates:
        surrogates.report(surrogates.run(args))
        return

    train, test = load_digits_data("train"), load_digits_data("test")
    torch.manual_seed(0)
    module = digits_cnn()
    _train(module, train.x, train.y, epochs=15, lr=3e-3, seed=0)
    network = AdaptedNetwork(module.eval(), None, SelectOutput(None, "logits", False))
    adapter = TorchModelAdapter(network, num_classes=10, output_kind="logits", bounds=Bounds(0.0, 1.0),
                                device=torch.device("cpu"), batch_size=256, source="bench", sha256="0" * 64)
    x = test.x[: args.samples]
    target = adapter.predict(x)
    background = test.x[-32:]
    xt = torch.as_tensor(x)
    common: dict[str, Any] = {"background": background, "batch_size": len(x)}

    methods: list[tuple[Any, bool]] = [
        (SaliencyExplainer(adapter, **common), True),
        (IntegratedGradientsExplainer(adapter, n_steps=32, **common), True),
        (GradientShapExplainer(adapter, n_samples=16, **common), True),
        (LRPExplainer(adapter, **common), True),
        (DeepLiftExplainer(adapter, **common), True),
        (OcclusionExplainer(adapter, **common), False),
        (ShapGradientExplainer(adapter, n_samples=32, **common), True),
        (ShapDeepExplainer(adapter, **common), True),
        (ShapKernelExplainer(adapter, n_samples=256, **common), False),
        (LimeExplainer(adapter, n_samples=100, **common), False),
    ]
    print(f"digits CNN, {len(x)} samples ({args.library_samples} for kernel shap and lime), {args.threads} threads, "
          f"best of {args.repeats} (of 25 for calls under 0.2 s)\n")
    print(f"{'method':<15}{'s/sample':>10}{'evals/sample':>14}{'rows/call':>11}{'floor s/sample':>16}{'ratio':>8}")
    full_x, full_target = x, target
    chosen = [m for m in args.methods.split(",") if m]
    for explainer, gradient in methods:
        if chosen and explainer.method not in chosen:
            continue
        x, target = (full_x[: args.library_samples], full_target[: args.library_samples]) if explainer.per_sample \
            else (full_x, full_target)
        explainer.counter.rows = explainer.counter.calls = 0
        start = time.perf_counter()
        explainer.explain(x, target)  # warm up, and count the evaluations one call makes
        # calls of milliseconds swing with other load on a shared machine: more of them for a stable minimum
        repeats = args.repeats if time.perf_counter() - start > 0.2 else max(args.repeats, 25)
        evaluations, calls = explainer.counter.rows, explainer.counter.calls
        rows_per_call = max(1, round(evaluations / max(calls, 1)))
        one_pass = floor_pass(network, xt, rows_per_call, gradient=gradient)
        seconds, pass_seconds = interleaved(functools.partial(explainer.explain, x, target), one_pass, repeats)
        floor = evaluations * pass_seconds / rows_per_call
        print(f"{explainer.method:<15}{seconds / len(x):>10.6f}{evaluations / len(x):>14.1f}{rows_per_call:>11d}"
              f"{floor / len(x):>16.6f}{seconds / floor:>8.2f}")

    if chosen:
        return
    x, target = full_x[: args.library_samples], full_target[: args.library_samples]
    xt = torch.as_tensor(x)
    print(f"\nshap and lime called directly vs through nnaudit ({len(x)} samples, same settings, best batch "
          "settings)")
    shap = import_shap()
    counted: dict[str, float] = {"model": 0.0}

    def proba_direct(batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        images = np.ascontiguousarray(np.moveaxis(batch[..., :1], -1, 1), dtype=np.float32)
        with torch.no_grad():
            out = torch.softmax(network(torch.as_tensor(images)), dim=1).numpy()
        counted["model"] += time.perf_counter() - start
        return out

    def lime_direct() -> None:
        from lime.lime_image import LimeImageExplainer

        lime = LimeImageExplainer(random_state=0)
        labels = grid_segments(8, 8, 2)
        with _no_progress_bar():  # the same silencing nnaudit applies
            for row, label in zip(x, target, strict=True):
                lime.explain_instance(row[0].astype(np.float64), proba_direct, labels=(int(label),),
                                      top_labels=None, hide_color=0.0, num_features=10**6, num_samples=100,
                                      batch_size=100, segmentation_fn=lambda _img: labels, random_seed=0)

    def shap_gradient_direct() -> None:
        explainer = shap.GradientExplainer(network, torch.as_tensor(background), batch_size=32)
        explainer.shap_values(xt, nsamples=32, ranked_outputs=1, rseed=0)

    def shap_deep_direct() -> None:
        explainer = shap.DeepExplainer(network, torch.as_tensor(background))
        explainer.shap_values(xt, ranked_outputs=1, check_additivity=False)

    def shap_kernel_direct() -> None:
        summary = shap.kmeans(background.reshape(len(background), -1).astype(np.float64), 10)

        def logits(flat: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            with torch.no_grad():
                out = network(torch.as_tensor(flat.reshape(-1, 1, 8, 8), dtype=torch.float32)).numpy()
            counted["model"] += time.perf_counter() - start
            return out

        explainer = shap.KernelExplainer(logits, summary)
        explainer.shap_values(x.reshape(len(x), -1).astype(np.float64), nsamples=256, silent=True, l1_reg=False)

    through = {"lime": methods[-1][0], "shap_gradient": methods[6][0], "shap_deep": methods[7][0],
               "shap_kernel": methods[8][0]}
    direct = {"lime": lime_direct, "shap_gradient": shap_gradient_direct, "shap_deep": shap_deep_direct,
              "shap_kernel": shap_kernel_direct}
    print(f"{'method':<15}{'direct s':>10}{'nnaudit s':>11}{'A/B diff':>10}{'nnaudit own code':>18}"
          f"{'model share':>13}")
    for name, run in direct.items():
        ours = through[name]
        own = OwnTime(ours, network)
        run()
        direct_times, our_times, model_share = [], [], []
        for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
            counted["model"] = 0.0
            start = time.perf_counter()
            run()
            direct_times.append(time.perf_counter() - start)
            model_share.append(counted["model"] / direct_times[-1])
            own.reset()
            start = time.perf_counter()
            ours.explain(x, target)
            our_times.append(time.perf_counter() - start)
        # the batched lime and KernelSHAP do not call the library: all of their time is nnaudit's own
        own_fraction = f"{own.own_seconds(min(our_times)) / min(our_times):.2%}" \
            if getattr(ours, "backend", "library") == "library" else "n/a (batched)"
        share = f"{np.median(model_share):.1%}" if name in ("lime", "shap_kernel") else "n/a"
        print(f"{name:<15}{min(direct_times):>10.3f}{min(our_times):>11.3f}"
              f"{(min(our_times) - min(direct_times)) / min(direct_times):>+10.1%}{own_fraction:>18}{share:>13}")
        own.restore()
    print("\nmodel share: fraction of the library's time spent in the model; the rest is its own per-sample work "
          "(lime: distances and a ridge surrogate fit per explanation; kernel shap: coalition sampling and a "
          "weighted least-squares fit per output)")
    surrogates.report(surrogates.run(args))


if __name__ == "__main__":
    main()
