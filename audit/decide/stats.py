"""The statistics of a comparison besides its bootstrap: Holm's adjustment and which metrics are one test.

- The paired bootstrap of a mean difference (percentile interval, two-sided p-value) is
  ``audit.bootstrap.paired_bootstrap``, the one bootstrap every interval of nnaudit comes from.
- ``holm`` adjusts the p-values of all the tested metrics together, so the chance of calling any
  change significant when nothing changed stays at ``alpha`` for the whole comparison.
- ``hypothesis_key``: metrics whose paired differences are equal up to sign (accuracy and error rate)
  are one hypothesis, tested and counted once.

Pure numpy; never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hypothesis_key(base: np.ndarray, candidate: np.ndarray) -> bytes:
    """The paired differences up to sign, as bytes: equal keys are the same test."""
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    nonzero = np.flatnonzero(diff)
    if len(nonzero) and diff[nonzero[0]] < 0:
        diff = -diff
    return (diff + 0.0).tobytes()  # + 0.0 turns -0.0 into 0.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (family-wise error rate, valid under any dependence between the tests)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
