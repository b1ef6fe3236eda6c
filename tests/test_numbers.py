"""audit.numbers.format_number: the one number formatter, each style as readers have always seen it."""

from __future__ import annotations

import math

import pytest

from audit.numbers import format_number

NAN = float("nan")


@pytest.mark.parametrize(("value", "expected"), [
    (1.0, {"exact": "1", "plain": "1", "short": "1.00", "fixed": "1", "general": "1"}),
    (0.123456789, {"exact": "0.123456789", "plain": "0.1235", "short": "0.123", "fixed": "0.123",
                   "general": "0.123457"}),
    (1234567.0, {"exact": "1234567", "plain": "1234567", "short": "1234567", "fixed": "1.23457e+06",
                 "general": "1.23457e+06"}),
    (math.inf, {"exact": "Infinity", "plain": "Infinity", "short": "∞", "fixed": "inf", "general": "inf"}),
    (-math.inf, {"exact": "-Infinity", "plain": "-Infinity", "short": "-∞", "fixed": "-inf", "general": "-inf"}),
    (None, {"exact": "null", "plain": "n/a", "short": "—", "fixed": "n/a", "general": "null"}),
    (NAN, {"exact": "null", "plain": "n/a", "short": "—", "fixed": "n/a", "general": "null"}),
    (0.0, {"exact": "0", "plain": "0", "short": "0", "fixed": "0", "general": "0"}),
    (12345678.9, {"exact": "12345678.9", "plain": "1.235e+07", "short": "1.2e+07", "fixed": "12345678.900",
                  "general": "1.23457e+07"}),
    (1e16, {"exact": "1e+16", "plain": "1.000e+16", "short": "1.0e+16", "fixed": "1e+16", "general": "1e+16"}),
    (0.99951, {"exact": "0.99951", "plain": "0.9995", "short": "1.00", "fixed": "1.000", "general": "0.99951"}),
    (123456.7, {"exact": "123456.7", "plain": "123457", "short": "123457", "fixed": "123456.700",
                "general": "123457"}),
    (0.0005, {"exact": "0.0005", "plain": "0.0005", "short": "0.000500", "fixed": "0.001", "general": "0.0005"}),
    (2.5e-5, {"exact": "2.5e-05", "plain": "2.500e-05", "short": "2.5e-05", "fixed": "0.000", "general": "2.5e-05"}),
    (1797, {"exact": "1797", "plain": "1797", "short": "1797", "fixed": "1797", "general": "1797"}),
    (1, {"exact": "1", "plain": "1", "short": "1", "fixed": "1", "general": "1"}),  # an int is never "1.00"
])
def test_each_style(value: float | None, expected: dict[str, str]) -> None:
    got = {style: format_number(value, style=style) for style in expected}  # type: ignore[arg-type]
    assert got == expected


@pytest.mark.parametrize(("value", "style", "expected"), [
    (0.05, "plain", "+0.05"), (-0.05, "plain", "-0.05"), (0.0, "plain", "0"), (math.inf, "plain", "+Infinity"),
    (-math.inf, "plain", "-Infinity"), (None, "plain", "n/a"), (3.0, "plain", "+3"),
    (0.5, "short", "+0.500"), (math.inf, "short", "+∞"), (0.0, "short", "0"), (None, "short", "—"),
    (0.0, "fixed", "+0"), (-0.0375, "fixed", "-0.037"), (2.0, "fixed", "+2"), (2, "fixed", "+2"),
    (0.25, "exact", "+0.25"), (0.1, "general", "+0.1"),
])
def test_signed(value: float | None, style: str, expected: str) -> None:
    assert format_number(value, style=style, signed=True) == expected  # type: ignore[arg-type]


def test_unknown_style_names_the_styles() -> None:
    with pytest.raises(ValueError, match="exact, plain, short, fixed, general"):
        format_number(1.0, style="pretty")  # type: ignore[arg-type]
