"""Headless Chromium over the DevTools protocol, for the browser tests (report, dashboard) and the dashboard benchmark.

A small synchronous client over ``websockets.sync``: one page, console errors, uncaught
exceptions and every network request recorded, load waiting, text polling and screenshots. No
browser automation framework: Chromium is the Debian package (``/usr/bin/chromium``);
``NNAUDIT_CHROMIUM`` (or ``CHROMIUM``) names a binary elsewhere. ``chromium_missing()`` says why
a browser test must skip. ``Dashboard`` serves ``nnaudit dashboard`` on a free localhost port.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "chrome")
ROOT = Path(__file__).resolve().parents[1]


def find_chromium() -> str | None:
    explicit = os.environ.get("NNAUDIT_CHROMIUM") or os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_missing() -> str | None:
    """None when a browser test can run, else the reason it cannot."""
    if find_chromium() is None:
        return ("no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH, or $NNAUDIT_CHROMIUM / "
                "$CHROMIUM): install chromium or set NNAUDIT_CHROMIUM=/path/to/chrome")
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        return "the 'websockets' package is missing (pip install -e .[dev])"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dashboard:
    """``nnaudit dashboard RUNS`` as a subprocess on a free localhost port, until ``stop``."""

    def __init__(self, runs: Path, *, port: int | None = None, script: Path | None = None) -> None:
        self.port = port or free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        if script is None:
            command = [sys.executable, "-m", "audit.cli", "dashboard", str(runs), "--port", str(self.port)]
        else:  # a bare Streamlit script with the same server settings (the benchmark's baseline)
            from reports.dashboard.server import streamlit_command

            command = streamlit_command(runs, port=self.port)
            command[command.index("run") + 1] = str(script)
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with {self.proc.returncode}: {self.proc.communicate()[1]}")
            try:
                with urllib.request.urlopen(self.url + "_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the dashboard did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JavascriptError(RuntimeError):
    """An expression given to ``Browser.evaluate`` threw in the page."""


class Browser:
    """Headless Chromium with one page attached (flattened session). Use as a context manager.

    ``chromium`` defaults to ``find_chromium()``. Every protocol event is kept in ``events``
    (``clear_events`` forgets them); ``console_errors`` and ``requested_urls`` read them.
    """

    def __init__(self, chromium: str | None = None, *, width: int = 1280, height: int = 1000,
                 timeout: float = 60.0) -> None:
        from websockets.sync.client import connect

        binary = chromium or find_chromium()
        if binary is None:
            raise RuntimeError(chromium_missing() or "no Chromium found")
        self.width, self.height, self.timeout = width, height, timeout
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.ws: Any = None
        self.profile = tempfile.mkdtemp(prefix="nnaudit-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            active = Path(self.profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (active.exists() and len(active.read_text().split()) >= 2):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Chromium did not open its DevTools port")
                time.sleep(0.1)
            port, path = active.read_text().split()[:2]
            self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout)
            target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            raw = self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def drain(self, seconds: float = 0.0) -> None:
        """Collect the events that arrived (waiting up to ``seconds``)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                raw = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return
            reply = json.loads(raw)
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (promises awaited); ``JavascriptError`` if it throws."""
        reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise JavascriptError(f"{expression!r} raised: "
                                  f"{details.get('exception', {}).get('description') or details.get('text')}")
        return reply.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.05) -> float:
        """Poll ``expression`` until truthy (throwing counts as not yet, e.g. no ``document.body`` while the page
        loads); returns the seconds waited. Raises ``TimeoutError``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if self.evaluate(expression):
                    return time.monotonic() - start
            except JavascriptError:
                pass
            time.sleep(interval)
        raise TimeoutError(f"not true within {timeout} s: {expression}")

    def navigate(self, url: str) -> float:
        """Start loading ``url``; returns the monotonic time the command was sent."""
        start = time.monotonic()
        self.call("Page.navigate", {"url": url})
        return start

    def goto(self, url: str, timeout: float | None = None) -> float:
        """Open ``url`` and wait until its load event fired and every image finished loading; returns the seconds
        waited. Raises ``TimeoutError``."""
        timeout = self.timeout if timeout is None else timeout
        seen = len(self.events)
        start = self.navigate(url)
        deadline = start + timeout
        while not any(e["method"] == "Page.loadEventFired" for e in self.events[seen:]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not fire its load event in {timeout} s")
            self.drain(0.05)
        self.wait_for("document.readyState === 'complete' && [...document.images].every(i => i.complete)",
                      timeout=max(0.0, deadline - time.monotonic()), interval=0.1)
        return time.monotonic() - start

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def screenshot(self, path: Path, *, height: int | None = None, full_page: bool = False) -> Path:
        """PNG of the viewport; ``height`` resizes the viewport first (it stays so), ``full_page`` captures the
        whole document's height instead."""
        if height:
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            time.sleep(0.5)
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            full = int(self.evaluate("document.documentElement.scrollHeight"))
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": full, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def clear_events(self) -> None:
        """Forget the events recorded so far (a fresh start for ``console_errors``)."""
        self.events.clear()

    def console_errors(self, wait: float = 0.2) -> list[str]:
        """Console errors and assertions, uncaught exceptions and failed loads recorded so far (after reading what
        arrives within ``wait`` seconds: console messages come asynchronously)."""
        self.drain(wait)
        errors = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')} "
                              f"{params['entry'].get('url', '')}")
        return errors

    def requested_urls(self) -> list[str]:
        self.drain()
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
