"""The dashboard in a real browser: ``nnaudit dashboard`` on a free localhost port, headless Chromium over the
DevTools protocol (tests/cdp.py), on a small real audit run whose class names carry markup.

Asserts what a reviewer sees: the verdict and headline, the sample explorer with its images, text
from the data rendered as text (no request to the host an injected image names), and no console
error. Screenshots go to ``$NNAUDIT_SCREENSHOTS`` when set (else the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cdp import Browser, Dashboard, find_chromium
from system import need

CHROMIUM = find_chromium()
pytest.importorskip("websockets", reason="the browser test talks to Chromium through the websockets package "
                    "(pip install -e .[dev])")


@pytest.fixture(autouse=True)
def _chromium() -> None:
    need(None if CHROMIUM is not None else "no Chromium found (looked for chromium, chromium-browser, google-chrome, "
         "chrome on PATH, or $NNAUDIT_CHROMIUM): the dashboard's browser test did not run")

IMG_MD = "![](http://injected.invalid/x.png)"
IMG_HTML = "<img src=x onerror=alert(1)>"
SETTLED = ("!document.querySelector('[data-testid=stSkeleton]') && [...document.images].every(i => i.complete) "
           "&& document.querySelector('[data-testid=stStatusWidget]') === null")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> Path:
    from dashboard_helpers import audit_run

    root = tmp_path_factory.mktemp("browser") / "runs"
    run = audit_run(root / "digits", digits_cnn, kind="image")
    results = json.loads((run / "results.json").read_text())
    names = results["manifest"]["data"]["class_names"]
    names[0], names[1] = IMG_MD, IMG_HTML
    (run / "results.json").write_text(json.dumps(results))
    return root


def _shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("NNAUDIT_SCREENSHOTS") or tmp_path)


def test_dashboard_in_chromium(runs: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with Dashboard(runs) as dashboard, Browser(CHROMIUM, height=1400) as browser:
        dashboard.wait_healthy()
        start = browser.navigate(dashboard.url)
        browser.wait_for("document.body.innerText.includes('Verdict:')", timeout=90)
        first_content = time.monotonic() - start
        browser.wait_for(SETTLED, timeout=60)
        text = browser.text()
        assert "Verdict: NOT GATED" in text
        for label in ("Clean accuracy", "Robust acc. linf eps 0.1", "Findings"):
            assert label in text
        # the charts draw after the rest of the page settled (vega renders asynchronously): wait for one
        browser.wait_for("document.querySelectorAll('[data-testid=stVegaLiteChart]').length >= 1", timeout=60)
        browser.screenshot(_shots(tmp_path) / "dashboard-top.png")

        browser.navigate(dashboard.url + "?run=digits&view=samples")
        browser.wait_for("document.body.innerText.includes('Clean prediction')", timeout=90)
        browser.wait_for(SETTLED + " && document.querySelectorAll('[data-testid=stImage] img').length >= 3",
                         timeout=60)
        text = browser.text()
        for label in ("Attack setting", "Fooled by the attack", "True class", "Clean prediction",
                      "Adversarial prediction", "clean input", "Attributions"):
            assert label in text, label
        images = browser.evaluate("[...document.querySelectorAll('[data-testid=stImage] img')]"
                                  ".map(i => [i.naturalWidth, i.getBoundingClientRect().width])")
        assert len(images) >= 4  # clean (+ adversarial and perturbation where attacked) and one per method
        assert all(natural >= 64 and shown >= 64 for natural, shown in images)  # 8x8 digits shown large
        browser.screenshot(_shots(tmp_path) / "dashboard-explorer.png", height=1800)

        # markup in class names stays text: written out literally, no element made from it, no request to its host
        browser.navigate(dashboard.url + "?run=digits&view=sections")
        browser.wait_for("document.body.innerText.includes('Performance')", timeout=90)
        browser.wait_for(SETTLED, timeout=60)
        browser.evaluate("[...document.querySelectorAll('[data-testid=stExpander] summary')].forEach(s => s.click())")
        browser.drain(2.0)
        assert browser.evaluate("document.querySelectorAll('img[onerror], img[src=x]').length") == 0
        requested = browser.requested_urls()
        assert requested and all(url.startswith(("http://127.0.0.1", "data:", "blob:", "about:"))
                                 for url in requested), [u for u in requested if "127.0.0.1" not in u]
        assert browser.console_errors() == []
    assert first_content < 60  # measured and reported by benchmarks/dashboard.py; here only a sanity bound
