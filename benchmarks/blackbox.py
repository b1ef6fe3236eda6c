"""Black-box robustness: nnaudit's Square against torchattacks' Square, and the issue-20 table.

1. **Square parity.** nnaudit's ``attacks.Square`` and torchattacks' ``Square`` (margin loss, p_init 0.8, the
   rescaled schedule: the reference settings) on the same model, the same samples, the same eps and the same query
   budgets. torchattacks is a peer, never a dependency of nnaudit: install it into a separate venv
   (``python -m venv --system-site-packages /work/wt/peers-venv && /work/wt/peers-venv/bin/pip install --no-deps
   torchattacks``); this script runs it in a subprocess with that interpreter (``--peer-python``). Printed: robust
   accuracy, its binomial standard error sqrt(p (1 - p) / n), the difference and its standard error (the two
   attacks draw independently), and seconds.
2. **The issue's table** (``--audits``): ``nnaudit run``'s worst case on the same samples for the torch model (white
   box, defaults), its ONNX export (converted graph), and the ONNX export with ``model.onnx_conversion: off`` at
   1,000 and 5,000 Square queries (with ``robustness.reliable`` and its reason).

Model: the digits CNN (1x8x8, width 16, the demo's training), ``--samples`` class-balanced test images.
Usage: ``python benchmarks/blackbox.py [--samples 200] [--eps 0.1] [--queries 1000 5000] [--audits]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("NNAUDIT_PROGRESS", "0")

PEER = r'''
import json, sys, time
import numpy as np, torch, torchattacks
sys.path.insert(0, sys.argv[1])
from audit.zoo import digits_cnn
args = json.loads(sys.argv[2])
torch.set_num_threads(args["threads"])
net = digits_cnn(width=16)
net.load_state_dict(torch.load(args["weights"], weights_only=True))
net.eval()
data = np.load(args["data"])
x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long()
out = {}
for q in args["queries"]:
    attack = torchattacks.Square(net, norm=args["norm"], eps=args["eps"], n_queries=q, n_restarts=1, p_init=0.8,
                                 loss="margin", resc_schedule=True, seed=0)
    start = time.perf_counter()
    adv = attack(x, y)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        robust = (net(adv).argmax(1) == y).numpy()
    out[str(q)] = {"robust": robust.tolist(), "seconds": seconds}
print(json.dumps(out))
'''


def se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def setup(samples: int, root: Path) -> tuple[Any, Any, Path, Path]:
    from audit.config import DataConfig
    from audit.data import load_data
    from audit.demo import _train
    from audit.zoo import digits_cnn

    train = load_data(DataConfig.model_validate({"source": "digits", "split": "train"}), seed=0)
    test = load_data(DataConfig.model_validate({"source": "digits", "limit": samples}), seed=0)
    torch.manual_seed(0)
    net = digits_cnn(width=16)
    _train(net, train.x, train.y, epochs=10, lr=3e-3, seed=0)
    net.eval()
    weights = root / "cnn.pt"
    torch.save(net.state_dict(), weights)
    onnx_path = root / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(onnx_path), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return net, test, weights, onnx_path


def parity(net: Any, test: Any, weights: Path, root: Path, args: argparse.Namespace) -> None:
    from attacks.base import Domain
    from attacks.square import Square
    from audit.model import TorchModelAdapter

    adapter = TorchModelAdapter.from_module(net, num_classes=10, bounds=(0.0, 1.0))
    x, y = test.x.astype(np.float32), test.y.astype(np.int64)
    n = len(y)
    ok = adapter.predict(x) == y
    np.savez(root / "data.npz", x=x, y=y)
    peer: dict[str, Any] = {}
    if Path(args.peer_python).exists():
        spec = {"weights": str(weights), "data": str(root / "data.npz"), "queries": args.queries,
                "norm": "Linf" if args.norm == "linf" else "L2", "eps": args.eps, "threads": args.threads}
        done = subprocess.run([args.peer_python, "-c", PEER, str(Path(__file__).resolve().parents[1]),
                               json.dumps(spec)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print("torchattacks failed:", done.stderr[-2000:])
        else:
            peer = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        print(f"no peer interpreter at {args.peer_python}: torchattacks skipped")
    print(f"\nSquare parity: digits CNN, {n} class-balanced test images (clean accuracy {ok.mean():.3f}), "
          f"{args.norm} eps={args.eps:g}, {args.threads} thread(s)")
    variant = " (reference positions)" if args.reference_positions else ""
    print(f"nnaudit{variant}: window corners drawn " + ("from [0, h - side) as the reference code" if variant else
                                                        "from all h - side + 1 positions"))
    print(f"{'queries':>8} {'nnaudit':>16} {'s':>7} {'torchattacks':>18} {'s':>7} {'difference':>18} {'ratio s':>8}")
    for q in args.queries:
        torch.manual_seed(0)
        start = time.perf_counter()
        attack = Square(norm=args.norm, queries=q, reference_positions=args.reference_positions)
        out = attack(adapter, x[ok], y[ok], eps=args.eps, domain=Domain.from_model_data(adapter, test))
        ours_s = time.perf_counter() - start
        ours = float((ok.sum() - out.success.sum()) / n)
        row = f"{q:>8} {ours:>8.3f} ± {se(ours, n):.3f} {ours_s:>7.1f}"
        if str(q) in peer:
            theirs = float(np.mean(peer[str(q)]["robust"]))
            theirs_s = peer[str(q)]["seconds"]
            diff_se = math.sqrt(se(ours, n) ** 2 + se(theirs, n) ** 2)
            row += (f" {theirs:>10.3f} ± {se(theirs, n):.3f} {theirs_s:>7.1f} {ours - theirs:>+9.3f} ± {diff_se:.3f}"
                    f" {theirs_s / ours_s:>7.2f}x")
        print(row, flush=True)
    print("± : binomial standard error; difference ± : the SE of a difference of two independent estimates; "
          "ratio s: torchattacks' seconds / nnaudit's")


def audits(weights: Path, onnx_path: Path, root: Path, args: argparse.Namespace) -> None:
    from audit.config import parse_config
    from audit.runner import run_audit

    base = {"data": {"source": "digits", "limit": args.samples}, "device": "cpu", "report": False, "seed": 0}
    robust = {"norm": args.norm, "eps": [args.eps]}
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("torch model, white box (defaults)", {"factory": "audit.zoo:digits_cnn", "weights": str(weights)}, {}),
            ("ONNX export, converted graph (defaults)", {"onnx": str(onnx_path)}, {})]
    rows += [(f"ONNX export, conversion off, Square {q:,} queries", {"onnx": str(onnx_path), "onnx_conversion": "off"},
              {"square_queries": q}) for q in args.queries]
    key = f"robustness.worst_case.{args.norm}.eps={args.eps:g}.robust_accuracy"
    print(f"\nThe issue's table: nnaudit run on the same {args.samples} images, {args.norm} eps={args.eps:g}")
    for k, (label, model, extra) in enumerate(rows):
        config = parse_config({**base, "model": {**model, "input_bounds": [0.0, 1.0]},
                               "sections": {"robustness": {**robust, **extra}}})
        start = time.perf_counter()
        results = run_audit(config, root / f"run{k}")
        seconds = time.perf_counter() - start
        m = results["sections"]["robustness"]["metrics"]
        reliable = m.get("robustness.reliable")
        reason = next((f["message"] for f in results["sections"]["robustness"]["findings"]
                       if f.get("code") == "robustness.reliable"), "")
        print(f"{label:<48} {m[key]:.3f} ± {se(m[key], args.samples):.3f}  reliable={reliable}  "
              f"{seconds:.0f} s  {reason[:160]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--norm", choices=["linf", "l2"], default="linf")
    parser.add_argument("--queries", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peer-python", default="/work/wt/peers-venv/bin/python")
    parser.add_argument("--audits", action="store_true", help="also run the issue's table (nnaudit run x 4)")
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument("--reference-positions", action="store_true",
                        help="nnaudit's Square draws window corners as the reference code (never the last row/column)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        net, test, weights, onnx_path = setup(args.samples, root)
        if not args.no_parity:
            parity(net, test, weights, root, args)
        if args.audits:
            audits(weights, onnx_path, root, args)


if __name__ == "__main__":
    main()
