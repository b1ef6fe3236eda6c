"""The report as a reviewer reads it: verdict first, headline, figures drawn in reports/, text never markup.

Built from ``results_factory.review_results()``: a gated run with every figure kind and markup
(``<script>``, ``![](http://host/x.png)``, ``]]>``...) in its title, class, group and feature names.
The golden file holds the report's outline (headings, ids, figure kinds, collapsed drawers); set
``NNAUDIT_UPDATE_GOLDEN=1`` to rewrite it after a deliberate change, and review the diff.
"""

from __future__ import annotations

import base64
import io
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
from results_factory import (
    FEATURE_NAMES,
    GROUP_NAMES,
    INJECTIONS,
    REVIEW_TITLE,
    XSS,
    review_results,
    write_review_run,
)

from audit.decide.gate import evaluate_policy
from audit.policy import parse_policy
from reports import figures
from reports.ci import gate_to_markdown, junit_xml
from reports.html import render_html
from reports.text import code_span, escape_markdown

GOLDEN = Path(__file__).parent / "golden" / "report_outline.txt"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_review_run(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def html(run_dir: Path) -> str:
    return render_html(review_results(), run_dir)


# -- the outline (golden file) ------------------------------------------------------------------


class Outline(HTMLParser):
    """Headings, landmarks, figures, drawers and checks, one line each, indented by section."""

    KEEP: ClassVar[set[str]] = {"h1", "h2", "h3", "section", "figure", "summary", "header", "nav", "footer",
                                "figcaption"}

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._open: list[str] = []
        self._text: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._depth = 1
        if tag in self.KEEP:
            ident = f"#{a['id']}" if a.get("id") and tag in ("section", "header", "nav") else ""
            classes = f".{'.'.join((a.get('class') or '').split())}" if tag in ("section", "figure") else ""
            self._open.append(f"{'  ' * (self._depth if tag != 'section' else 0)}{tag}{ident}{classes}")
            self._text = [] if tag in ("h1", "h2", "h3", "summary", "figcaption") else None
            if self._text is None:
                self.lines.append(self._open.pop())
        elif tag == "span" and a.get("id") == "verdict-label":
            self._open.append("  verdict-label")
            self._text = []
        elif tag == "table" and "tiles" in (a.get("class") or ""):
            self.lines.append("    tiles")
        elif tag == "ul" and a.get("class") == "tree":
            self.lines.append("    tree")
        elif tag == "img" and (a.get("src") or "").startswith("data:image/png;base64,"):
            self.lines.append("    img")

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._text is not None and self._open and tag in ("h1", "h2", "h3", "summary", "figcaption", "span"):
            text = " ".join("".join(self._text).split())
            self.lines.append(f"{self._open.pop()}: {text}")
            self._text = None


def outline(html: str) -> str:
    parser = Outline()
    parser.feed(html)
    lines, out = parser.lines, []
    for line in lines:  # one line per run of equal tiles/images
        if out and line == out[-1].split(" ×")[0] and line.strip() in ("img", "tiles"):
            count = int(out[-1].split(" ×")[1]) + 1 if " ×" in out[-1] else 2
            out[-1] = f"{line} ×{count}"
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_report_outline_matches_the_golden_file(html: str) -> None:
    text = outline(html)
    if os.environ.get("NNAUDIT_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_verdict_then_headline_then_key_findings_then_sections(html: str) -> None:
    order = [html.index(f'id="{name}"') for name in ("verdict", "headline", "key-findings", "section-performance",
                                                      "run-details")]
    assert order == sorted(order)
    verdict = html[html.index('id="verdict"'):html.index('id="headline"')]
    assert 'id="verdict-label">FAIL<' in verdict
    assert "imbalance.balanced_accuracy &gt;= 0.9" in verdict and "value 0.840, needs &gt;= 0.900" in verdict
    headline = html[html.index('id="headline"'):html.index('id="key-findings"')]
    for text in ("Clean accuracy", "0.900", "Balanced accuracy", "0.840", "Worst-case robust accuracy", "0.275",
                 'id="reliability">reliable<', "Worst fairness disparity", "0.720", "[0.610, 0.860]",
                 "Most faithful explanation", ">ig<", "2 medium"):
        assert text in headline, text


# -- figures: drawn in reports/, tiles at least 64 px, the tree as a tree ----------------------------


def test_image_grid_tiles_are_full_resolution_and_captioned(run_dir: Path, html: str) -> None:
    spec = review_results()["sections"]["explanations"]["figures"][0]
    view = figures.image_grid_view(spec, run_dir)
    assert view["tile_px"] >= 64 and view["columns"] == 3 and len(view["rows"]) == 2
    tile = view["rows"][0]["tiles"][0]
    png = base64.b64decode(tile["uri"].split(",", 1)[1])
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    assert image.size == (8, 8)  # the artifact's own pixels, scaled up by the browser, never downsampled
    pixels = image.convert("L").load()
    assert pixels[3, 3] == 255 and pixels[0, 0] == 0  # the bright square of the input tile
    grid = html[html.index('class="tiles"'):]
    grid = grid[: grid.index("</table>")]
    assert grid.count("<img ") == 6 and 'width="72" height="72"' in grid
    assert "class &lt;script&gt;alert(1)&lt;/script&gt;" in grid  # the caption is text


def test_signed_and_overlay_tiles_use_a_diverging_map() -> None:
    import numpy as np

    tiles = np.zeros((1, 3, 1, 2, 2))
    tiles[0, 0] = 0.5
    tiles[0, 1, 0, 0, 0], tiles[0, 1, 0, 1, 1] = 1.0, -1.0
    tiles[0, 2] = tiles[0, 1]
    styles = [["image", "signed", "overlay"]]
    signed = figures.tile_rgb(tiles, styles, 0, 1)
    assert signed[0, 0, 0] > 0.9 and signed[0, 0, 2] < 0.1  # positive: red
    assert signed[1, 1, 2] > 0.9 and signed[1, 1, 0] < 0.1  # negative: blue
    assert np.allclose(signed[0, 1], 1.0, atol=0.01)  # zero: white
    overlay = figures.tile_rgb(tiles, styles, 0, 2)
    assert np.allclose(overlay[0, 1], 0.35 + 0.65 * 0.5)  # no attribution: the input shows through


def test_tree_is_rendered_as_nested_lists(html: str) -> None:
    spec = review_results()["sections"]["explanations"]["figures"][1]
    root = figures.tree_view(spec)
    assert root["condition"] is None and [c["condition"] for c in root["children"]] == [
        f"{FEATURE_NAMES[0]} ≤ 0.500", f"{FEATURE_NAMES[0]} > 0.500"]
    assert [c["leaf"] for c in root["children"][1]["children"]] == [True, True]
    tree = html[html.index('<ul class="tree">'):]
    assert tree.count("<ul>") == 2 and "]]&gt; ≤ 0.500" in tree
    assert "&lt;img src=x onerror=alert(1)&gt; &gt; 0.250" in tree
    with pytest.raises(figures.FigureSpecError, match="no parent reaches"):
        figures.tree_view({"nodes": [*spec["nodes"], {"leaf": True, "label": "x"}]})


@pytest.mark.parametrize("index", [0, 1, 2])
def test_new_figure_kinds_draw_for_the_dashboard(run_dir: Path, index: int) -> None:
    spec = review_results()["sections"]["explanations"]["figures"][index]
    png = figures.figure_png(spec, run_dir)
    assert png.startswith(PNG_MAGIC)
    fig = figures.render_figure(spec, run_dir)
    texts = [t.get_text() for ax in fig.axes for t in (ax.title, *ax.texts)]
    assert not any(t.startswith("cannot draw") for t in texts), texts


def test_robustness_curve_y_axis_is_0_to_1() -> None:
    spec = review_results()["sections"]["robustness"]["figures"][0]
    low, high = figures.render_figure(spec).axes[0].get_ylim()
    assert low <= 0.0 and high >= 1.0 and high - low < 1.1


def test_mathtext_in_data_is_drawn_as_text() -> None:
    spec = {"name": "b", "title": "$x^2$ and $\\frac{", "kind": "bar",
            "series": [{"label": "s", "x": ["$a$"], "y": [1]}]}
    fig = figures.render_figure(spec)
    assert fig.axes[0].get_title(loc="left") == "$x^2$ and $\\frac{"
    assert figures.figure_to_png_bytes(fig).startswith(PNG_MAGIC)  # an unparsable formula does not break it


# -- text from data is text: HTML, Markdown, JUnit ------------------------------------------------


def test_html_shows_injections_as_text(html: str) -> None:
    lower = html.lower()
    assert "<script" not in lower and "onerror=alert" not in lower.replace("onerror=alert(1)&gt;", "")
    assert "<img src=x" not in lower
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    for text in (GROUP_NAMES[0], "![](http://host/x.png)"):  # markdown is not HTML: it stays as characters
        assert text in html
    assert "Review ![](http://host/x.png) &lt;script&gt;alert(1)&lt;/script&gt;" in html


def _gate_report() -> Any:
    data = review_results()
    data["sections"]["imbalance"]["findings"].append(
        {"severity": "high", "message": f"group {GROUP_NAMES[0]} {INJECTIONS['html_image']} {INJECTIONS['cdata_end']}",
         "code": "x"})
    data["sections"]["odd `name` | ![](http://host/y.png)"] = {
        "name": "odd", "plugin": "p", "status": "error", "duration_s": 0.0, "params": {}, "metrics": {},
        "findings": [], "tables": [], "figures": [], "artifacts": {}, "notes": [],
        "error": {"type": "DataError", "message": f"class {XSS} \x1b[31m {INJECTIONS['cdata_end']}"}}
    return evaluate_policy(data, parse_policy(data["manifest"]["config"]["gate"]))


def _unescaped(markdown: str, chars: str) -> list[str]:
    """Markdown-significant characters that are not backslash-escaped, outside code spans."""
    text = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", markdown)  # drop code spans
    return [m.group(0) for m in re.finditer(rf"(?<!\\)[{re.escape(chars)}]", text)]


def test_markdown_summary_shows_injections_as_text() -> None:
    report = _gate_report()
    text = gate_to_markdown(report)
    body = "\n".join(line for line in text.splitlines() if not line.startswith(("|", "## ", "###")))
    body += "\n" + "\n".join(cell for line in text.splitlines() if line.startswith("| ") and "---" not in line
                             for cell in line.split(" | ")[1:])
    assert _unescaped(body.replace("**", ""), "[]!<>`") == []
    outside_code = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text)  # code spans show their content literally
    bare = re.sub(r"\\.", "", outside_code)  # what is left once every backslash escape is taken out
    assert "<script>" not in bare and "<img" not in bare and "![](" not in bare
    assert "``section odd `name` \\| ![](http://host/y.png)``" in text
    assert escape_markdown(REVIEW_TITLE) in text
    assert code_span("a ``b`` c").startswith("```") and code_span("|").replace("\\|", "") == "``"


def test_markdown_escape_round_trips_to_the_same_characters() -> None:
    for value in [*INJECTIONS.values(), *GROUP_NAMES, "a\\*b", "50% of *all*"]:
        escaped = escape_markdown(value)
        assert re.sub(r"\\(.)", r"\1", escaped) == " ".join(value.split())
        assert not re.search(r"[!-/:-@\[-`{-~]", re.sub(r"\\[!-/:-@\[-`{-~]", "", escaped))  # all escaped


def test_junit_is_well_formed_and_holds_the_strings_exactly() -> None:
    report = _gate_report()
    xml = junit_xml(report)
    root = ET.fromstring(xml.encode("utf-8"))  # the ESC byte would make this raise
    messages = [e.get("message") for e in root.iter() if e.get("message")]
    assert any(f"class {XSS} \ufffd[31m ]]>" in (m or "") for m in messages)
    assert any(case.get("name", "").startswith("section odd `name` | ![](http://host/y.png)")
               for case in root.iter("testcase"))
    assert root.find("testsuite/properties/property[@name='run']").get("value") == REVIEW_TITLE  # type: ignore[union-attr]


def test_review_fixture_covers_every_figure_kind_of_the_schema() -> None:
    from results_factory import make_results

    from audit.results import load_schema, validate_results

    data = review_results()
    validate_results(data)
    kinds = {f["kind"] for d in (data, make_results()) for s in d["sections"].values() for f in s["figures"]}
    assert kinds == set(load_schema()["$defs"]["figure"]["properties"]["kind"]["enum"])
