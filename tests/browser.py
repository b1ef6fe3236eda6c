"""Headless Chromium over the DevTools protocol, for tests that look at pages as a reviewer does.

Starts ``chromium --headless --remote-debugging-port=0``, reads the websocket address it
prints, and talks CDP through ``websockets``' synchronous client. ``CHROMIUM`` overrides the
binary. ``chromium_missing()`` says why a browser test must skip.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_DEVTOOLS = re.compile(r"DevTools listening on (ws://\S+)")


def chromium_path() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("/usr/bin/chromium", *CANDIDATES):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_missing() -> str | None:
    """None when a browser test can run, else the reason it cannot."""
    if chromium_path() is None:
        return "no Chromium found (install chromium or set CHROMIUM=/path/to/chrome)"
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        return "the 'websockets' package is missing (pip install 'nnaudit[dev]')"
    return None


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, *, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self.console: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._profile = tempfile.mkdtemp(prefix="nnaudit-chromium-")
        binary = chromium_path()
        if binary is None:
            raise RuntimeError(chromium_missing() or "no Chromium")
        self._proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self._ws = self._connect_page(self._browser_url())
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def _browser_url(self) -> str:
        assert self._proc.stderr is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line and self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode} before DevTools started")
            match = _DEVTOOLS.search(line)
            if match:
                return match.group(1)
        raise RuntimeError("chromium did not print its DevTools address in time")

    def _connect_page(self, browser_url: str) -> Any:
        from websockets.sync.client import connect

        browser = connect(browser_url, max_size=None, open_timeout=self.timeout)
        try:
            browser.send(json.dumps({"id": 1, "method": "Target.getTargets"}))
            while True:
                reply = json.loads(browser.recv(timeout=self.timeout))
                if reply.get("id") == 1:
                    break
            pages = [t for t in reply["result"]["targetInfos"] if t["type"] == "page"]
        finally:
            browser.close()
        port = browser_url.split(":")[2].split("/")[0]
        return connect(f"ws://127.0.0.1:{port}/devtools/page/{pages[0]['targetId']}", max_size=None,
                       open_timeout=self.timeout)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append({"level": params.get("type"), "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append({"level": "error", "text": details.get("text", "exception")})
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append({"level": entry.get("level"), "text": entry.get("text", ""),
                                 "url": entry.get("url")})

    def goto(self, url: str) -> None:
        """Open ``url`` and wait until the page and its images have loaded."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state = self.evaluate("document.readyState === 'complete' && "
                                  "Array.from(document.images).every(i => i.complete)")
            if state:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not finish loading in {self.timeout} s")

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} raised: {reply['exceptionDetails'].get('text')}")
        return reply.get("result", {}).get("value")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("document.documentElement.scrollHeight"))
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[dict[str, Any]]:
        """Console errors and failed loads seen so far."""
        self.drain()
        return [entry for entry in self.console if entry.get("level") == "error"]

    def drain(self, seconds: float = 0.2) -> None:
        """Read pending events for ``seconds`` (console messages arrive asynchronously)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                message = json.loads(self._ws.recv(timeout=max(0.01, end - time.monotonic())))
            except TimeoutError:
                break
            self._event(message)

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
