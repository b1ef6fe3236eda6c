"""Per-sample records a section leaves for review (the dashboard's sample explorer), one NPZ per section.

``artifacts/<section>/samples.npz``, recorded as the section's ``samples`` artifact, holds plain
arrays only (no pickles): the performance section writes the clean inputs, labels, clean
probabilities and the sensitive columns; the robustness section writes the model's
probabilities on each adversarial example, per ``norm:eps``, next to the adversarial inputs that
``context.npz`` already holds. Readers load them lazily; nothing else depends on them, so a run
without them (an older run) simply has no explorer.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from audit.results import atomic_write_bytes

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import SectionResult

SAMPLES_FILE = "samples.npz"
SAMPLES_ARTIFACT = "samples"
FORMAT = "nnaudit.samples/1"


def write_samples(ctx: AuditContext, result: SectionResult, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` (compressed, atomically) as the section's ``samples`` artifact."""
    for name, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"samples array {name!r} has dtype object; convert it to str or numbers")
    path, rel = ctx.artifact_path(result.name, SAMPLES_FILE)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, __format__=np.array(FORMAT), **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())
    result.artifacts[SAMPLES_ARTIFACT] = rel


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned as float32 (non-finite logits give NaN rows, kept as such)."""
    z = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
    return p.astype(np.float32)
