"""The model card (``nnaudit card``, reports/card.py) of the real demo runs: Mitchell et al.'s sections, the numbers
of results.json, "not provided" for narrative the config leaves out, text from configs kept text, the verdict with
waivers and ungated findings when the record has them, and the HTML card in headless Chromium.

The demo is the session's ``demo_dir`` (``NNAUDIT_DEMO_DIR=DIR`` names a finished one).
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import markupsafe
import pytest

from audit.cli import main
from audit.config import parse_config
from audit.errors import ConfigError
from audit.results import decode_number
from reports.card import NOT_PROVIDED, SECTION_TITLES, card_view, render_card
from reports.text import escape_markdown
from reports.views import format_value

DEMO_RUNS = ("digits-cnn", "resume-mlp")
HOSTILE = "<script>alert('x')</script> **bold** [link](http://evil.example/x.png) | pipe & `code`"


def _results(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "results.json").read_text(encoding="utf-8"))
    return data


def _md_number(results: dict[str, Any], section: str, metric: str) -> str:
    return escape_markdown(format_value(decode_number(results["sections"][section]["metrics"][metric])))


@pytest.mark.parametrize("name", DEMO_RUNS)
def test_demo_card_has_every_section_and_the_real_numbers(demo_dir: Path, name: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = demo_dir / name
    out = tmp_path / f"{name}.md"
    assert main(["card", str(run), "--out", str(out)]) == 0
    assert f"model card written to {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    results = _results(run)
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == [title for _, title in SECTION_TITLES]
    # the headline numbers, as results.json has them
    assert f"| Clean accuracy | {_md_number(results, 'performance', 'performance.accuracy')} |" in text
    worst = [m for m in results["sections"]["robustness"]["metrics"]
             if m.startswith("robustness.worst_case.") and m.endswith(".robust_accuracy")]
    assert worst
    for metric in worst:
        norm, eps = metric.removeprefix("robustness.worst_case.").removesuffix(".robust_accuracy").split(".eps=")
        assert f"| {norm} | {escape_markdown(eps)} | {_md_number(results, 'robustness', metric)} |" in text
    # explanation faithfulness: the rank-1 methods with their interval
    ranks = {m.split(".")[1]: decode_number(v) for m, v in results["sections"]["explanations"]["metrics"].items()
             if m.endswith(".faithfulness_rank")}
    for method in [m for m, r in ranks.items() if r == 1]:
        assert f"| 1 | {escape_markdown(method)} |" in text
    # the verdict the run carries
    assert f"**Verdict:** {results['verdict']['status'].upper()}" in text
    n_checks = len(results["verdict"]["checks"])
    assert f"of {n_checks} checks passed" in text
    # the demo configs carry no 'card:' block: every narrative field says so
    for label in ("Description", "Owners", "License", "Primary intended uses", "Out-of-scope uses",
                  "Ethical considerations", "Caveats and recommendations", "Relevant factors"):
        assert f"- **{label}:** _{NOT_PROVIDED}_" in text
    # every high or critical finding is named under caveats
    serious = [f for s in results["sections"].values() for f in s["findings"] if f["severity"] in ("high", "critical")]
    for finding in serious:
        assert escape_markdown(finding["message"]) in text
    if name == "digits-cnn":  # defenses, attacked naively and adaptively
        for row in next(t for t in results["sections"]["defenses"]["tables"] if t["name"] == "summary")["rows"]:
            assert f"| {escape_markdown(row[0])} |" in text and escape_markdown(row[3]) in text
    else:  # fairness by group, with the intervals of results.json
        table = next(t for t in results["sections"]["fairness"]["tables"] if t["name"] == "groups_gender")
        columns = table["columns"]
        for row in table["rows"]:
            cell = dict(zip(columns, row, strict=True))
            expected = (f"{format_value(cell['accuracy'])} [{format_value(cell['accuracy_ci_low'])}, "
                        f"{format_value(cell['accuracy_ci_high'])}]")
            assert f"| {escape_markdown(cell['group'])} | {cell['count']} | {escape_markdown(expected)} |" in text
        assert "Groups audited\\: ethnicity\\, gender" in text


def test_narrative_from_the_config_stays_text(demo_dir: Path) -> None:
    results = _results(demo_dir / "resume-mlp")
    results["manifest"]["config"]["card"] = {"intended_use": HOSTILE, "owners": ["ML team <ml@example.org>"],
                                             "caveats": "Retrain\nyearly."}
    results["manifest"]["title"] = HOSTILE
    md = render_card(results, fmt="md")
    assert f"- **Primary intended uses:** {escape_markdown(HOSTILE)}" in md
    assert f"- **Owners:** {escape_markdown('ML team <ml@example.org>')}" in md
    assert "- **Caveats and recommendations:** Retrain yearly\\." in md
    assert "<script>" not in md and "](http" not in md and "**bold**" not in md
    assert f"- **Out-of-scope uses:** _{NOT_PROVIDED}_" in md
    page = render_card(results, fmt="html")
    assert str(markupsafe.escape(HOSTILE)) in page  # as jinja2's autoescaping writes it
    assert "<script>" not in page
    assert "ml@example.org&gt;" in page


def test_waivers_and_ungated_findings_when_the_record_has_them(demo_dir: Path) -> None:
    """The waiver fields the gate will store (a waived check, ``waivers``, ``ungated_findings``) are shown when
    present; a record without them reads as before."""
    results = _results(demo_dir / "digits-cnn")
    record = copy.deepcopy(results["verdict"])
    record["checks"][0]["status"] = "waived"
    record["checks"][0]["waiver"] = {"reason": "known gap, fix planned", "by": "alice", "until": "2027-03-31"}
    record["waivers"] = [{"check": "imbalance.ece <= 0.5", "reason": "old", "by": "bob", "until": "2027-01-01",
                          "state": "stale"}]
    record["ungated_findings"] = {"critical": 0, "high": 3}
    results["verdict"] = record
    view = card_view(results)
    verdict = view["verdict"]
    assert "1 waived" in verdict["summary"] and "3 high findings not gated" in verdict["summary"]
    assert [(w["check"], w["state"]) for w in verdict["waivers"]] == [(record["checks"][0]["name"], "active"),
                                                                        ("imbalance.ece <= 0.5", "stale")]
    md = render_card(results, fmt="md")
    assert "**Waivers in force**" in md and "known gap\\, fix planned" in md and "2027\\-03\\-31" in md
    assert "Not covered by the gate policy\\: 3 high finding\\(s\\)" in md
    plain = _results(demo_dir / "digits-cnn")
    # the demo's own record: no waivers; its ungated findings exactly as the stored verdict counts them
    assert card_view(plain)["verdict"]["waivers"] == []
    counted = {severity: n for severity, n in plain["verdict"]["ungated_findings"].items() if n}
    assert counted and card_view(plain)["verdict"]["ungated"] == counted


def test_card_config_errors_name_the_key() -> None:
    base = {"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"}}
    assert parse_config({**base, "card": {"intended_use": "triage"}}).card is not None
    for card, key in (({"intended_usage": "x"}, "card.intended_usage"), ({"caveats": "  "}, "card.caveats"),
                      ({"owners": ["a", ""]}, "card.owners"), ({"license": 3}, "card.license")):
        with pytest.raises(ConfigError) as err:
            parse_config({**base, "card": card})
        assert f"'{key}'" in str(err.value)


def test_card_cli_refuses_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["card", str(tmp_path / "nothing")]) == 2
    assert "no results file" in capsys.readouterr().err


# -- the HTML card in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from cdp import Browser, chromium_missing
    from system import need

    need(None if chromium_missing() is None else f"browser test: {chromium_missing()}")
    with Browser(width=1280, height=900) as page:
        yield page


def _serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("name", DEMO_RUNS)
def test_html_card_in_a_browser(demo_dir: Path, name: str, tmp_path: Path, browser: Any) -> None:
    out = tmp_path / "card.html"
    assert main(["card", str(demo_dir / name), "--format", "html", "--out", str(out)]) == 0
    results = _results(demo_dir / name)
    server, url = _serve(tmp_path)
    try:
        browser.clear_events()
        browser.goto(f"{url}/card.html")
        headings = browser.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent.trim())")
        assert headings == [title for _, title in SECTION_TITLES]
        visible = browser.evaluate("Array.from(document.querySelectorAll('h2')).every(h => h.offsetHeight > 0)")
        assert visible
        verdict = browser.evaluate("document.getElementById('card-verdict').textContent.trim()")
        assert verdict.startswith(results["verdict"]["status"].upper())
        cells = browser.evaluate("Array.from(document.querySelectorAll('#quantitative-analyses td'))"
                                 ".map(td => td.textContent.trim())")
        accuracy = format_value(decode_number(results["sections"]["performance"]["metrics"]["performance.accuracy"]))
        assert accuracy in cells
        not_provided = browser.evaluate("document.querySelectorAll('dd.np').length")
        assert not_provided >= 8
        assert browser.console_errors() == []
        assert all(u.startswith(url) or u.startswith("data:") for u in browser.requested_urls())
    finally:
        server.shutdown()
        server.server_close()
