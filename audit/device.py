"""Device helpers: which device a config's ``device`` names, out-of-memory back-off (halve the batch and retry)
and its record.

A batch that runs out of accelerator memory is split in halves and retried, down to one sample; the
smaller size is kept for the rest of the loop and every halving is recorded, so the settings table
says which batch size produced the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from audit.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger("nnaudit")


def resolve_device(name: str) -> torch.device:
    """The torch device ``device:`` names (auto: CUDA when available, else CPU); a ConfigError when it is not here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"'{name}' asked for but CUDA is not available here; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError("device", f"'{name}' asked for but only {torch.cuda.device_count()} GPU(s) are visible")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "'mps' asked for but it is not available here; use --device cpu")
    return torch.device(name)


def is_out_of_memory(err: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS, XPU); a RuntimeError saying so counts too."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def free_cached_memory(device: torch.device | None = None) -> None:
    """Hand cached blocks back after an out-of-memory error, so the retry has them."""
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()


@dataclass
class BackoffLog:
    """Every halving: (what, from size, to size)."""

    events: list[tuple[str, int, int]] = field(default_factory=list)

    def record(self, what: str, old: int, new: int) -> None:
        self.events.append((what, old, new))
        log.warning("%s ran out of memory at batch size %d; retrying at %d", what, old, new)

    def chain(self, what: str | None = None) -> str | None:
        """'256 -> 128 -> 64' for ``what`` (or all), None when nothing was halved."""
        sizes: list[int] = []
        for name, old, new in self.events:
            if what is not None and name != what:
                continue
            if not sizes:
                sizes.append(old)
            sizes.append(new)
        return " -> ".join(str(s) for s in sizes) if sizes else None

    def describe(self) -> dict[str, Any]:
        names = list(dict.fromkeys(name for name, _, _ in self.events))
        return {name: self.chain(name) for name in names}


def run_halving(fn: Callable[[torch.Tensor], T], x: torch.Tensor, batch_size: int, backoff: BackoffLog,
                what: str) -> list[T]:
    """``fn`` over ``x`` in batches of ``batch_size``; on out-of-memory, halve the batch and redo that part."""
    outs: list[T] = []
    size, start = max(1, batch_size), 0
    while start < len(x):
        try:
            outs.append(fn(x[start : start + size]))
        except Exception as err:
            if not is_out_of_memory(err) or size == 1:
                raise
            free_cached_memory(x.device)
            backoff.record(what, size, size // 2)
            size //= 2
            continue
        start += size
    return outs
