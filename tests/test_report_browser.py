"""The report in a real browser: headless Chromium over the DevTools protocol (tests/cdp.py).

Serves a run directory over HTTP on 127.0.0.1, opens report.html at 1280 px width, waits for it
to render and checks what a reviewer sees first: the verdict, the headline card, a page shorter
than 8,000 px, and no console errors or failed loads. Skips, saying why, without Chromium (fails
instead under ``NNAUDIT_REQUIRE_SYSTEM=1``, as in CI).

It also checks both demo reports (the session's `nnaudit demo`, or ``NNAUDIT_DEMO_DIR=DIR``, a finished one);
``NNAUDIT_SCREENSHOTS=DIR`` saves a screenshot of each report's top there.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp import Browser, chromium_missing
from results_factory import write_review_run
from system import need

from reports.html import write_report

MAX_HEIGHT = 11000  # the digits demo report: eight sections (corruptions, ood) under a verdict card with its findings
WIDTH = 1280



@pytest.fixture(autouse=True)
def _chromium() -> None:
    need(None if chromium_missing() is None else f"browser test: {chromium_missing()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(width=WIDTH, height=900) as page:
        yield page


def _serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _check_report(browser: Browser, run_dir: Path, expected_verdict: str, shot: str | None = None) -> int:
    server, url = _serve(run_dir)
    try:
        browser.clear_events()
        browser.goto(f"{url}/report.html")
        assert browser.evaluate("document.getElementById('verdict-label').textContent.trim()") == expected_verdict
        verdict_top = browser.evaluate("document.getElementById('verdict').getBoundingClientRect().top")
        assert 0 < verdict_top < 400  # the first thing under the title, without scrolling
        labels = browser.evaluate("Array.from(document.querySelectorAll('#headline .stat-label'))"
                                  ".map(e => e.textContent.trim())")
        assert any(label.startswith("Clean accuracy") for label in labels)
        assert any(label.startswith("Findings by severity") for label in labels)
        height = int(browser.evaluate("document.documentElement.scrollHeight"))
        assert height < MAX_HEIGHT
        overflow = browser.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0  # nothing pushes the page sideways: wide tables scroll in their own box
        broken = browser.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).length")
        assert broken == 0
        tiles = browser.evaluate("Array.from(document.querySelectorAll('table.tiles img'))"
                                 ".map(i => Math.min(i.getBoundingClientRect().width, "
                                 "i.getBoundingClientRect().height))")
        assert all(size >= 64 for size in tiles)
        assert browser.console_errors() == []
        folder = os.environ.get("NNAUDIT_SCREENSHOTS")
        if shot and folder:
            browser.evaluate("window.scrollTo(0, 0)")
            browser.screenshot(Path(folder) / f"{shot}-top.png")
        # every drawer open: wide tables still scroll inside their own box, the page never gets wider
        browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        assert browser.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
        clipped = browser.evaluate("Array.from(document.querySelectorAll('.tablewrap')).filter(w => "
                                   "w.scrollWidth > w.clientWidth && getComputedStyle(w).overflowX === 'visible')"
                                   ".length")
        assert clipped == 0
        browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = false)")
        return height
    finally:
        server.shutdown()
        server.server_close()


def test_review_report_in_chromium(tmp_path: Path, browser: Browser) -> None:
    run = write_review_run(tmp_path)
    write_report(run)
    _check_report(browser, run, "FAIL", shot="review-fixture")
    # injected markup stayed text: no element came from a class, group or feature name
    injected = "document.querySelectorAll('script, main img[src^=\"http\"], a[href^=\"http\"]').length"
    assert browser.evaluate(injected) == 0
    assert "<script>alert(1)</script>" in browser.evaluate("document.body.innerText")


def test_details_are_collapsed_and_one_click_away(tmp_path: Path, browser: Browser) -> None:
    run = write_review_run(tmp_path)
    write_report(run)
    server, url = _serve(run)
    try:
        browser.goto(f"{url}/report.html")
        opened = browser.evaluate("document.querySelectorAll('details[open]').length")
        assert opened == 0
        before = browser.evaluate("document.documentElement.scrollHeight")
        browser.evaluate("document.querySelector('#section-fairness details.drawer > summary').click()")
        after = browser.evaluate("document.documentElement.scrollHeight")
        assert after > before  # the tables were there, one click away
        assert browser.evaluate("document.querySelector('#section-fairness details.drawer').open") is True
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("run", ["digits-cnn", "resume-mlp"])
def test_demo_reports_in_chromium(run: str, browser: Browser, demo_dir: Path) -> None:
    run_dir = demo_dir / run
    height = _check_report(browser, run_dir, "PASS", shot=run)
    print(f"{run}: report height {height} px at {WIDTH} px width")
