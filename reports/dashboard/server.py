"""``nnaudit dashboard``: start Streamlit on the dashboard script, safely, and stop it with us.

- listens on ``127.0.0.1`` unless the caller names another host (``--host 0.0.0.0`` to share it);
- no file watcher and no rerun on save: a read-only viewer has nothing to watch, and Streamlit's
  watcher would otherwise walk every imported module's folder, site-packages included;
- SIGTERM or SIGINT sent to ``nnaudit`` stops the Streamlit server it started (SIGTERM first, then
  SIGKILL after ``STOP_GRACE_S``); on Linux the server is also told to stop if ``nnaudit`` dies
  without running its handlers (``kill -9``).

No streamlit import here: the CLI imports this module, and starting the CLI stays light.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from reports.dashboard import RUNS_ENV, SCRIPT

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
STOP_GRACE_S = 10.0
EXIT_SIGNAL_BASE = 128  # + the signal number, as the rest of the CLI
_PR_SET_PDEATHSIG = 1


def streamlit_command(runs: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                      python: str | None = None) -> list[str]:
    """The ``python -m streamlit run`` command line for ``runs``."""
    return [python or sys.executable, "-m", "streamlit", "run", str(SCRIPT),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "viewer",
            "--", str(runs)]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: deliver SIGTERM to the server when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait up to ``STOP_GRACE_S``, then kill. Not for signal handlers (``Popen.wait`` is not reentrant)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve(runs: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          extra_env: dict[str, str] | None = None, announce: bool = True) -> int:
    """Run the dashboard server until it exits or this process gets SIGINT/SIGTERM. Returns the exit code."""
    runs = runs.resolve()
    env = {**os.environ, RUNS_ENV: str(runs), **(extra_env or {})}
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(streamlit_command(runs, host=host, port=port), env=env,
                            preexec_fn=preexec)  # preexec only calls prctl: safe after fork
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        # the main thread sits in proc.wait(), which holds Popen's wait lock: only signal here, and let a timer
        # kill a server that ignores SIGTERM
        if not received:
            proc.send_signal(signal.SIGTERM)
            timer = threading.Timer(STOP_GRACE_S, proc.kill)
            timer.daemon = True
            timer.start()
        received.append(signum)

    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        if announce:
            shown = "localhost" if host == DEFAULT_HOST else host
            print(f"nnaudit: dashboard on http://{shown}:{port} (Ctrl+C stops it)", flush=True)
        code = proc.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _stop(proc)
    if received:
        print(f"nnaudit: dashboard stopped by {signal.Signals(received[0]).name}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + received[0]
    return code
