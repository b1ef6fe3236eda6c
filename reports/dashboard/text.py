"""Strings from data, config and results reach the page as text, never as Markdown or HTML.

Streamlit renders Markdown in titles, captions, alerts, widget labels, image captions, radio
options and ``st.table`` cells. A class named ``![](http://host/x.png)`` would make the
reviewer's browser fetch from that host. The page therefore shows such strings with
``st.text``, ``st.code``, ``st.dataframe`` or selectbox options (plain text), and where a
Markdown-rendering element has to carry one, through ``literal``: every ASCII punctuation
character backslash-escaped (CommonMark escapes), so Markdown, HTML, ``$`` maths and Streamlit's
``:directives[...]`` show as the characters they are.
"""

from __future__ import annotations

import string
from typing import Any

_ESCAPE = {ord(c): "\\" + c for c in string.punctuation}


def literal(value: Any) -> str:
    """``value`` as Markdown source that renders exactly as its text, on one line."""
    text = " ".join(str(value).split())
    return text.translate(_ESCAPE)

