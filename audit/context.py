"""AuditContext: what every plugin gets, plus a cache of what many plugins need.

Also the one progress reporter (``progress``, ``ctx.progress``): a tqdm bar on an interactive
terminal, periodic lines through the ``nnaudit`` logger otherwise (CI logs), nothing with
``NNAUDIT_PROGRESS=0``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from audit.data import AuditData
from audit.engine.backends import LocalBackend
from audit.model import ModelAdapter
from audit.results import ARTIFACTS_DIR, SectionResult

T = TypeVar("T")
log = logging.getLogger("nnaudit")

# -- progress -----------------------------------------------------------------------------------

PROGRESS_ENV = "NNAUDIT_PROGRESS"  # auto (default): bar on a terminal, log lines otherwise; bar; log; 0: silent
PROGRESS_INTERVAL_ENV = "NNAUDIT_PROGRESS_INTERVAL"  # log mode: at most this many seconds without a line
DEFAULT_INTERVAL_S = 30.0
ProgressMode = Literal["off", "bar", "log"]


def progress_mode() -> ProgressMode:
    """What ``progress`` does now: from ``$NNAUDIT_PROGRESS``, else bar on a terminal (stderr) and log lines off one."""
    value = os.environ.get(PROGRESS_ENV, "auto").strip().lower()
    if value in ("0", "off", "false", "no", "none"):
        return "off"
    if value in ("bar", "tqdm"):
        return "bar"
    if value in ("log", "lines"):
        return "log"
    stream = sys.stderr
    return "bar" if stream is not None and hasattr(stream, "isatty") and stream.isatty() else "log"


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class _Level:
    """One active loop (or scope) of the progress stack."""

    desc: str
    total: int | None
    n: int = 0
    start: float = field(default_factory=time.monotonic)
    scope: bool = False  # a named scope (progress_scope), not a loop

    def text(self) -> str:
        if self.total:
            return f"{self.desc} {self.n}/{self.total}"
        return f"{self.desc} {self.n}" if self.n else self.desc


class _Reporter(threading.local):
    """Per-thread stack of active loops; in log mode, decides when a line is due."""

    def __init__(self) -> None:
        self.stack: list[_Level] = []
        self.last_line = time.monotonic()
        self.last_decile = -1

    def fraction(self) -> tuple[_Level, float] | None:
        """The outermost counted loop and how far it is, counting the loops inside it."""
        counted = [level for level in self.stack if level.total]
        if not counted:
            return None
        top = counted[0]
        fraction = 0.0
        for level in reversed(self.stack[self.stack.index(top):]):
            if level.total:
                fraction = min(1.0, (level.n + fraction) / level.total)
        return top, fraction

    def line(self) -> str:
        text = " > ".join(level.text() for level in self.stack)
        found = self.fraction()
        if found is None:
            return text
        top, fraction = found
        elapsed = time.monotonic() - top.start
        detail = f"{math.floor(100 * fraction):.0f}%, {_duration(elapsed)}"
        if 0 < fraction < 1:
            detail += f", about {_duration(elapsed * (1 - fraction) / fraction)} left"
        return f"{text} ({detail})"

    def step(self) -> None:
        """After an iteration: a line when the outermost counted loop passed a tenth, or the interval ran out."""
        now = time.monotonic()
        found = self.fraction()
        decile = -1 if found is None else math.floor(10 * found[1] + 1e-9)
        due = now - self.last_line >= _interval()
        if decile > self.last_decile or due:
            log.info("%s", self.line())
            self.last_line = now
        if found is not None:
            self.last_decile = max(self.last_decile, decile)

    def push(self, level: _Level) -> None:
        if not any(existing.total for existing in self.stack) and level.total:
            self.last_decile = 0  # a new outermost counted loop: its tenths start again
        self.stack.append(level)

    def pop(self, level: _Level) -> None:
        if level in self.stack:
            self.stack.remove(level)


_REPORTER = _Reporter()


@contextlib.contextmanager
def progress_scope(desc: str) -> Iterator[None]:
    """Name what runs inside (the runner: ``[2/5] robustness``): log lines start with it."""
    level = _Level(desc, None, scope=True)
    _REPORTER.push(level)
    try:
        yield
    finally:
        _REPORTER.pop(level)


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` and report progress: one reporter for every loop of the audit.

    On a terminal, a tqdm bar per loop, nested loops on the lines below their parent. Off a
    terminal (CI logs, ``NNAUDIT_PROGRESS=log``), lines through the ``nnaudit`` logger naming every
    loop from the outermost in, e.g. ``[3/4] robustness > attacks (linf) 2/6 > pgd batches 3/10
    (38%, 41 s, about 1 min 07 s left)``: one when the outermost loop (counting the loops inside
    it) passes another tenth, and one whenever ``$NNAUDIT_PROGRESS_INTERVAL`` seconds (default 30)
    went by without one. ``NNAUDIT_PROGRESS=0``: silent.
    """
    mode = progress_mode()
    if mode == "off":
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    level = _Level(desc, total)
    depth = sum(1 for lv in _REPORTER.stack if not lv.scope)
    _REPORTER.push(level)
    try:
        if mode == "bar":
            from tqdm.auto import tqdm

            for item in tqdm(iterable, desc=desc, total=total, unit=unit, leave=depth == 0, position=depth,
                             dynamic_ncols=True, file=sys.stderr, disable=False):
                yield item
                level.n += 1
        else:
            for item in iterable:
                yield item
                level.n += 1
                _REPORTER.step()
    finally:
        _REPORTER.pop(level)


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
    adversarial: dict[str, AdversarialOutcome] = field(default_factory=dict)  # key: f"{norm}:{eps}"
    attributions: dict[str, AttributionSet] = field(default_factory=dict)  # key: method
    # section -> fingerprint (the runner sets them): a chunked section keeps the chunks saved under the same one
    fingerprints: dict[str, str] = field(default_factory=dict)
    backend: Any = field(default_factory=LocalBackend)  # who runs the chunks (audit.engine.backends)
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

    def progress(self, iterable: Iterable[T], *, desc: str, total: int | None = None,
                 unit: str = "it") -> Iterator[T]:
        """See ``progress``: loops nest (per attack, then per batch) and report as one line."""
        return progress(iterable, desc=desc, total=total, unit=unit)

    # -- what sections leave for later ones (saved by the runner, reloaded on resume) ------------
    def outputs_snapshot(self) -> dict[tuple[str, str], Any]:
        """The current entries of every store of outputs, to tell what a section added."""
        return {(store, key): value for store in OUTPUT_STORES for key, value in getattr(self, store).items()}

    def outputs_since(self, snapshot: Mapping[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
        """Entries added or replaced since ``snapshot``, by store."""
        new: dict[str, dict[str, Any]] = {}
        for store in OUTPUT_STORES:
            for key, value in getattr(self, store).items():
                if snapshot.get((store, key)) is not value:
                    new.setdefault(store, {})[key] = value
        return new

    def restore_outputs(self, stores: Mapping[str, Mapping[str, Any]]) -> None:
        """Put back what a section saved (a resumed run, for a section it keeps)."""
        for store in stores:
            if store in REMOVED_STORES:
                raise ValueError(f"the checkpoint holds the store '{store}' of {REMOVED_STORES[store]}")
            if store not in OUTPUT_STORES:
                raise ValueError(f"unknown output store {store!r}")
        for store, entries in stores.items():
            getattr(self, store).update(entries)

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

    # -- task-aware views of the same logits (clean_probabilities / clean_predictions are classification's)
    def clean_values(self) -> np.ndarray:
        """Regression: the predicted number per sample, (N,) float64: the model's raw output, never a softmax."""
        if "values" not in self._cache:
            self._cache["values"] = self.clean_logits()[:, 0].double().numpy()
        values: np.ndarray = self._cache["values"]
        return values

    def clean_label_probabilities(self) -> np.ndarray:
        """Multi-label: each label's probability, a sigmoid per output (N, L) float64, not a softmax."""
        if "label_proba" not in self._cache:
            self._cache["label_proba"] = torch.sigmoid(self.clean_logits().double()).numpy()
        proba: np.ndarray = self._cache["label_proba"]
        return proba

    def clean_label_predictions(self) -> np.ndarray:
        """Multi-label: 0/1 per label (N, L) int64, a label predicted where its probability is at least 0.5."""
        return (self.clean_label_probabilities() >= 0.5).astype(np.int64)


OUTPUT_STORES: tuple[str, ...] = ("adversarial", "attributions")
REMOVED_STORES = {"shared": "ctx.shared, which nnaudit no longer has (nothing read it)"}
OUTPUT_TYPES: dict[str, type] = {"AdversarialOutcome": AdversarialOutcome, "AttributionSet": AttributionSet}
