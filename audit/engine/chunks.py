"""Chunks of samples: the unit of work of the expensive sections, and what a resumed run keeps.

A section splits its samples into chunks of ``chunk_size`` (``plan``), hands the chunks to a
backend (``audit.engine.backends``: in this process, or Ray tasks), and saves each finished
chunk's per-sample outputs at once to ``artifacts/<section>/chunks/<k>.npz`` (atomically: a
reader sees the whole file or none). The section's metrics are then reduced from the chunk files.

Every random draw inside a chunk comes from ``chunk_seed(run seed, section, ..., k)``, never from
a stream shared with other chunks, so a chunk computes the same outputs whether it runs first or
last, here or on a Ray worker, in the first attempt or after a resume.

``ChunkStore`` keeps the files of a run that was killed: its folder holds ``fingerprint.json``
(the section's fingerprint, from the runner), and chunk files left by a run with another
fingerprint (another config, model, data, seed or nnaudit version) are deleted before any work.
Without a fingerprint (a section called outside the runner) nothing is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.results import atomic_write_bytes

CHUNKS_DIR = "chunks"
FINGERPRINT_FILE = "fingerprint.json"
DEFAULT_CHUNK_SIZE = 512

# fn(shared, chunk, progress) -> the chunk's per-sample outputs; module-level, so Ray can ship it
ChunkFn = Callable[[Any, "Chunk", Any], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Chunk:
    """Chunk ``k``: positions ``start:stop`` of the section's list of samples."""

    k: int
    start: int
    stop: int

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


def plan(n: int, chunk_size: int) -> list[Chunk]:
    """``n`` samples in chunks of ``chunk_size`` (the last one shorter)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [Chunk(k, start, min(start + chunk_size, n)) for k, start in enumerate(range(0, n, chunk_size))]


def chunk_seed(seed: int, *keys: object) -> int:
    """A 31-bit seed for (run seed, keys...): stable across processes, platforms and Python versions."""
    text = "/".join([str(int(seed)), *(str(k) for k in keys)]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") % (2**31 - 1)


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (the attacks and foolbox draw from them)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pack(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed NPZ of ``arrays`` (no pickles: object arrays are refused)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"chunk output {key!r} is an object array; store strings as a unicode array")
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buffer.getvalue()


class ChunkStore:
    """The finished chunks of one section of one run (``artifacts/<section>/chunks/``)."""

    def __init__(self, folder: Path, fingerprint: str | None) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        mark = self.folder / FINGERPRINT_FILE
        kept = fingerprint is not None and self._stored_fingerprint(mark) == fingerprint
        if not kept and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".*.tmp"):  # a write a killed process never renamed into place
            leftover.unlink(missing_ok=True)
        if not kept:
            atomic_write_bytes(mark, json.dumps({"fingerprint": fingerprint}).encode("utf-8"))

    @staticmethod
    def _stored_fingerprint(mark: Path) -> str | None:
        try:
            value = json.loads(mark.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def path(self, k: int) -> Path:
        return self.folder / f"{k}.npz"

    def done(self, k: int) -> bool:
        """Whether chunk ``k`` finished (its file is whole: it was renamed into place after writing)."""
        path = self.path(k)
        if not path.exists():
            return False
        try:
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        except (OSError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)
            return False

    def save(self, k: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write chunk ``k`` under a temporary name and rename it into place: a killed process leaves the whole
        file or none. No fsync (it cost more than the rest of the chunk bookkeeping on a busy disk): after a
        power loss a file may be cut short, and ``done`` checks every member's CRC, so it is redone."""
        path = self.path(k)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.folder)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o644)  # artifacts are meant to be read
            with os.fdopen(fd, "wb") as handle:
                handle.write(pack(arrays))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, k: int) -> dict[str, np.ndarray]:
        with np.load(self.path(k), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}


def run_chunks(store: ChunkStore, chunks: list[Chunk], fn: ChunkFn, shared: Any, *, backend: Any,
               progress: Any, desc: str, device: str = "cpu") -> int:
    """Run ``fn`` on every chunk whose file is missing and save each result as it finishes.

    Returns how many chunks ran (the others were kept from an earlier attempt). ``backend``:
    ``audit.engine.backends.LocalBackend`` or ``RayBackend``; ``progress``: ``ctx.progress``."""
    pending = [c for c in chunks if not store.done(c.k)]
    kept = len(chunks) - len(pending)
    label = f"{desc} ({kept} of {len(chunks)} kept)" if kept else desc
    for chunk, arrays in backend.map(fn, shared, pending, progress=progress, desc=label, device=device):
        store.save(chunk.k, arrays)
    return len(pending)


def iter_chunks(store: ChunkStore, chunks: list[Chunk]) -> Iterator[tuple[Chunk, dict[str, np.ndarray]]]:
    """Each chunk with its saved outputs, in order, one in memory at a time."""
    for chunk in chunks:
        yield chunk, store.load(chunk.k)


class NpyWriter:
    """Write an ``.npy`` file row block by row block, without holding the whole array (the adversarial
    examples of a section) and return it memory-mapped."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        self.path = Path(path)
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._handle = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self._handle, header)
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"block of shape {block.shape} does not fit rows of {self.shape}")
        self._handle.write(block.tobytes())
        self.rows += len(block)

    def abort(self) -> None:
        """Drop an unfinished file (a no-op after ``close``)."""
        if not self._handle.closed:
            self._handle.close()
            self._tmp.unlink(missing_ok=True)

    def close(self) -> np.ndarray:
        """Finish the file and return it memory-mapped for reading and writing: a later step of the same section
        that changes rows in place (folding another attack into the worst case) changes the file, so the artifact
        and a checkpoint's reference to it stay what the section ended with. Hand it to later sections through
        ``copy_on_write``."""
        self._handle.close()
        if self.rows != self.shape[0]:
            self._tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: wrote {self.rows} rows, expected {self.shape[0]}")
        self._tmp.replace(self.path)
        return np.load(self.path, mmap_mode="r+")


def copy_on_write(array: np.ndarray) -> np.ndarray:
    """A memory-mapped array as later sections should get it: its writes flushed to the file, then mapped
    copy-on-write (writable like any array, torch takes it without a warning, the file never changes). Other
    arrays are returned as they are."""
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or not filename:
        return array
    array.flush()
    return np.load(filename, mmap_mode="c")
