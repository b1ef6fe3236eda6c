"""Small real audit runs for the dashboard tests: every section the explorer reads, on shipped data, in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SECTIONS: dict[str, Any] = {
    "performance": {},
    "robustness": {"eps": [0.1], "attacks": ["apgd_ce"], "steps": 10, "minimal_samples": 0, "max_samples": 60,
                   "red_flags": False, "gallery_size": 0},
    # stability on the robustness subset (max_samples)
    "explanations": {"methods": ["saliency", "ig"], "n_samples": 8, "check_samples": 2, "quality": ["deletion"],
                     "method_params": {"ig": {"n_steps": 4}}, "stability_samples": 6},
}


def audit_run(out: Path, model: Any, *, kind: str, limit: int = 120) -> Path:
    """Audit ``model`` (a trained torch module from conftest) on digits (``kind="image"``) or breast cancer."""
    import torch

    from audit.config import parse_config
    from audit.runner import run_audit

    weights = out.parent / f"{out.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    if kind == "image":
        model_cfg = {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)}
        data_cfg: dict[str, Any] = {"source": "digits", "limit": limit}
    else:
        model_cfg = {"factory": "audit.zoo:tabular_mlp", "kwargs": {"in_features": 30, "hidden": 16, "dropout": 0.0},
                     "weights": str(weights)}
        data_cfg = {"source": "breast_cancer", "limit": limit}
    run_audit(parse_config({"title": f"dashboard test ({kind})", "model": model_cfg, "data": data_cfg,
                            "device": "cpu", "seed": 0, "sections": SECTIONS}), out)
    return out
