"""The run directory's lock: one writer at a time, and a way for readers to tell a live run from a dead one.

``DIR/.nnaudit.lock`` holds the writer's PID, host and start time as JSON. The writer keeps an
exclusive ``flock`` on it for as long as it runs; the kernel drops that lock when the process
ends in any way (``kill -9`` included), so a leftover file whose lock can be taken is stale. A
heartbeat thread touches the file every ``HEARTBEAT_S`` seconds: for a holder on another host
(a shared file system, where ``flock`` may not reach across machines) a heartbeat older than
``STALE_AFTER_S`` means the holder is gone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from audit.errors import RunDirError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: fall back to the PID and the heartbeat
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".nnaudit.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0

LOCKED = ("{run_dir} is being written by another nnaudit run (pid {pid} on {host}, started {started}); "
          "wait for it to finish, stop it, or pass another --out")

LockState = Literal["held", "stale", "absent"]


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) a run directory, and whether that process is still alive."""

    state: LockState
    pid: int | None = None
    host: str | None = None
    started_at: str | None = None
    heartbeat_age_s: float | None = None

    @property
    def holder(self) -> str:
        return f"pid {self.pid if self.pid is not None else '?'} on {self.host or '?'}"


def _hostname() -> str:
    return socket.gethostname()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _flock_free(path: Path) -> bool | None:
    """True when nobody holds the file's lock, False when someone does, None when this cannot be told."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock, if taken
    return True


def inspect_lock(run_dir: str | os.PathLike[str]) -> LockInfo:
    """Whether a live process holds ``run_dir``'s lock ("held"), a dead one left it ("stale"), or there is none."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return LockInfo("absent")
    data = _read(path)
    pid = data.get("pid") if isinstance(data.get("pid"), int) else None
    host = data.get("host") if isinstance(data.get("host"), str) else None
    try:
        age: float | None = max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        age = None
    started = data.get("started_at") if isinstance(data.get("started_at"), str) else None
    if host is not None and host != _hostname():
        # another machine on a shared file system: trust its heartbeat, not our view of its processes
        held = age is not None and age < STALE_AFTER_S
    else:
        free = _flock_free(path)
        held = (pid is not None and _pid_alive(pid)) if free is None else not free  # no flock: the PID decides
    return LockInfo("held" if held else "stale", pid, host, started, age)


class RunLock:
    """Exclusive hold on a run directory while a run writes it (a context manager).

    ``acquire`` raises ``RunDirError`` naming the holder when a live process has it; a stale
    lock (its process is gone) is taken over. While held, a thread touches the file every
    ``heartbeat_s`` seconds (default ``HEARTBEAT_S``).
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.heartbeat_s = heartbeat_s
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # retried when the file was replaced under us, or a reader peeked at it
            other = inspect_lock(self.run_dir)
            if other.state == "held" and other.host not in (None, _hostname()):
                raise RunDirError(self._locked_message(other))
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    again = inspect_lock(self.run_dir)
                    if again.state == "held":
                        raise RunDirError(self._locked_message(again)) from None
                    time.sleep(0.05)  # a reader's momentary shared lock: try again
                    continue
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if not same:  # the holder removed the file as we opened it: start again
                    os.close(fd)
                    continue
            elif other.state == "held":  # pragma: no cover - no flock: a live PID holds it
                os.close(fd)
                raise RunDirError(self._locked_message(other))
            self._fd = fd
            self._write_owner()
            self._start_heartbeat()
            return
        raise RunDirError(self._locked_message(inspect_lock(self.run_dir)))

    def _locked_message(self, info: LockInfo) -> str:
        return LOCKED.format(run_dir=self.run_dir, pid=info.pid if info.pid is not None else "?",
                             host=info.host or "?", started=info.started_at or "at an unknown time")

    def _write_owner(self) -> None:
        if self._fd is None:
            return
        owner = {"pid": os.getpid(), "host": _hostname(),
                 "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        data = json.dumps(owner).encode("utf-8")
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._thread = threading.Thread(target=beat, name="nnaudit-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.heartbeat_s)
            self._thread = None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # drops the flock
            self._fd = None
