"""The dashboard's waivers: the waived checks (WAIVED, with reason, author and expiry), the waivers not in force and
the ungated findings of a run's verdict, under the verdict line of ``reports.dashboard.page``."""

from __future__ import annotations

from typing import Any

import streamlit as st

from reports.text import escape_markdown


def show_waivers(judged: dict[str, Any]) -> None:
    """The waived checks (WAIVED, with reason, author and expiry), the waivers not in force and the ungated
    findings of the verdict (``reports.headline.verdict_view``)."""
    if judged["waived"]:
        st.dataframe([{"check": c["name"], "status": "WAIVED", "value": c["value_text"] or "",
                       "reason": c["waiver"].get("reason", ""), "by": c["waiver"].get("by", ""),
                       "until": c["waiver"].get("until", "")} for c in judged["waived"]], hide_index=True)
    for w in judged["waivers"]:
        if w.get("state") != "active":
            target = w.get("check") or f"finding {w.get('finding')}"
            st.caption(escape_markdown(f"{str(w.get('state')).upper()} waiver of {target} (by {w.get('by')} until "
                                       f"{w.get('until')}): {w.get('message', '')}"))
    if judged["ungated"]:
        st.caption(escape_markdown(f"{judged['ungated_text']} (no rule or findings limit covers them; "
                                   "`nnaudit gate --strict` fails on them): "
                                   + "; ".join(f"[{f.get('severity')}] {f.get('section', '')}: {f.get('message', '')}"
                                               for f in judged["ungated"])))
