"""The dashboard package: text from data shown as text, and ``nnaudit dashboard``'s server (real subprocesses)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from results_factory import make_results, write_run
from test_app import APP, TIMEOUT, plain

from reports.dashboard.text import literal

ROOT = Path(__file__).resolve().parents[1]
IMG_MD = "![](http://host/x.png)"
IMG_HTML = "<img src=x onerror=alert(1)>"
INJECTIONS = (IMG_MD, IMG_HTML, "$x$ :red[red] **bold** [link](http://host/)")


@pytest.mark.parametrize("text", [*INJECTIONS, "plain text", "a\\b `c` 1.5 - 2", ""])
def test_literal_renders_as_its_own_text(text: str) -> None:
    escaped = literal(text)
    assert plain(escaped) == " ".join(text.split())
    assert not re.search(r"[!-/:-@\[-`{-~]", re.sub(r"\\[!-/:-@\[-`{-~]", "", escaped))  # all escaped


def injected_results() -> dict[str, Any]:
    """A run whose title, class, group and feature names, section and table titles carry markup."""
    data = make_results(title=IMG_MD, with_error=True)
    manifest = data["manifest"]
    manifest["data"]["class_names"] = [IMG_MD, IMG_HTML, "ok"]
    manifest["data"]["feature_names"] = [IMG_MD, IMG_HTML, "f2", "f3"]
    manifest["data"]["sensitive"] = [IMG_HTML]
    sections = data["sections"]
    sections["performance"]["title"] = IMG_HTML
    sections["performance"]["tables"][0]["title"] = IMG_MD
    sections["performance"]["tables"][0]["description"] = IMG_HTML
    sections["performance"]["figures"][0]["title"] = IMG_MD
    sections["performance"]["notes"] = [IMG_HTML]
    sections["imbalance"]["findings"][0]["message"] = f"recall of class {IMG_MD} in group {IMG_HTML} is low"
    sections["fairness"]["error"]["message"] = f"group {IMG_MD} has a single value"
    return data


def _markdown_values(at: Any) -> list[str]:
    """Every string the page handed to an element that renders Markdown."""
    values = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning",
                                   "info", "success") for e in getattr(at, kind)]
    values += [e.label for e in at.expander]
    values += [e.label for e in at.metric]
    return values


def test_strings_from_results_are_shown_as_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    write_run(tmp_path / "runs", "run", injected_results())
    monkeypatch.setattr(sys, "argv", ["app.py", str(tmp_path / "runs")])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    values = _markdown_values(at)
    for value in values:
        assert not re.search(r"(?<!\\)(!\[|<img)", value), value
    shown = " ".join(plain(v) for v in values)
    assert IMG_MD in plain(at.title[0].value)
    assert f"group {IMG_MD} has a single value" in shown  # the error, escaped, still reads as written
    assert any(IMG_HTML in plain(label) for label in (e.label for e in at.expander))
    assert not at.table  # st.table renders Markdown in its cells; the page uses dataframes


# -- nnaudit dashboard: a real server process --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nnaudit dashboard exited with {proc.returncode}: {proc.communicate()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the dashboard did not answer on port {port} within {timeout} s")


def _inotify_fds(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the server process")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_dashboard_serves_on_localhost_and_stops_with_its_command(tmp_path: Path, signum: int) -> None:
    """``nnaudit dashboard``: 127.0.0.1 only, no file watcher, and SIGTERM/SIGINT to nnaudit stop the server."""
    runs = tmp_path / "runs"
    write_run(runs, "run", make_results())
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "dashboard", str(runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        _wait_healthy(port, proc)
        (server,) = _children(proc.pid)
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, and nothing on other interfaces
        assert _inotify_fds(server) == 0  # no file watcher (it watched all of site-packages)
        proc.send_signal(signum)
        code = proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server), "the Streamlit server outlived nnaudit dashboard"
        assert code == 128 + signum
        _, stderr = proc.communicate()
        assert f"stopped by {signal.Signals(signum).name}" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_distribution_installs_no_top_level_app(tmp_path: Path) -> None:
    """The wheel carries the dashboard inside ``reports`` (with its script) and no module named ``app``."""
    import shutil
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("audit", "attacks", "explain", "reports"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "app.py", source / "app.py")  # present in the tree, as in a checkout
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(source), "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        top_level = archive.read(next(n for n in names if n.endswith("top_level.txt"))).decode().split()
    assert sorted(top_level) == ["attacks", "audit", "explain", "reports"]
    assert "app.py" not in names
    assert {"reports/dashboard/page.py", "reports/dashboard/script/nnaudit_dashboard.py"} <= names
