"""The one number formatter: every number nnaudit writes as text goes through ``format_number``.

Decisions write numbers into their messages (and may not import ``reports/``), reports show them in
tables and cards, sections spell eps in metric keys: so the formatter lives in the engine, one
function with a ``style`` per form a reader sees::

    style    for                                       1.0    0.123456789  1234567.0    inf       None
    exact    gate messages, rules, stored verdicts     1      0.123456789  1234567      Infinity  null
    plain    compare messages and its terminal table   1      0.1235       1234567      Infinity  n/a
    short    report, dashboard, summaries (display)    1.00   0.123        1234567      ∞         —
    fixed    the hardening before/after table          1      0.123        1.23457e+06  inf       n/a
    general  eps in metric keys and labels (eps=0.1)   1      0.123457     1.23457e+06  inf       null

- ``exact``: whole numbers below 1e15 as integers, else 10 significant digits; NaN reads ``null``
  as results.json stores it.
- ``plain``: up to 4 significant digits in plain decimals for 1e-4 <= |x| < 1e6 (trailing zeros
  dropped), ``1.235e+07`` beyond; NaN reads ``n/a``.
- ``short``: 3 significant digits in plain decimals for 1e-4 <= |x| < 1e6 (``0.963``, ``0.0500``,
  ``12.3``) and whole units from 1000 up (``123457``); whole numbers from 2 up as integers
  (counts, not ratios); 2 significant digits in scientific notation beyond (``1.1e-16``); a Python
  ``int`` as it is; NaN reads ``—``.
- ``fixed``: 3 decimals for fractions, whole floats as ``%g``, a Python ``int`` as it is; with
  ``signed`` the sign of zero shows too (``+0``).
- ``general``: Python's ``%g`` (6 significant digits).

``signed`` puts ``+`` before a positive number (and before ``Infinity``/``∞``) so that a delta reads
as one. Never imports torch.
"""

from __future__ import annotations

import math
from typing import Literal

NumberStyle = Literal["exact", "plain", "short", "fixed", "general"]
STYLES: tuple[str, ...] = ("exact", "plain", "short", "fixed", "general")
MISSING_TEXT = "—"  # short style: null / NaN
SHORT_DIGITS = 3  # significant digits of the short style
_NOT_A_NUMBER = {"exact": "null", "plain": "n/a", "short": MISSING_TEXT, "fixed": "n/a", "general": "null"}


def format_number(value: float | int | None, *, style: NumberStyle = "exact", signed: bool = False) -> str:
    """``value`` as text in ``style`` (see the module docstring); None and NaN as that style's "no number"."""
    if style not in _NOT_A_NUMBER:
        raise ValueError(f"unknown number style {style!r}; use one of {', '.join(STYLES)}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NOT_A_NUMBER[style]
    if style == "fixed":
        return _fixed(value, signed)
    if style == "general":
        return f"{value:+g}" if signed else f"{value:g}"
    sign = "+" if signed and value > 0 else ""
    if math.isinf(value):
        if style == "short":
            return sign + ("∞" if value > 0 else "-∞")
        return sign + ("Infinity" if value > 0 else "-Infinity")
    if style == "exact":
        return sign + _exact(value)
    if style == "plain":
        return sign + _plain(value)
    return sign + (str(value) if isinstance(value, int) else _short(float(value)))


def _exact(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def _plain(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if float(value).is_integer() and magnitude < 1e15:
        return str(int(value))
    if 1e-4 <= magnitude < 1e6:
        decimals = max(0, 3 - math.floor(math.log10(magnitude)))
        return f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return f"{value:.3e}"


def _short(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if value.is_integer() and 2 <= magnitude < 1e15:  # counts, not ratios
        return str(int(value))
    if 1e-4 <= magnitude < 1e6:
        if magnitude >= 10 ** SHORT_DIGITS:
            return f"{value:.0f}"  # 123457, not 123000: whole units are never hidden
        rounded = float(f"{value:.{SHORT_DIGITS}g}")  # 0.99951 -> 1.0: digits counted after rounding
        exponent = math.floor(math.log10(abs(rounded))) if rounded else 0
        decimals = max(0, SHORT_DIGITS - 1 - exponent)
        return f"{rounded:.{decimals}f}"
    return f"{value:.1e}"


def _fixed(value: float | int, signed: bool) -> str:
    sign = "+" if signed else ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:{sign}.3f}"
    return f"{value:{sign}g}" if isinstance(value, float) else (f"{value:+d}" if signed else str(value))
