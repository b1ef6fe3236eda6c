"""Two writers at once, and a writer killed mid-transaction, on SQLite and on a real PostgreSQL server.

The writers are real processes (`nnaudit run --store`, or Python registering a run through the
store API). A test hook in audit.engine.store (``NNAUDIT_STORE_TEST_HOOK``) holds a process at a
named point until a gate file exists, or SIGKILLs it there, so the tests make the writers
overlap (or die) at a chosen point instead of hoping a sleep lines them up. Where a test must
let the second writer run into the first one's lock, it waits a moment after the first reached
its hold: the assertions (both runs land, whole or not at all) do not depend on that moment.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from store_helpers import (
    cli_env,
    finish,
    reached,
    register_script,
    run_config,
    start,
    store_for,
    wait_for,
    write_config,
)

from audit.engine import store_tables as tables
from audit.engine.store import TEST_HOOK_ENV, open_store
from audit.engine.store_url import normalize_store_url
from audit.results import all_metrics, load_results

LET_THE_OTHER_RUN_INTO_THE_LOCK_S = 1.5


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    return normalize_store_url(store_for(backend, tmp_path, request, monkeypatch))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> Path:
    import torch

    path = tmp_path_factory.mktemp("weights") / "cnn.pt"
    torch.save(digits_cnn.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    gate = {"rules": ["performance.accuracy >= 0.5"]}
    return [run_config(write_config(root / f"cfg{seed}", weights, name="conc", seed=seed, gate=gate),
                       root / f"run{seed}") for seed in (0, 1)]


def _counts(url: str) -> dict[str, dict[str, int]]:
    """Rows per run id in each table, read straight from the database."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            out: dict[str, dict[str, int]] = {}
            for table in (tables.runs, tables.metrics, tables.findings):
                query = sa.select(table.c.run_id, sa.func.count()).group_by(table.c.run_id)
                out[table.name] = {row[0]: row[1] for row in conn.execute(query)}
            return out
    finally:
        engine.dispose()


def _expected(run: Path) -> tuple[str, int, int]:
    results = load_results(run)
    findings = sum(len(s["findings"]) for s in results["sections"].values())
    return results["manifest"]["run_id"], len(all_metrics(results)), findings


def _assert_whole(url: str, run: Path) -> None:
    run_id, n_metrics, n_findings = _expected(run)
    counts = _counts(url)
    assert counts["nnaudit_runs"].get(run_id) == 1
    assert counts["nnaudit_metrics"].get(run_id) == n_metrics
    assert counts["nnaudit_findings"].get(run_id, 0) == n_findings


def _env(backend: str, request: pytest.FixtureRequest, hook: str) -> dict[str, str]:
    extra = {TEST_HOOK_ENV: hook}
    if backend == "postgresql":
        extra.update(request.getfixturevalue("postgres_server").env())
    return cli_env(**extra)


def test_two_nnaudit_runs_register_at_the_same_moment(backend: str, store_url: str, weights: Path, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    """Two `nnaudit run --store` processes: both reach registration, are let go together, and the first holds its
    transaction open while the second runs into it. Both runs land, whole."""
    go, release = tmp_path / "go", tmp_path / "release"
    env = _env(backend, request, f"register:start=wait:{go};register:run=wait:{release}")
    outs = [tmp_path / f"run{i}" for i in range(2)]
    procs = [start(["-m", "audit.cli", "run", str(write_config(tmp_path / f"cfg{i}", weights, name="pair", seed=i)),
                    "--out", str(out), "--store", store_url], env) for i, out in enumerate(outs)]
    try:
        wait_for(lambda: len(reached(go)) == 2, "both runs reach registration", procs)
        go.touch()
        wait_for(lambda: len(reached(release)) >= 1, "a run writes inside its transaction", procs)
        time.sleep(LET_THE_OTHER_RUN_INTO_THE_LOCK_S)
        release.touch()
        results = [finish(proc) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert "registered run" in out, err[-3000:]
        assert "not registered" not in err
    for out in outs:
        _assert_whole(store_url, out)
    with open_store(store_url) as store:
        assert sorted(r.seed for r in store.runs(model="pair")) == [0, 1]


def test_the_same_run_registered_twice_at_once_is_one_entry(backend: str, store_url: str, runs: list[Path],
                                                            tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two imports of the same run at the same moment: one entry, whole (an upsert; plain inserts would collide)."""
    with open_store(store_url):
        pass  # the schema exists: this test is about the run's rows
    go, release = tmp_path / "go", tmp_path / "release"
    env = _env(backend, request, f"register:start=wait:{go};register:run=wait:{release}")
    procs = [start(register_script(store_url, runs[0]), env) for _ in range(2)]
    try:
        wait_for(lambda: len(reached(go)) == 2, "both imports are ready", procs)
        go.touch()
        wait_for(lambda: len(reached(release)) >= 1, "an import writes inside its transaction", procs)
        time.sleep(LET_THE_OTHER_RUN_INTO_THE_LOCK_S)
        release.touch()
        results = [finish(proc) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    run_id = _expected(runs[0])[0]
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert out.strip() == run_id
    _assert_whole(store_url, runs[0])
    assert len(_counts(store_url)["nnaudit_runs"]) == 1


def test_first_use_by_two_processes_creates_the_schema_once(backend: str, store_url: str, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    """Two processes open an empty store at once; the first holds its migration open while the second arrives."""
    release = tmp_path / "release"
    env = _env(backend, request, f"migrate=wait:{release}")
    code = "import sys; from audit.engine.store import open_store; open_store(sys.argv[1]).close(); print('ok')"
    procs = [start(["-c", code, store_url], env) for _ in range(2)]
    try:
        wait_for(lambda: len(reached(release)) >= 1, "a process migrates", procs)
        time.sleep(LET_THE_OTHER_RUN_INTO_THE_LOCK_S)
        release.touch()
        results = [finish(proc) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
        assert out.strip() == "ok"
    assert len(reached(release)) == 1, "the second process found the schema made and did not migrate again"
    with open_store(store_url) as store:
        assert store.migrate() == "0001"
        assert store.runs() == []


@pytest.mark.parametrize("stage", ["register:run", "register:metrics", "register:findings"])
def test_a_writer_killed_mid_transaction_leaves_the_store_consistent(
        backend: str, store_url: str, runs: list[Path], stage: str, request: pytest.FixtureRequest) -> None:
    """SIGKILL between the inserts: a new run is absent, an updated run keeps its previous entry whole; the next
    registration works."""
    with open_store(store_url) as store:
        before = store.register(runs[0])
        [first] = store.runs(run_ids=[before.run_id])
    env = _env(backend, request, f"{stage}=kill")
    for run in runs:  # a run the store does not have yet, and an update of one it has
        code, out, err = finish(start(register_script(store_url, run), env))
        assert code == -signal.SIGKILL, (code, out, err[-3000:])
    new_id = _expected(runs[1])[0]
    counts = _counts(store_url)
    assert new_id not in counts["nnaudit_runs"] and new_id not in counts["nnaudit_metrics"]
    assert new_id not in counts["nnaudit_findings"]
    _assert_whole(store_url, runs[0])
    with open_store(store_url) as store:
        [again] = store.runs(run_ids=[before.run_id])
        assert again.registered_at == first.registered_at, "the killed update left the previous entry as it was"
        assert store.register(runs[1]).run_id == new_id
    _assert_whole(store_url, runs[1])
