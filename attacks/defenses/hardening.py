"""Hardening (``nnaudit harden``): train a model with a training-time defense, then audit it before and after.

    nnaudit harden audit.yaml --method pgd_at --epochs 10 --out hardened/

It sits beside the defenses it trains with and calls the runner for the two audits; it renders nothing
(``reports.hardening`` writes comparison.md and ``audit.cli`` wires the two, the reports included).

1. Training data: the config's ``train_data`` block, or else the train split of the ``data`` block's
   built-in dataset (digits, breast_cancer, resume_names, adult, compas, german). The audit data is
   never trained on.
2. The model (``model.factory`` with its ``weights``) is trained with ``attacks.training`` (pgd_at,
   trades, fast_at, distillation); progress per epoch through the audit's progress reporter.
3. ``OUT/hardened.pt`` (the state_dict, loadable with ``torch.load(weights_only=True)``) and
   ``OUT/audit.yaml`` (the same config, its ``model.weights`` pointing at it).
4. Both models are audited with the same settings through the runner (``OUT/before``,
   ``OUT/after``): the config's ``robustness`` section (default settings when it has none), or every
   section with ``--all-sections``. ``OUT/comparison.json`` holds the before/after table: clean
   accuracy, worst-case robust accuracy at each eps, each attack's robust accuracy, red flags and the
   ``reliable`` mark (``reports.hardening`` renders it as ``OUT/comparison.md``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.config import AuditConfig, DataConfig, load_config
from audit.errors import ConfigError, RunDirError

if TYPE_CHECKING:
    from audit.data import AuditData
    from audit.runner import VerdictOf

log = logging.getLogger("nnaudit")

WEIGHTS_FILE = "hardened.pt"
CONFIG_FILE = "audit.yaml"
COMPARISON_JSON = "comparison.json"
METHOD_KEY = "--method"

DISTILLATION_WARNING = (
    "defensive distillation masks gradients rather than removing adversarial examples: at temperature 1 its "
    "logits are about T times larger, softmax saturates and cross-entropy attacks stall. Trust the logit-margin "
    "attacks (apgd_dlr, cw) and the red flags in the table, not a cross-entropy attack's number")


@dataclass
class Hardening:
    """What ``harden`` did: the weights and config it wrote, both audits' results, the before/after rows
    ([measure, before, after, change]), the training history and how it trained."""

    out: Path
    weights: Path
    config: Path
    before: dict[str, Any]
    after: dict[str, Any]
    rows: list[list[Any]]
    params: Any  # attacks.training.TrainingParams
    origin: str  # where the training data came from
    n_train: int
    seconds: float  # training wall time
    history: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- training data -----------------------------------------------------------------------------------


def training_data_config(config: AuditConfig) -> tuple[DataConfig, str]:
    """The data block to train on and where it came from; ``ConfigError`` naming ``train_data`` if none."""
    if config.train_data is not None:
        return config.train_data, "train_data"
    from audit.data import PRESET_SOURCES

    data = config.data
    if data.source in PRESET_SOURCES:
        if data.split != "test":
            raise ConfigError("train_data", f"data.split is '{data.split}': training on its train split would train "
                              "on the audited samples. Set data.split: test (the audit) and let harden train on the "
                              "train split, or give a separate train_data block")
        return data.model_copy(update={"split": "train", "limit": None}), "data (train split)"
    raise ConfigError("train_data", f"no training data: data source '{data.source}' has no train split. Add a "
                      "train_data block (same keys as data, e.g. source: npz, path: train.npz) with the samples to "
                      "train on")


def load_training_data(config: AuditConfig) -> tuple[AuditData, str]:
    from audit.data import load_data

    block, origin = training_data_config(config)
    return load_data(block, seed=config.seed), origin


# -- the command ------------------------------------------------------------------------------------


def harden(config_path: str | Path, *, out: str | Path, method: str, epochs: int, eps: float | None = None,
           norm: str | None = None, steps: int = 10, lr: float = 1e-3, batch_size: int = 128,
           temperature: float = 100.0, beta: float = 6.0, seed: int | None = None, device: str | None = None,
           overwrite: bool = False, all_sections: bool = False, verdict_of: VerdictOf | None = None) -> Hardening:
    """Train, save, audit before and after, write comparison.json. See the module docstring.

    ``verdict_of`` goes to the runner for both audits (``audit.decide.evaluate_verdict``, from the CLI).
    """
    import torch

    from attacks.base import Domain
    from attacks.training import METHODS, train_defense
    from audit.context import progress, progress_scope
    from audit.model import Bounds, load_model, resolve_device

    if method not in METHODS:
        raise ConfigError(METHOD_KEY, f"unknown method '{method}'; choose from {list(METHODS)}")
    config_path = Path(config_path)
    config = load_config(config_path)
    if device:
        config.device = device
    if seed is not None:
        config.seed = seed
    if config.model.factory is None:
        source = "model.torchscript" if config.model.torchscript is not None else "model.predict_fn"
        raise ConfigError(source, "harden trains the network's weights and saves a state_dict: give the model as "
                          "model.factory (+ model.weights) instead")
    out = Path(out)
    _check_out(out, overwrite)
    robustness = _robustness_spec(config)
    train_norm, train_eps = _threat(robustness, eps, norm)
    params = training_params(method=method, epochs=epochs, eps=train_eps, norm=train_norm, steps=steps, lr=lr,
                             batch_size=batch_size, temperature=temperature, beta=beta, seed=config.seed)
    train, origin = load_training_data(config)
    dev = resolve_device(config.device)
    default_bounds = None
    if train.modality == "image" and train.lower is not None and train.upper is not None:
        default_bounds = Bounds(float(train.lower.min()), float(train.upper.max()))
    config_dir = config_path.resolve().parent
    adapter = load_model(config.model, num_classes=train.num_classes, sample=train.x, device=dev,
                         batch_size=config.batch_size, default_bounds=default_bounds,
                         extra_paths=[config_dir, Path.cwd()])
    network = getattr(adapter, "network", None)
    if network is None:
        raise ConfigError("model.factory", "harden needs a torch model with gradients")
    domain = Domain.from_model_data(adapter, train)
    log.info("harden: %s on %d training samples from %s (eps %g, %s), %d epoch(s)", method, train.n_samples, origin,
             train_eps, train_norm, epochs)
    torch.manual_seed(config.seed)
    with progress_scope(f"harden ({method})"):
        history = train_defense(network, train.x, train.y, params=params, domain=domain, device=dev,
                                progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    torch.save({k: v.detach().cpu() for k, v in adapter.module.state_dict().items()}, weights)  # type: ignore[attr-defined]
    torch.load(weights, map_location="cpu", weights_only=True)  # what every reader does: check it works
    hardened_path = _write_config(config, out, method, params)
    before, after = _audit_both(config, config_path, hardened_path, out, robustness, all_sections, verdict_of)
    rows = comparison_rows(before, after)
    notes = [DISTILLATION_WARNING] if method == "distillation" else []
    for label, results in (("before", before), ("after", after)):
        for name, section in results.get("sections", {}).items():
            if section.get("status") == "error":
                message = (section.get("error") or {}).get("message", "no message")
                notes.append(f"section '{name}' failed in the {label} audit ({message}); its numbers are missing")
    hardening = Hardening(out=out, weights=weights, config=hardened_path, before=before, after=after, rows=rows,
                          params=params, origin=origin, n_train=train.n_samples, seconds=history.seconds,
                          history=history.rows(), notes=notes)
    _write_comparison_json(hardening)
    return hardening


def training_params(**values: Any) -> Any:
    """``TrainingParams`` from the command's flags; a bad value is a ``ConfigError`` naming the flag."""
    from pydantic import ValidationError

    from attacks.training import TrainingParams

    try:
        return TrainingParams.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        flag = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
        raise ConfigError(flag, first["msg"].removeprefix("Value error, ")) from err


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory; choose a directory")
    if (out / WEIGHTS_FILE).exists() and not overwrite:
        raise RunDirError(f"{out} already holds hardened weights ({WEIGHTS_FILE}); pass --overwrite to replace them "
                          "and their audits, or choose another --out")


def _robustness_spec(config: AuditConfig) -> dict[str, Any]:
    """The robustness section's parameters the audits use (its defaults when the config has none)."""
    for spec in config.sections.values():
        if spec.plugin == "robustness" and spec.enabled:
            return dict(spec.params)
    return {}


def _threat(robustness: dict[str, Any], eps: float | None, norm: str | None) -> tuple[str, float]:
    """Training norm and eps: the flags, else the robustness section's first norm and its middle eps."""
    from attacks.section import RobustnessParams

    try:
        params = RobustnessParams(**robustness)
    except Exception as err:  # pydantic ValidationError: the section's own check says what is wrong
        raise ConfigError("sections.robustness", str(err)) from err
    chosen = norm or params.norms()[0]
    if chosen not in ("linf", "l2"):
        raise ConfigError("--norm", f"unknown norm '{chosen}'; choose linf or l2")
    if eps is None:
        grid = params.eps_for(chosen)  # type: ignore[arg-type]
        if not grid:
            raise ConfigError("--eps", f"the robustness section has no {chosen} eps; give --eps")
        eps = grid[len(grid) // 2]
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError("--eps", f"eps must be finite and > 0, got {eps}")
    return chosen, float(eps)


def _write_config(config: AuditConfig, out: Path, method: str, params: Any) -> Path:
    import yaml

    from audit.results import atomic_write_text

    data = config.model_dump(mode="json", exclude_none=True)
    data["model"]["weights"] = WEIGHTS_FILE
    data["title"] = f"{config.title} (hardened: {method})"
    header = (f"# written by `nnaudit harden` ({method}, {params.epochs} epoch(s), {params.norm} eps {params.eps:g}); "
              f"audit it with: nnaudit run {out / CONFIG_FILE}\n")
    path = out / CONFIG_FILE
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return path


def _audit_both(config: AuditConfig, config_path: Path, hardened_path: Path, out: Path, robustness: dict[str, Any],
                all_sections: bool, verdict_of: VerdictOf | None) -> tuple[dict[str, Any], dict[str, Any]]:
    from audit.config import SectionConfig
    from audit.runner import run_audit

    results = []
    for label, path, weights in (("before", config_path, config.model.weights),
                                 ("after", hardened_path, (out / WEIGHTS_FILE).resolve())):
        audit = config.model_copy(deep=True)
        audit.model.weights = weights
        if not all_sections:
            audit.sections = {"robustness": SectionConfig(plugin="robustness", params=robustness)}
        elif not any(s.plugin == "robustness" and s.enabled for s in audit.sections.values()):
            audit.sections["robustness"] = SectionConfig(plugin="robustness", params={})
        log.info("harden: auditing the model %s training -> %s", label, out / label)
        results.append(run_audit(audit, out / label, config_path=path, config_dir=config_path.resolve().parent,
                                 existing="overwrite", verdict_of=verdict_of))
    return results[0], results[1]


# -- the comparison --------------------------------------------------------------------------------


def _robustness_metrics(results: dict[str, Any]) -> dict[str, float | None]:
    from audit.results import decode_number

    for section in results.get("sections", {}).values():
        if section.get("plugin") == "robustness" or section.get("name") == "robustness":
            return {k.split(".", 1)[1]: decode_number(v) for k, v in section.get("metrics", {}).items()}
    return {}


def comparison_rows(before: dict[str, Any], after: dict[str, Any]) -> list[list[Any]]:
    """[measure, before, after, change] rows: clean accuracy, worst-case robust accuracy per norm and eps,
    each attack's robust accuracy, red flags and the reliable mark (robustness section metrics)."""
    b, a = _robustness_metrics(before), _robustness_metrics(after)
    keys = ["clean_accuracy"]
    ordered = sorted(set(b) | set(a))
    keys += [k for k in ordered if k.startswith("worst_case.") and k.endswith(".robust_accuracy")]
    keys += [k for k in ordered if not k.startswith(("worst_case.", "red_flags.")) and k.endswith(".robust_accuracy")]
    keys += [k for k in ("red_flags.count", "red_flags.likely_masked", "reliable") if k in b or k in a]
    rows = []
    for key in keys:
        vb, va = b.get(key), a.get(key)
        change = None if vb is None or va is None else round(va - vb, 4)
        rows.append([key, vb, va, change])
    return rows


def _write_comparison_json(hardening: Hardening) -> None:
    from audit.results import atomic_write_text

    h, p = hardening, hardening.params
    payload = {"method": p.method, "params": p.model_dump(mode="json"), "training_data": h.origin,
               "training_samples": h.n_train, "training_seconds": round(h.seconds, 3),
               "weights": str(h.weights), "config": str(h.config),
               "history": {"columns": ["phase", "epoch", "loss", "clean accuracy", "adversarial accuracy", "seconds"],
                           "rows": h.history},
               "comparison": {"columns": ["measure", "before", "after", "change"], "rows": h.rows},
               "notes": h.notes}
    atomic_write_text(h.out / COMPARISON_JSON, json.dumps(payload, indent=2, allow_nan=False) + "\n")
