"""Randomness keyed per sample: every random draw of an explainer or a quality metric derives from
(run seed, method, sample id), never from a stream shared by a batch.

An input then gets the same attributions alone, in any batch and at any position, and a resumed or
chunked run (chunks of samples, each with its own seed) draws exactly what a single pass draws. A
sample id is the row's index in the audit data when the caller knows it (the explanations section
passes it), else a hash of the row's values, so the same input is the same sample wherever it appears.
The adversarial and noisy versions of a sample, and its explanation under a randomized model, keep
the sample's id: the two explanations then share their random draws and differ only by what changed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np


def sample_seed(seed: int, method: str, sample_id: int) -> int:
    """A 32-bit seed for one (run seed, method, sample id): stable across processes and platforms."""
    text = f"{int(seed)}/{method}/{int(sample_id)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "little")


def sample_seeds(seed: int, method: str, ids: np.ndarray) -> np.ndarray:
    """``sample_seed`` for every id, as uint32."""
    return np.array([sample_seed(seed, method, int(i)) for i in np.asarray(ids).reshape(-1)], np.uint32)


def sample_rng(seed: int, method: str, sample_id: int) -> np.random.Generator:
    return np.random.default_rng(sample_seed(seed, method, sample_id))


def content_ids(x: np.ndarray) -> np.ndarray:
    """Sample ids from the rows' values (float32 bytes): the id of an input the caller gave no id for."""
    rows = np.ascontiguousarray(np.asarray(x, np.float32).reshape(len(x), -1))
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=7).digest(), "little")
                     for row in rows], np.int64)


@contextlib.contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for one library call that draws from it (shap's KernelExplainer, captum's
    GradientShap) and put the previous state back afterwards, so code outside sees no change."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
