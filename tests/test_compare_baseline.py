"""``nnaudit compare --baseline REF CANDIDATE``: the base run resolved from the results store (latest-pass:NAME,
latest:NAME, a run id), from --store, $NNAUDIT_STORE or the candidate's config ``store:``, on real digits runs
registered in SQLite and in a real PostgreSQL server; a reference that resolves to no run is a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from store_helpers import run_config, store_for, write_config

from audit.cli import main
from audit.engine.store import open_store
from audit.results import load_results

PASS_GATE = {"rules": ["performance.accuracy >= 0.5"]}
FAIL_GATE = {"rules": ["performance.accuracy <= 0.01"]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> Path:
    import torch

    path = tmp_path_factory.mktemp("weights") / "cnn.pt"
    torch.save(digits_cnn.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> list[Path]:
    """Three real runs of digits-cnn, oldest first: seed 0 (verdict pass), seed 1 (verdict fail), seed 2 (the
    candidate, not registered)."""
    root = tmp_path_factory.mktemp("baseline")
    plan = [(0, PASS_GATE), (1, FAIL_GATE), (2, PASS_GATE)]
    return [run_config(write_config(root / f"cfg{seed}", weights, seed=seed, gate=gate), root / f"run{seed}")
            for seed, gate in plan]


def _register(url: str, runs: list[Path]) -> None:
    with open_store(url) as store:
        for run in runs:
            store.register(run)


def _compare(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args, "--resamples", "200"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_baseline_latest_pass_equals_comparing_the_directories(backend: str, runs: list[Path], tmp_path: Path,
                                                                request: pytest.FixtureRequest,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    url = store_for(backend, tmp_path, request, monkeypatch)
    _register(url, runs[:2])
    code, out, _ = _compare(capsys, "--baseline", "latest-pass:digits-cnn", str(runs[2]), "--store", url)
    first, _, rest = out.partition("\n")
    assert first.startswith(f"nnaudit compare: baseline latest-pass:digits-cnn is {runs[0].resolve()} (store ")
    direct_code, direct, _ = _compare(capsys, str(runs[0].resolve()), str(runs[2]))
    assert (code, rest) == (direct_code, direct)  # the run whose verdict passed, not the newer failing one
    code, out, _ = _compare(capsys, "--baseline", "latest:digits-cnn", str(runs[2]), "--store", url)
    assert out.startswith(f"nnaudit compare: baseline latest:digits-cnn is {runs[1].resolve()}")
    run_id = load_results(runs[1])["manifest"]["run_id"]
    code, out, _ = _compare(capsys, "--baseline", run_id[:10], str(runs[2]), "--store", url)
    assert out.startswith(f"nnaudit compare: baseline {run_id[:10]} is {runs[1].resolve()}")


def test_baseline_store_from_the_environment_and_the_candidates_config(runs: list[Path], weights: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "env.db")
    _register(url, runs[:1])
    monkeypatch.setenv("NNAUDIT_STORE", url)
    _, out, err = _compare(capsys, "--baseline", "latest-pass:digits-cnn", str(runs[2]))
    assert "error" not in err and out.startswith(f"nnaudit compare: baseline latest-pass:digits-cnn is "
                                                 f"{runs[0].resolve()}")
    monkeypatch.delenv("NNAUDIT_STORE")
    # the candidate's own config names the store (a path relative to the config file)
    folder = tmp_path / "withstore"
    config = write_config(folder, weights, seed=3, store="team.db")
    _register(str(folder / "team.db"), runs[1:2])
    candidate = run_config(config, tmp_path / "cand")
    _, out, err = _compare(capsys, "--baseline", "latest:digits-cnn", str(candidate))
    assert out.startswith(f"nnaudit compare: baseline latest:digits-cnn is {runs[1].resolve()}"), err


@pytest.mark.parametrize(("ref", "fragment"), [
    ("latest-pass:nope", "'latest-pass:nope' resolves to no run"),
    ("latest-pass:digits-cnn", "no run of model 'digits-cnn' whose verdict is pass"),
    ("f" * 32, "no run with this id"),
    ("newest:digits-cnn", "is not a run reference"),
])
def test_a_baseline_that_resolves_to_no_run_is_a_clear_error(ref: str, fragment: str, runs: list[Path],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    url = str(tmp_path / "store.db")
    _register(url, runs[1:2])  # only the failing run
    code, out, err = _compare(capsys, "--baseline", ref, str(runs[2]), "--store", url)
    assert code == 2 and out == ""
    assert err.startswith("nnaudit: error: ") and fragment in err, err


def test_baseline_usage_errors(runs: list[Path], monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    code, _, err = _compare(capsys, "--baseline", "latest-pass:digits-cnn", str(runs[2]))
    assert code == 2 and "--baseline latest-pass:digits-cnn: no results store to resolve it in" in err
    code, _, err = _compare(capsys, "--baseline", "latest:digits-cnn", str(runs[0]), str(runs[2]))
    assert code == 2 and "give only the candidate run" in err
    code, _, err = _compare(capsys, str(runs[2]))
    assert code == 2 and "give the base run and the candidate run" in err
