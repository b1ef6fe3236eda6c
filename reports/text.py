"""The one Markdown escaper: text from data, configs and results shown as text, never as markup.

``escape_markdown`` backslash-escapes every ASCII punctuation character (CommonMark allows a backslash
before any of them, and it then stands for itself) and folds whitespace, newlines included, to single
spaces. So emphasis, links, images, code, headings, list markers, table pipes, raw HTML (``<``),
entities (``&``), ``$`` maths and Streamlit's ``:directives[...]`` all show as the characters they are,
on GitHub, in a JUnit-reading CI page and in the dashboard alike: a class named
``![](http://host/x.png)`` never makes a reader's browser fetch from that host. Streamlit renders
Markdown in titles, captions, alerts, widget labels, image captions, radio options and ``st.table``
cells: the dashboard shows such strings with ``st.text``, ``st.code``, ``st.dataframe`` or selectbox
options (plain text), and through ``escape_markdown`` where a Markdown element has to carry one.
``code_span`` shows text literally as inline code inside a table cell. Never imports torch.
"""

from __future__ import annotations

import re
import string
from typing import Any

_ESCAPES = {ord(c): "\\" + c for c in string.punctuation}


def escape_markdown(value: Any) -> str:
    """``value`` as Markdown source that renders exactly as its text, on one line."""
    return " ".join(str(value).split()).translate(_ESCAPES)


def code_span(text: Any) -> str:
    """Text as inline code inside a table cell: literal, whatever backticks it holds (only ``|`` is escaped)."""
    body = " ".join(str(text).replace("|", "\\|").split())
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"
