"""AuditContext: what every plugin gets, plus a cache of what many plugins need."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from audit.data import AuditData
from audit.model import ModelAdapter
from audit.results import ARTIFACTS_DIR, SectionResult

T = TypeVar("T")


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A tqdm bar on an interactive terminal; silent otherwise (or with NNAUDIT_PROGRESS=0)."""
    from tqdm.auto import tqdm

    disable = None if os.environ.get("NNAUDIT_PROGRESS", "1") != "0" else True
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


@dataclass
class AdversarialOutcome:
    """Per-sample worst case of the robustness section at one (norm, eps), for later sections.

    Fairness reads it for robustness disparity and explanations for stability under attack, so
    neither runs a second attack pass.
    """

    norm: str  # "linf" or "l2"
    eps: float
    attack: str  # what produced it, e.g. "worst of apgd-ce, apgd-dlr, pgd (100 steps, 1 restart)"
    # (N, *input_shape): the adversarial input where one was found; where every attack failed, the attacks'
    # candidate (within eps) with the smallest margin; the clean input for clean-wrong samples
    x_adv: np.ndarray
    clean_correct: np.ndarray  # (N,) bool
    robust_correct: np.ndarray  # (N,) bool: correct under every attack at eps
    min_eps: np.ndarray | None = None  # (N,) smallest adversarial eps found (0 if clean-wrong, inf if none)
    index: np.ndarray | None = None  # rows of ctx.data these arrays describe (None: all rows, in order)


@dataclass
class AttributionSet:
    """Attributions one explainer produced, for later sections (fairness: explanation disparity)."""

    method: str
    index: np.ndarray  # (n,) rows of ctx.data that were explained
    target: np.ndarray  # (n,) class explained per row
    values: np.ndarray  # (n, *input_shape)


@dataclass
class AuditContext:
    model: ModelAdapter
    data: AuditData
    run_dir: Path
    seed: int = 0
    batch_size: int = 256
    results: dict[str, SectionResult] = field(default_factory=dict)  # sections finished so far
    shared: dict[str, Any] = field(default_factory=dict)  # outputs a section leaves for later ones
    adversarial: dict[str, AdversarialOutcome] = field(default_factory=dict)  # key: f"{norm}:{eps}"
    attributions: dict[str, AttributionSet] = field(default_factory=dict)  # key: method
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def artifacts_dir(self) -> Path:
        path = self.run_dir / ARTIFACTS_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifact_path(self, section: str, filename: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to the run dir to record)."""
        folder = self.artifacts_dir / section
        folder.mkdir(parents=True, exist_ok=True)
        return folder / filename, f"{ARTIFACTS_DIR}/{section}/{filename}"

    def seed_everything(self) -> None:
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

    def progress(self, iterable: Iterable[T], *, desc: str, total: int | None = None) -> Iterator[T]:
        return progress(iterable, desc=desc, total=total)

    # -- computed once, shared by every plugin ------------------------------------------------
    def clean_logits(self) -> torch.Tensor:
        if "logits" not in self._cache:
            self._cache["logits"] = self.model.logits(self.data.x, batch_size=self.batch_size)
        logits: torch.Tensor = self._cache["logits"]
        return logits

    def clean_probabilities(self) -> np.ndarray:
        if "proba" not in self._cache:
            raw = torch.softmax(self.clean_logits().double(), dim=1).numpy()
            self._cache["proba"] = raw / raw.sum(axis=1, keepdims=True)
        proba: np.ndarray = self._cache["proba"]
        return proba

    def clean_predictions(self) -> np.ndarray:
        if "pred" not in self._cache:
            self._cache["pred"] = self.clean_logits().argmax(dim=1).numpy()
        pred: np.ndarray = self._cache["pred"]
        return pred
