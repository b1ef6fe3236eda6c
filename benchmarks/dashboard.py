"""Time to first content of the dashboard in headless Chromium, against a bare Streamlit page served the same way.

How it measures: ``nnaudit dashboard RUNS`` runs on a free localhost port; headless Chromium (DevTools
protocol, tests/cdp.py) sends ``Page.navigate`` to ``/?run=LABEL`` and polls the page text every 50 ms;
the time to first content is from sending ``Page.navigate`` to the first poll where the page shows
``Verdict:`` (the verdict line, the first thing the run page renders after its title). The explorer
time runs to the sample explorer settled (``?view=samples``: text "Clean prediction" shown, every image
loaded, no skeleton, no running indicator). The first navigation of each run is "cold" (new browser
profile, the server's caches empty for that run); the median of the next ``--repeats`` is "warm".
The baseline is a one-line Streamlit script (``st.text("Verdict: ...")``) behind the same server
settings, so the ratio says what the dashboard adds over Streamlit itself on this machine.

Usage: ``python benchmarks/dashboard.py RUNS_DIR [--repeats 5] [--shots /tmp/dashboard-shots]``
(``nnaudit demo --out RUNS_DIR`` first). Screenshots of each run's top and sample explorer go to ``--shots``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cdp import Browser, Dashboard, find_chromium

from audit.runs import find_runs

FIRST = "document.body.innerText.includes('Verdict:')"
SETTLED = ("document.body.innerText.includes('Clean prediction') && "
           "!document.querySelector('[data-testid=stSkeleton]') && [...document.images].every(i => i.complete) && "
           "document.querySelector('[data-testid=stStatusWidget]') === null")


def _time(browser: Browser, url: str, expression: str) -> float:
    browser.navigate("about:blank")
    start = browser.navigate(url)
    browser.wait_for(expression, timeout=120)
    return time.monotonic() - start


def _series(browser: Browser, url: str, expression: str, repeats: int) -> tuple[float, float]:
    cold = _time(browser, url, expression)
    warm = statistics.median(_time(browser, url, expression) for _ in range(repeats))
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shots", type=Path, default=Path("/tmp/dashboard-shots"))
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found: nothing measured", file=sys.stderr)
        return 2
    labels = [run.relative_to(args.runs).as_posix() for run in find_runs(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "baseline.py"
        script.write_text('import streamlit as st\n\nst.text("Verdict: baseline page")\n', encoding="utf-8")
        with Dashboard(args.runs, script=script) as bare, Browser(chromium) as browser:
            bare.wait_healthy()
            base_cold, base_warm = _series(browser, bare.url, FIRST, args.repeats)
    rows = [("bare Streamlit page (baseline)", base_cold, base_warm)]
    with Dashboard(args.runs) as dashboard, Browser(chromium, height=1400) as browser:
        dashboard.wait_healthy()
        for label in labels:
            url = f"{dashboard.url}?run={label}"
            cold, warm = _series(browser, url, FIRST, args.repeats)
            rows.append((f"{label}: first content (verdict)", cold, warm))
            browser.wait_for(SETTLED.replace("Clean prediction", "Verdict:"), timeout=120)
            browser.screenshot(args.shots / f"{label.replace('/', '_')}-top.png", height=1400)
            cold, warm = _series(browser, url + "&view=samples", SETTLED, args.repeats)
            rows.append((f"{label}: sample explorer settled", cold, warm))
            browser.screenshot(args.shots / f"{label.replace('/', '_')}-explorer.png", height=1800)
        errors = browser.console_errors()
    print(f"{'page':<48} {'cold s':>8} {'warm s':>8} {'warm / baseline':>16}")
    for name, cold, warm in rows:
        print(f"{name:<48} {cold:8.2f} {warm:8.2f} {warm / base_warm:15.1f}x")
    print(f"console errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors))
    print(f"screenshots: {args.shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
