"""``nnaudit plan audit.yaml``: before any work, each section's model evaluations and the time they take on this
machine; ``nnaudit run --estimate`` prints the same plan, runs, and prints the estimate beside the measured time per
section (stored in the run's manifest as ``estimate``), so its error is visible.

The evaluations are counted from the config (``audit/cli_plan_counts.py``). The time comes from a short probe of the
real model on the real data: forward passes and forward+backward passes at two batch sizes (a fixed cost per call
plus a cost per row, on the config's device and thread count), and, for the attacks that stop on fooled samples, a
10-step APGD-CE on up to 32 clean samples at each eps of the robustness section, which measures how many samples
are still being attacked at each step (the share of a long attack's iterations spent on samples not yet fooled).
Work outside the model (lime's and the bootstrap's own arithmetic, report figures) is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.cli_plan_counts import SectionCount, Setting, count

PROBE_SAMPLES = 32
PROBE_STEPS = 10


@dataclass
class Cost:
    """Seconds of one call of ``b`` rows: ``call + row * b``."""

    call: float
    row: float

    def seconds(self, calls: int, batch: int) -> float:
        return calls * (self.call + self.row * batch)


def _timed(fn: Any, repeats: int = 5, least: float = 0.2) -> float:
    """Seconds per call of ``fn``: the median over ``repeats`` of the mean over calls filling ``least`` seconds
    (averages out a busy machine's scheduling, as a real run does)."""
    fn()  # warm-up: allocator, lazy initialisation
    times = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= least:
                break
        times.append(elapsed / calls)
    return statistics.median(times)


def _fit(small: tuple[int, float], large: tuple[int, float]) -> Cost:
    (b1, t1), (b2, t2) = small, large
    row = max(0.0, (t2 - t1) / (b2 - b1)) if b2 > b1 else t2 / b2
    return Cost(call=max(0.0, t2 - row * b2), row=row)


def probe_costs(model: Any, x: Any, batch_size: int) -> tuple[Cost, Cost | None]:
    """(forward, forward+backward) cost per call and per row, from batches of the real data."""
    import numpy as np
    import torch

    large = max(2, min(batch_size, 256))
    small = max(1, large // 8)
    rows = np.resize(np.asarray(x, dtype=np.float32), (large, *x.shape[1:]))
    device = model.device

    def forward(b: int) -> Any:
        xt = torch.as_tensor(rows[:b], device=device)
        return lambda: model.logits(xt, batch_size=b)

    fwd = _fit((small, _timed(forward(small))), (large, _timed(forward(large))))
    if not model.has_gradients:
        return fwd, None

    def backward(b: int) -> Any:
        xt = torch.as_tensor(rows[:b], device=device)

        def go() -> None:
            leaf = xt.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model.forward(leaf).sum(), leaf)
            grad.sum().item()

        return go

    return fwd, _fit((small, _timed(backward(small))), (large, _timed(backward(large))))


def probe_active(model: Any, data: Any, config: Any, plugins: list[Any]) -> float:
    """The share of a robustness attack's iterations spent on samples not yet fooled, from a 10-step APGD-CE on up
    to 32 clean samples at each eps (1.0 without a robustness section or gradients)."""
    import numpy as np
    import torch

    from attacks.apgd import APGD
    from attacks.base import Domain

    robust = next((p for p in plugins if p.name == "robustness"), None)
    if robust is None or not model.has_gradients or data.task != "classification":
        return 1.0  # regression and multi-label attacks never stop early: every sample stays active
    p = robust.params
    norm = p.norms()[0]
    eps_list = p.eps_for(norm) or []
    x = np.asarray(data.x[:PROBE_SAMPLES], dtype=np.float32)
    y = np.asarray(data.y[:PROBE_SAMPLES])
    rows: list[int] = []
    network = getattr(model, "network", None)
    if not isinstance(network, torch.nn.Module) or not eps_list:
        return 1.0

    def hook(_m: Any, inputs: Any, _out: Any) -> None:
        if torch.is_grad_enabled():
            rows.append(int(inputs[0].shape[0]))

    domain = Domain.from_model_data(model, data)
    shares = []
    for eps in eps_list:
        torch.manual_seed(config.seed)  # the random start: the same probe every time
        rows.clear()
        handle = network.register_forward_hook(hook)
        try:
            APGD(norm=norm, steps=PROBE_STEPS, loss="ce")(model, x, y, eps=eps, domain=domain,
                                                         batch_size=max(PROBE_SAMPLES, config.batch_size))
        finally:
            handle.remove()
        per_step = [r / len(x) for r in rows[-PROBE_STEPS:]] or [1.0]
        last = per_step[-1]
        # over the section's steps: the probe's steps as measured, the rest at the share still active at its end
        total = max(PROBE_STEPS, p.steps)
        shares.append((sum(per_step) + (total - len(per_step)) * last) / total)
    return float(max(0.05, statistics.mean(shares)))


@dataclass
class Plan:
    sections: list[SectionCount]
    clean: SectionCount
    forward: Cost
    backward: Cost | None
    device: str
    threads: int
    active: float

    def seconds(self, section: SectionCount) -> float:
        total = 0.0
        for w in section.work:
            cost = self.backward if w.grad and self.backward is not None else self.forward
            total += cost.seconds(w.calls, w.batch)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "threads": self.threads, "attack_active_share": round(self.active, 4),
                "forward": {"per_call_s": self.forward.call, "per_row_s": self.forward.row},
                "forward_backward": None if self.backward is None else
                {"per_call_s": self.backward.call, "per_row_s": self.backward.row},
                "sections": {s.section: {"forward_rows": s.rows(False), "backward_rows": s.rows(True),
                                         "seconds": round(self.seconds(s), 3) if s.counted else None,
                                         "notes": s.notes} for s in [self.clean, *self.sections]}}


def make_plan(config: Any, *, config_dir: Path | None = None) -> Plan:
    """Load the model and data as ``nnaudit run`` does, count every section's evaluations and probe their cost."""
    import torch

    from audit.data import load_data
    from audit.model import Bounds, load_model, resolve_device
    from audit.model.text_load import load_tokenizer
    from audit.runner import build_plugins

    plugins = build_plugins(config)
    device = resolve_device(config.device)
    tokenizer = load_tokenizer(config.model)
    data = load_data(config.data, seed=config.seed, tokenizer=tokenizer, task=config.model.task)
    bounds = None
    if data.modality == "image" and data.lower is not None and data.upper is not None:
        bounds = Bounds(float(data.lower.min()), float(data.upper.max()))
    model = load_model(config.model, num_classes=data.num_classes, sample=data.x, device=device,
                       batch_size=config.batch_size, default_bounds=bounds,
                       extra_paths=[p for p in (config_dir, Path.cwd()) if p is not None], tokenizer=tokenizer,
                       task=data.task, task_auto=config.model.task == "auto")
    forward, backward = probe_costs(model, data.x, config.batch_size)
    active = probe_active(model, data, config, plugins)
    setting = Setting(n=data.n_samples, batch_size=config.batch_size, modality=data.modality,
                      input_shape=tuple(data.input_shape), has_gradients=model.has_gradients, active=active,
                      data=data)
    sections, clean = count(plugins, config, setting)
    return Plan(sections, clean, forward, backward, str(device), torch.get_num_threads(), active)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan_table(plan: Plan, measured: dict[str, float] | None = None) -> str:
    head = ["section", "forward rows", "fwd+bwd rows", "estimate"] + (["measured", "measured / estimate"]
                                                                        if measured is not None else [])
    lines = []
    for s in [plan.clean, *plan.sections]:
        estimate = plan.seconds(s) if s.counted else None
        row = [s.section, f"{s.rows(False):,}", f"{s.rows(True):,}", duration(estimate)]
        if measured is not None:
            got = measured.get(s.section)
            row += [duration(got), f"{got / estimate:.2f}" if got is not None and estimate else "-"]
        lines.append(row)
    total = sum(plan.seconds(s) for s in [plan.clean, *plan.sections] if s.counted)
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *lines]]
    fb = "" if plan.backward is None else (f"; forward+backward {plan.backward.call * 1e3:.2f} ms per call + "
                                           f"{plan.backward.row * 1e6:.1f} us per row")
    text.append(f"about {duration(total)} on this {plan.device.split(':')[0].upper()} ({plan.threads} threads): "
                f"forward {plan.forward.call * 1e3:.2f} ms per call + {plan.forward.row * 1e6:.1f} us per row{fb}; "
                f"attacks active {plan.active:.0%} of their iterations (probe)")
    for s in plan.sections:
        text.extend(f"  {s.section}: {note}" for note in s.notes)
    return "\n".join(text)


def cmd_plan(args: argparse.Namespace) -> int:
    from audit.config import load_config

    config = load_config(args.config)
    if args.device:
        config.device = args.device
    if args.limit is not None:
        config.data.limit = args.limit
    print(plan_table(make_plan(config, config_dir=Path(args.config).resolve().parent)))
    return 0


def measured_beside(plan: Plan, run_dir: Path) -> str:
    """After a run: the table with the measured section times, stored in the manifest as ``estimate``."""
    import json

    from audit.jsonio import atomic_write_text, dumps

    path = run_dir / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    timings = results["manifest"].get("timings", {})
    measured = {name: float(v) for name, v in timings.items() if name in {s.section for s in plan.sections}}
    estimate = plan.to_dict()
    for name, entry in estimate["sections"].items():
        entry["measured_seconds"] = measured.get(name)
    results["manifest"]["estimate"] = estimate
    atomic_write_text(path, dumps(results))
    return plan_table(plan, measured)


def add_plan_command(sub: Any) -> None:
    plan = sub.add_parser("plan", help="estimate each section's model evaluations and time on this machine, "
                          "before any work")
    plan.add_argument("config")
    plan.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto (overrides the config)")
    plan.add_argument("--limit", type=int, help="estimate for at most this many samples")
    plan.set_defaults(func=cmd_plan)
