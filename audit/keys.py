"""The one metric-key builder and its parser: every dotted metric name nnaudit writes or reads.

A metric key is dot-joined segments, first the section, last the measured quantity; a segment is a
name (``worst_case``, ``linf``) or a qualifier ``name=value`` (``eps=0.1``, ``severity=3``,
``group=female``)::

    robustness.worst_case.linf.eps=0.1.robust_accuracy
    shift.gaussian_noise.severity=3.accuracy
    fairness.sex.norm=linf.eps=0.1.group=female.robust_accuracy
    explanations.integrated_gradients.faithfulness_rank

Sections build their keys with ``metric_key`` (relative to the section: ``SectionResult.metric``
prefixes the section's name) and ``qualifier``; readers (the headline, the store, the shift
section's mCE) take them apart with ``parse_metric_key`` instead of regular expressions. Numbers in
qualifiers are spelled by the one number formatter's ``general`` style (``%g``: ``eps=0.1``,
``eps=0.00392157``), so a key is the same whichever code wrote it. Never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from audit.numbers import format_number

SEPARATOR = "."
QUALIFIER = "="

Part = str | tuple[str, object]


def qualifier(name: str, value: object) -> str:
    """``name=value``: a float as ``%g`` (``eps=0.1``), anything else (an int, a name) as its text."""
    if not name or SEPARATOR in name or QUALIFIER in name:
        raise ValueError(f"a qualifier name must be a non-empty word without '.' or '=', got {name!r}")
    if isinstance(value, Real) and not isinstance(value, (bool, int)):
        text = format_number(float(value), style="general")
    else:
        text = str(value)
    if not text:
        raise ValueError(f"qualifier {name!r} needs a non-empty value")
    return f"{name}{QUALIFIER}{text}"


def metric_key(*parts: Part) -> str:
    """The dotted key of ``parts``: a string is one or more segments as they are (an earlier key's
    prefix may be passed whole), a ``(name, value)`` pair becomes the qualifier ``name=value``.

    >>> metric_key("worst_case", "linf", ("eps", 0.1), "robust_accuracy")
    'worst_case.linf.eps=0.1.robust_accuracy'
    """
    if not parts:
        raise ValueError("metric_key needs at least one part")
    texts = []
    for part in parts:
        text = qualifier(*part) if isinstance(part, tuple) else part
        if not isinstance(text, str) or not text or text.startswith(SEPARATOR) or text.endswith(SEPARATOR):
            raise ValueError(f"empty or dangling metric-key segment {part!r} in {parts!r}")
        texts.append(text)
    return SEPARATOR.join(texts)


@dataclass(frozen=True)
class MetricKey:
    """A parsed metric key: its segments in order (a qualifier keeps its ``name=value`` text)."""

    key: str
    segments: tuple[str, ...]

    @property
    def section(self) -> str:
        return self.segments[0]

    @property
    def name(self) -> str:
        """The measured quantity: the last segment."""
        return self.segments[-1]

    @property
    def path(self) -> tuple[str, ...]:
        """The segments between the section and the measured quantity."""
        return self.segments[1:-1]

    @property
    def qualifiers(self) -> dict[str, str]:
        """``name -> value`` (as written) of every qualifier segment."""
        out = {}
        for segment in self.segments:
            name, sep, value = segment.partition(QUALIFIER)
            if sep:
                out[name] = value
        return out

    def matches(self, *pattern: str | None) -> dict[str, str] | None:
        """Match the segments against ``pattern`` segment by segment: a literal matches itself, ``None``
        matches any plain segment, ``"eps="`` matches any ``eps=<value>``. Returns the values of the
        wildcards and qualifiers by position name (``"1"``, ``"eps"``), or None when it does not match.

        >>> parse_metric_key("robustness.worst_case.linf.eps=0.1.robust_accuracy").matches(
        ...     "robustness", "worst_case", None, "eps=", "robust_accuracy")
        {'2': 'linf', 'eps': '0.1'}
        """
        if len(pattern) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for i, (want, segment) in enumerate(zip(pattern, self.segments, strict=True)):
            name, sep, value = segment.partition(QUALIFIER)
            if want is None:
                if sep:
                    return None
                found[str(i)] = segment
            elif want.endswith(QUALIFIER):
                if not sep or name != want[:-1]:
                    return None
                found[name] = value
            elif want != segment:
                return None
        return found


def _continues_number(previous: str, piece: str) -> bool:
    """Whether ``piece`` is the fractional part of the number the qualifier ``previous`` ends with."""
    _, sep, value = previous.partition(QUALIFIER)
    if not sep or not piece or QUALIFIER in piece or not piece[0].isdigit():
        return False
    try:
        return not math.isnan(float(f"{value}{SEPARATOR}{piece}")) and SEPARATOR not in value
    except ValueError:
        return False


def parse_metric_key(key: str) -> MetricKey:
    """``key``'s segments; a qualifier's decimal number (``eps=0.1``) stays one segment."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a metric key is a non-empty string, got {key!r}")
    segments: list[str] = []
    for piece in key.split(SEPARATOR):
        if segments and _continues_number(segments[-1], piece):
            segments[-1] = f"{segments[-1]}{SEPARATOR}{piece}"
        else:
            segments.append(piece)
    return MetricKey(key, tuple(segments))
