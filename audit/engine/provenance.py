"""Where a run came from: a run id, and the git commit of the repository its config sits in.

Both are recorded in the manifest when the run starts (``manifest.run_id``, ``manifest.git``),
so that the results store can tell runs apart (the same run registered twice updates its
entry; two runs in the same directory one after the other are two entries) and name the
model's version when the config gives none. Recorded at the start, not at registration: an
``nnaudit store import`` weeks later must not read the repository as it is then.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 10.0
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_LEGACY = uuid.UUID("6f1c2b1e-8d3a-4c55-9a57-0d6c1b7e2f41")  # namespace of the ids of runs made before run_id


def new_run_id() -> str:
    """A fresh run id: 32 hex digits (a random UUID)."""
    return uuid.uuid4().hex


def run_id_of(manifest: Any, run_dir: str | os.PathLike[str], host: str | None = None) -> str:
    """The run's id: ``manifest.run_id``; for a run made before nnaudit recorded one, a name-based UUID of
    the host, the run directory's absolute path and the start time (stable: importing it twice gives the
    same id)."""
    stored = manifest.get("run_id") if isinstance(manifest, dict) else None
    if isinstance(stored, str) and RUN_ID.match(stored):
        return stored
    created = manifest.get("created_at") if isinstance(manifest, dict) else None
    name = f"{host or socket.gethostname()}\n{Path(run_dir).resolve()}\n{created}"
    return uuid.uuid5(_LEGACY, name).hex


def _git(args: list[str], cwd: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        proc = subprocess.run([git, *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                              env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(folder: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """``{"commit": <40 hex>, "dirty": bool}`` of the git repository holding ``folder``; None outside a
    repository, without git, or when git refuses (e.g. a repository owned by another user).

    ``dirty``: tracked files differ from the commit (staged or not); untracked files (such as the
    runs themselves) do not count.
    """
    if folder is None:
        return None
    path = Path(folder)
    if not path.is_dir():
        return None
    commit = _git(["rev-parse", "--verify", "HEAD"], path)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], path)
    return {"commit": commit, "dirty": None if status is None else bool(status)}
