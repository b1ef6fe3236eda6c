"""Backends: who runs a section's chunks. ``LocalBackend`` (the default) runs them one after the
other in this process; ``RayBackend`` (``nnaudit run --backend ray``) sends each chunk as a Ray
task to a local or remote Ray cluster.

Both take the same chunk function and shared inputs and yield each chunk's outputs as it finishes;
the caller (``audit.engine.chunks.run_chunks``) saves them. A chunk draws its random numbers from
its own seed, so both backends compute the same numbers.

Ray is an optional extra (``pip install "nnaudit[ray]"``) and is imported only when a Ray run
starts. The model and the data go into Ray's object store once per section (``ray.put``); every
task gets a reference. A task whose worker dies is retried (``max_retries``); a task that raises
fails the section with the task's error. On CUDA every task asks for ``gpus_per_task`` GPUs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from audit.engine.chunks import Chunk, ChunkFn
from audit.errors import NNAuditError

log = logging.getLogger("nnaudit")

BACKENDS = ("local", "ray")
RAY_MISSING = ("--backend ray needs Ray, which is not installed: pip install \"nnaudit[ray]\" (or pip install "
               "\"ray>=2.9\"), or run without --backend ray")


class BackendError(NNAuditError):
    """A backend cannot start (Ray missing, cluster unreachable) or a chunk task failed."""


class LocalBackend:
    """Chunks one after the other in this process; the chunk function reports its inner loops too."""

    name = "local"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def map(self, fn: ChunkFn, shared: Any, chunks: list[Chunk], *, progress: Any, desc: str,
            device: str = "cpu") -> Iterator[tuple[Chunk, dict[str, np.ndarray]]]:
        for chunk in progress(chunks, desc=desc, total=len(chunks)):
            yield chunk, fn(shared, chunk, progress)


def _ray_task(fn: ChunkFn, shared: Any, chunk: Chunk, threads: int) -> dict[str, np.ndarray]:
    """One chunk on a Ray worker: ``threads`` torch threads (the CPUs the task asked for), no progress bars."""
    import torch

    torch.set_num_threads(max(1, threads))
    return fn(shared, chunk, None)


class RayBackend:
    """Chunks as Ray tasks. ``address``: None starts a local Ray (``workers`` CPUs), ``auto`` joins the
    cluster this machine belongs to, ``ray://host:port`` a remote one through Ray Client. ``workers``:
    at most this many chunks in flight at once (default: as many as the cluster's CPUs allow)."""

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 gpus_per_task: float = 1.0, max_retries: int = 3, init_kwargs: dict[str, Any] | None = None) -> None:
        if workers is not None and workers < 1:
            raise BackendError("--workers must be >= 1")
        if threads_per_worker < 1:
            raise BackendError("--threads-per-worker must be >= 1")
        self.address = address
        self.workers = workers
        self.threads = threads_per_worker
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "address": self.address or "local", "workers": self.workers,
                "threads_per_worker": self.threads}

    @staticmethod
    def check_installed() -> None:
        """Raise ``BackendError`` with the install command when Ray is missing (before any work)."""
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise BackendError(RAY_MISSING)

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as err:
            raise BackendError(RAY_MISSING) from err
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            if self.address is None and self.workers is not None:
                kwargs.setdefault("num_cpus", self.workers * self.threads)
            try:
                ray.init(address=self.address, **kwargs)
            except Exception as err:  # ConnectionError, ValueError for a bad address, ...
                where = self.address or "a local Ray instance"
                raise BackendError(f"cannot start Ray at {where}: {err}; check --address (auto joins the "
                                   "cluster of this machine, ray://host:10001 a remote head)") from err
            self._started = True
            log.info("ray: connected (%s)", self.address or "local instance")
        return ray

    def map(self, fn: ChunkFn, shared: Any, chunks: list[Chunk], *, progress: Any, desc: str,
            device: str = "cpu") -> Iterator[tuple[Chunk, dict[str, np.ndarray]]]:
        if not chunks:
            return
        ray = self._ray()
        shared_ref = ray.put(shared)  # once: every task reads the same copy from the object store
        gpus = self.gpus_per_task if str(device).startswith("cuda") else 0
        remote = ray.remote(_ray_task).options(num_cpus=self.threads, num_gpus=gpus, max_retries=self.max_retries)
        limit = self.workers or len(chunks)
        queue = list(chunks)
        in_flight: dict[Any, Chunk] = {}

        def finished() -> Iterator[tuple[Chunk, dict[str, np.ndarray]]]:
            try:
                while queue or in_flight:
                    while queue and len(in_flight) < limit:
                        chunk = queue.pop(0)
                        in_flight[remote.remote(fn, shared_ref, chunk, self.threads)] = chunk
                    done, _ = ray.wait(list(in_flight), num_returns=1)
                    chunk = in_flight.pop(done[0])
                    try:
                        arrays = ray.get(done[0])
                    except Exception as err:
                        cause = getattr(err, "cause", None) or err
                        raise BackendError(f"chunk {chunk.k} failed on Ray: {cause}") from err
                    yield chunk, arrays
            finally:  # an error, SIGINT/SIGTERM or a closed generator: the cluster stops the chunks left
                for ref in in_flight:
                    ray.cancel(ref)

        yield from progress(finished(), desc=desc, total=len(chunks))

    def shutdown(self) -> None:
        """Stop the Ray instance this backend started (not a cluster it joined)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def make_backend(name: str, *, address: str | None = None, workers: int | None = None,
                 threads_per_worker: int = 1) -> LocalBackend | RayBackend:
    """The backend ``nnaudit run --backend NAME`` asks for; Ray's presence is checked here, before any work."""
    if name == "local":
        if address is not None or workers is not None:
            raise BackendError("--address and --workers need --backend ray")
        return LocalBackend()
    if name == "ray":
        RayBackend.check_installed()
        return RayBackend(address=address, workers=workers, threads_per_worker=threads_per_worker)
    raise BackendError(f"unknown backend {name!r}; choose from {list(BACKENDS)}")
