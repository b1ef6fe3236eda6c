"""System packages some tests need (Debian's chromium, dataset-fashion-mnist, postgresql, wordnet-base).

Without one, those tests skip and say which package to install, so a developer's machine without them still
passes. CI sets ``NNAUDIT_REQUIRE_SYSTEM=1`` (``.ci/run``): then a missing package FAILS the tests that need it,
so a failed install can never leave CI green with those tests silently skipped.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REQUIRE_ENV = "NNAUDIT_REQUIRE_SYSTEM"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def need(missing: str | None) -> None:
    """Nothing when ``missing`` is None; else skip with the reason, or fail when the environment requires it."""
    if missing is None:
        return
    if required():
        pytest.fail(f"{missing}, and {REQUIRE_ENV}=1 requires it")
    pytest.skip(missing)


def fashion_mnist_missing() -> str | None:
    if (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        return None
    return f"Fashion-MNIST IDX files not installed at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)"


def import_or_fail(modname: str, minversion: str | None = None, reason: str | None = None, **_: Any) -> ModuleType:
    """``pytest.importorskip`` where the environment requires every optional install: a missing package is an
    ImportError that fails the test (conftest.py puts this in place of ``pytest.importorskip`` under
    ``NNAUDIT_REQUIRE_SYSTEM=1``), so an optional Python extra that failed to install cannot leave CI green
    with its tests skipped."""
    return importlib.import_module(modname)
