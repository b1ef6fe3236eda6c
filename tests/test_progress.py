"""The one progress reporter: log lines off a terminal (CI), a tqdm bar on one, silence with NNAUDIT_PROGRESS=0."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from audit.context import PROGRESS_ENV, PROGRESS_INTERVAL_ENV, progress, progress_mode, progress_scope

LINE = re.compile(r"^(?P<chain>.+?) \((?P<pct>\d+)%, \d+ s(, about [^)]+ left)?\)$")


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Messages the ``nnaudit`` logger emits (it may not propagate once the CLI configured it)."""
    logger = logging.getLogger("nnaudit")
    logger.addHandler(caplog.handler)
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # caplog's handler is attached here: once per record
    caplog.clear()
    out: list[str] = []
    try:
        yield out
    finally:
        out.extend(r.getMessage() for r in caplog.records)
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


@pytest.fixture
def log_mode(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv(PROGRESS_ENV, "log")
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "3600")  # only the tenths: no line is due to the clock
    return monkeypatch


def _chains(messages: list[str]) -> list[tuple[str, int]]:
    out = []
    for message in messages:
        match = LINE.match(message)
        assert match is not None, message
        out.append((match["chain"], int(match["pct"])))
    return out


@pytest.mark.parametrize("n", [10, 100, 37])
def test_one_line_per_tenth_off_a_terminal(log_mode: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                           lines: list[str], n: int) -> None:
    assert list(progress(range(n), desc="samples")) == list(range(n))
    # one line at each tenth, naming the first step that reached it
    steps = [-(-k * n // 10) for k in range(1, 11)]
    assert _chains(_messages(caplog)) == [(f"samples {step}/{n}", 100 * step // n) for step in steps]


def test_nested_loops_read_as_one_line(log_mode: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                       lines: list[str]) -> None:
    """Per attack, then per batch: a line names both, and the tenths count the inner loop's progress."""
    with progress_scope("[2/3] robustness"):
        for attack in progress(["fgsm", "pgd"], desc="attacks"):
            for _ in progress(range(5), desc=f"{attack} batches"):
                pass
    assert _chains(_messages(caplog)) == [
        ("[2/3] robustness > attacks 0/2 > fgsm batches 1/5", 10),
        ("[2/3] robustness > attacks 0/2 > fgsm batches 2/5", 20),
        ("[2/3] robustness > attacks 0/2 > fgsm batches 3/5", 30),
        ("[2/3] robustness > attacks 0/2 > fgsm batches 4/5", 40),
        ("[2/3] robustness > attacks 0/2 > fgsm batches 5/5", 50),
        ("[2/3] robustness > attacks 1/2 > pgd batches 1/5", 60),
        ("[2/3] robustness > attacks 1/2 > pgd batches 2/5", 70),
        ("[2/3] robustness > attacks 1/2 > pgd batches 3/5", 80),
        ("[2/3] robustness > attacks 1/2 > pgd batches 4/5", 90),
        ("[2/3] robustness > attacks 1/2 > pgd batches 5/5", 100),
    ]


def test_the_interval_adds_lines(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                 lines: list[str]) -> None:
    """With NNAUDIT_PROGRESS_INTERVAL=0 every step is due: a long loop without tenths still reports."""
    monkeypatch.setenv(PROGRESS_ENV, "log")
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    for _ in progress(iter(range(3)), desc="unknown length"):  # no len(): no percentages
        pass
    assert _messages(caplog) == ["unknown length 1", "unknown length 2", "unknown length 3"]


def test_silent_with_progress_0(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                capsys: pytest.CaptureFixture[str], lines: list[str]) -> None:
    monkeypatch.setenv(PROGRESS_ENV, "0")
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    assert list(progress(range(5), desc="quiet")) == list(range(5))
    assert _messages(caplog) == []
    assert capsys.readouterr().err == ""


def test_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                           capsys: pytest.CaptureFixture[str], lines: list[str]) -> None:
    monkeypatch.setenv(PROGRESS_ENV, "bar")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    for _ in progress(range(2), desc="outer"):
        for _ in progress(range(3), desc="inner"):
            pass
    err = capsys.readouterr().err
    assert "outer" in err and "inner" in err and "2/2" in err
    assert _messages(caplog) == []  # a bar, not log lines


def test_auto_mode_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", Stream(True))
    assert progress_mode() == "bar"
    monkeypatch.setattr("sys.stderr", Stream(False))
    assert progress_mode() == "log"
    monkeypatch.setenv(PROGRESS_ENV, "off")
    assert progress_mode() == "off"


def test_a_loop_left_early_leaves_no_trace(log_mode: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                           lines: list[str]) -> None:
    for i in progress(range(10), desc="left"):
        if i == 2:
            break
    caplog.clear()
    for _ in progress(range(10), desc="next"):
        pass
    assert all(m.startswith("next ") for m in _messages(caplog)), _messages(caplog)
