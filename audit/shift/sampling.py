"""Random draws of the corruptions: one ``torch.Generator`` per sample.

A sample's generator is seeded from (run seed, section, corruption, severity, sample id) with
``audit.engine.chunks.chunk_seed``, so its corrupted version is the same alone, in any batch, in any chunk,
after a resume and on a Ray worker. Every draw returns one block per sample, stacked: ``(N, *shape)``.

The methods mirror numpy's legacy ``RandomState`` calls the reference makes (``uniform(low, high, size)``,
``normal(loc, scale, size)``, ``randint(low, high, size)``, ``poisson(lam)``) with the same arguments and the
same element order, so a test can swap in a numpy-backed replay of the reference's own draws and compare the
rest of the computation exactly (tests/shift_reference.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from audit.engine.chunks import chunk_seed


class SampleRng(Protocol):
    """Per-sample draws, stacked over the batch: every method returns ``(N, *shape)``."""

    def uniform(self, low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor: ...

    def normal(self, loc: float, scale: float, shape: tuple[int, ...]) -> torch.Tensor: ...

    def randint(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor: ...

    def randint_each(self, low: int, highs: Sequence[int]) -> torch.Tensor: ...

    def poisson(self, lam: torch.Tensor) -> torch.Tensor: ...

    def __len__(self) -> int: ...


class TorchSampleRng:
    """``SampleRng`` over one ``torch.Generator`` per sample, on ``device``, floats in ``dtype``."""

    def __init__(self, seeds: Sequence[int], *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.generators = []
        for seed in seeds:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(seed))
            self.generators.append(gen)

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
        draws = [torch.rand(shape, generator=g, device=self.device, dtype=self.dtype) for g in self.generators]
        return low + (high - low) * self._stack(draws, shape, self.dtype)

    def normal(self, loc: float, scale: float, shape: tuple[int, ...]) -> torch.Tensor:
        draws = [torch.randn(shape, generator=g, device=self.device, dtype=self.dtype) for g in self.generators]
        return loc + scale * self._stack(draws, shape, self.dtype)

    def randint(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Integers in ``[low, high)`` (numpy's ``randint``: ``high`` excluded)."""
        draws = [torch.randint(low, high, shape, generator=g, device=self.device) for g in self.generators]
        return self._stack(draws, shape, torch.int64)

    def randint_each(self, low: int, highs: Sequence[int]) -> torch.Tensor:
        """One integer per sample in ``[low, highs[i])`` (N,)."""
        draws = [torch.randint(low, int(high), (), generator=g, device=self.device)
                 for g, high in zip(self.generators, highs, strict=True)]
        return self._stack(draws, (), torch.int64)

    def poisson(self, lam: torch.Tensor) -> torch.Tensor:
        """Poisson counts with rates ``lam`` (N, ...), one sample's rates from its own generator."""
        rates = lam.to(device=self.device, dtype=torch.float32 if lam.dtype != torch.float64 else torch.float64)
        draws = [torch.poisson(rates[i], generator=g) for i, g in enumerate(self.generators)]
        return self._stack(draws, tuple(lam.shape[1:]), rates.dtype).to(lam.dtype)

    def _stack(self, draws: list[torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if not draws:
            return torch.empty((0, *shape), device=self.device, dtype=dtype)
        return torch.stack(draws)


def sample_seeds(seed: int, section: str, corruption: str, severity: int, sample_ids: Sequence[int]) -> list[int]:
    """The seed of each sample's generator: (run seed, section, corruption, severity, sample id)."""
    return [chunk_seed(seed, section, corruption, severity, int(i)) for i in sample_ids]
