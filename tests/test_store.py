"""The results store: real runs registered in SQLite and in a real PostgreSQL server, history, baselines,
migrations, an unreachable store and credentials that never reach an output.

Every test that takes ``backend`` runs on both. PostgreSQL comes from tests/pg_helpers.py (a private
server started once per session; the tests skip without the server binaries unless
NNAUDIT_REQUIRE_SYSTEM=1). Concurrency and killed writers: tests/test_store_concurrency.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from results_factory import write_run
from store_helpers import ROBUST_SECTIONS, ROOT, cli_env, run_config, store_for, write_config

from audit import __version__
from audit.cli import main
from audit.engine import store_tables as tables
from audit.engine.store import ResultsStore, open_store, resolve_run
from audit.engine.store_record import headline_metrics, parse_time
from audit.engine.store_url import configured_store, normalize_store_url, redact_url, scrub
from audit.errors import ConfigError, StoreError
from audit.results import RESULTS_FILE, all_directions, all_metrics, atomic_write_text, dumps, load_results
from reports.views import format_value

BACKENDS = ["sqlite", "postgresql"]
PASS_GATE = {"rules": ["performance.accuracy >= 0.5"]}
FAIL_GATE = {"rules": ["performance.accuracy <= 0.01"]}


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    return store_for(request.param, tmp_path, request, monkeypatch)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> Path:
    import torch

    path = tmp_path_factory.mktemp("weights") / "cnn.pt"
    torch.save(digits_cnn.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory, weights: Path, resume_mlp: Any,
              resume_test: Any) -> dict[str, Path]:
    """A digits run with robustness in two norms and a carried gate, and a ResumeNames run with fairness."""
    import torch

    root = tmp_path_factory.mktemp("real")
    robust = run_config(write_config(root / "robust-cfg", weights, version="v1", sections=ROBUST_SECTIONS,
                                     gate=PASS_GATE), root / "robust")
    mlp = root / "mlp.pt"
    torch.save(resume_mlp.state_dict(), mlp)
    config = {"title": "resume fairness", "seed": 4, "device": "cpu", "report": False,
              "model": {"factory": "audit.zoo:tabular_mlp", "weights": str(mlp),
                        "kwargs": {"in_features": int(resume_test.x.shape[1]), "hidden": 32}},
              "data": {"source": "resume_names", "limit": 400, "sensitive": ["gender", "ethnicity"]},
              "sections": {"performance": {}, "fairness": {"n_resamples": 0}}}
    import yaml

    (root / "fair-cfg").mkdir()
    path = root / "fair-cfg" / "resume-mlp.yaml"  # no model.name: the name is the config file's
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    fair = run_config(path, root / "fair")
    return {"robust": robust, "fair": fair}


@pytest.fixture(scope="module")
def history_runs(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> list[Path]:
    """Four runs in this order: digits-cnn seed 0 (gate passes), seed 1 (gate fails), other-model, digits-cnn seed 2
    (no gate)."""
    root = tmp_path_factory.mktemp("history")
    plan = [("digits-cnn", 0, PASS_GATE), ("digits-cnn", 1, FAIL_GATE), ("other-model", 0, None),
            ("digits-cnn", 2, None)]
    return [run_config(write_config(root / f"cfg{i}", weights, name=name, seed=seed, gate=gate), root / f"run{i}")
            for i, (name, seed, gate) in enumerate(plan)]


def _register(url: str, runs: list[Path]) -> None:
    with open_store(url) as store:
        for run in runs:
            store.register(run)


# -- registration: every field of real runs ------------------------------------------------------------


def test_register_real_runs_every_field(store_url: str, real_runs: dict[str, Path]) -> None:
    n_findings = 0
    with open_store(store_url) as store:
        for kind, run in real_runs.items():
            record = store.register(run)
            results = load_results(run)
            manifest = results["manifest"]
            metrics = all_metrics(results)
            assert record.run_id == manifest["run_id"]
            [stored] = store.runs(run_ids=[record.run_id])
            assert (stored.model_name, stored.model_version, stored.version_source) == (
                ("digits-cnn", "v1", "config") if kind == "robust" else ("resume-mlp", None, None))
            assert stored.title == manifest["title"]
            assert stored.data_name == manifest["data"]["name"]
            assert stored.data_sha256 == manifest["data"]["sha256"] and len(stored.data_sha256 or "") == 64
            assert stored.model_sha256 == manifest["model"]["sha256"]
            assert stored.seed == manifest["seed"] == (0 if kind == "robust" else 4)
            assert stored.status == manifest["status"] == "complete"
            assert stored.verdict == (results["verdict"]["status"] if kind == "robust" else "not_gated")
            assert stored.verdict == ("pass" if kind == "robust" else "not_gated")
            assert stored.run_dir == str(run.resolve()) and Path(stored.run_dir).is_absolute()
            assert stored.host == socket.gethostname()
            assert stored.config_path == manifest["config_path"]
            assert stored.created_at == parse_time(manifest["created_at"])
            assert stored.finished_at == parse_time(manifest["finished_at"])
            assert stored.nnaudit_version == manifest["nnaudit_version"] == __version__
            assert stored.schema_version == results["schema_version"]
            # every metric, its value and direction
            directions = all_directions(results)
            assert store.metrics(record.run_id) == {name: (value, directions.get(name))
                                                    for name, value in metrics.items()}
            # every finding, in order, with its section
            expected = [{"section": name, "severity": f["severity"], "message": f["message"], "code": f.get("code"),
                         "metric": f.get("metric")}
                        for name, section in results["sections"].items() for f in section["findings"]]
            assert store.findings(record.run_id) == expected
            n_findings += len(expected)
            # the headline, read back by label
            if kind == "robust":
                worst = {f"robust {norm} eps={eps}": f"robustness.worst_case.{norm}.eps={eps}.robust_accuracy"
                         for norm, eps in (("linf", "0.05"), ("linf", "0.1"), ("l2", "0.5"))}
                labels = {"accuracy": "performance.accuracy", **worst, "reliable": "robustness.reliable"}
            else:
                candidates = [f"fairness.{g}.{m}_difference" for g in ("gender", "ethnicity")
                              for m in ("demographic_parity", "equalized_odds")]
                assert all(c in metrics for c in candidates)
                labels = {"accuracy": "performance.accuracy",
                          "worst disparity": max(candidates, key=lambda c: metrics[c] or -1.0)}
            assert stored.headline == {label: (name, metrics[name]) for label, name in labels.items()}
            assert list(stored.headline) == (  # the history's column order
                ["accuracy", "robust l2 eps=0.5", "robust linf eps=0.05", "robust linf eps=0.1", "reliable"]
                if kind == "robust" else ["accuracy", "worst disparity"])
    assert n_findings > 0, "the real runs raise findings (the fairness section does)"


def test_numbers_are_stored_as_results_json_encodes_them(store_url: str, tmp_path: Path) -> None:
    """inf, -inf and NaN round-trip through both databases; a run written before run ids registers under a stable
    id, twice without a duplicate."""
    run = write_run(tmp_path, "legacy")
    data = json.loads((run / RESULTS_FILE).read_text())
    data["sections"]["performance"]["metrics"].update(
        {"performance.big": "Infinity", "performance.small": "-Infinity", "performance.nan": None,
         "performance.tiny": 1e-300})
    atomic_write_text(run / RESULTS_FILE, dumps(data))
    assert "run_id" not in data["manifest"]
    with open_store(store_url) as store:
        first = store.register(run)
        second = store.register(run)
        assert first.run_id == second.run_id
        assert len(store.runs()) == 1
        stored = store.metrics(first.run_id)
        assert stored["performance.big"][0] == math.inf
        assert stored["performance.small"][0] == -math.inf
        assert stored["performance.nan"][0] is None
        assert stored["performance.tiny"][0] == 1e-300
        assert {k: v for k, (v, _) in stored.items()} == all_metrics(load_results(run))

        def raw(conn: sa.Connection) -> dict[str, tuple[Any, Any]]:
            rows = conn.execute(sa.select(tables.metrics.c.name, tables.metrics.c.value, tables.metrics.c.special))
            return {row.name: (row.value, row.special) for row in rows}

        columns = store.transaction(raw, write=False)
        assert columns["performance.big"] == (None, "Infinity")
        assert columns["performance.small"] == (None, "-Infinity")
        assert columns["performance.nan"] == (None, None)
        [listed] = store.runs(metrics=["performance.big", "performance.nan"])
        assert listed.to_dict()["metrics"] == {"performance.big": "Infinity", "performance.nan": None}


def test_a_killed_run_registers_as_incomplete_and_a_live_one_is_refused(store_url: str, tmp_path: Path) -> None:
    from results_factory import unfinished_results

    from audit.engine.lock import RunLock

    killed = write_run(tmp_path, "killed", unfinished_results("running"))  # no process holds it: killed
    live = write_run(tmp_path, "live", unfinished_results("running"))
    with open_store(store_url) as store, RunLock(live):
        assert store.register(killed).status == "incomplete"
        with pytest.raises(StoreError, match=r"is still running .* it is registered when it ends"):
            store.register(live)
        assert [r.status for r in store.runs()] == ["incomplete"]


def test_headline_metrics_pick_by_name() -> None:
    metrics = {
        "performance.accuracy": 0.9, "performance.loss": 0.3,
        "robustness.worst_case.linf.eps=0.1.robust_accuracy": 0.4, "robustness.fgsm.linf.eps=0.1.robust_accuracy": 0.6,
        "robustness.worst_case.l2.eps=0.5.robust_accuracy": 0.5, "robustness.reliable": 1.0,
        "fairness.gender.demographic_parity_difference": 0.10,
        "fairness.gender.demographic_parity_difference.ci_high": 0.90,
        "fairness.race.equalized_odds_difference": 0.25, "fairness.race.group=a.selection_rate_difference": 0.99,
        "fairness.race.class=1.demographic_parity_difference": 0.95, "fairness.age.equalized_odds_difference": None,
        "fairness.race.demographic_parity_ratio": 0.01,
    }
    assert headline_metrics(metrics) == {
        "performance.accuracy": "accuracy",
        "robustness.worst_case.linf.eps=0.1.robust_accuracy": "robust linf eps=0.1",
        "robustness.worst_case.l2.eps=0.5.robust_accuracy": "robust l2 eps=0.5",
        "robustness.reliable": "reliable",
        "fairness.race.equalized_odds_difference": "worst disparity",
    }
    assert headline_metrics({"imbalance.ece": 0.1}) == {}


# -- history -------------------------------------------------------------------------------------------------


def test_history_text_and_json(store_url: str, history_runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    _register(store_url, history_runs)
    capsys.readouterr()
    assert main(["history", "--store", store_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:9] == ["time", "(UTC)", "run", "model", "version", "seed", "status", "verdict", "accuracy"]
    rows = [line.split() for line in lines[2:]]
    ids = [load_results(run)["manifest"]["run_id"] for run in history_runs]
    assert [row[2] for row in rows] == [ids[0][:8], ids[1][:8], ids[2][:8], ids[3][:8]]  # newest last
    assert [row[3] for row in rows] == ["digits-cnn", "digits-cnn", "other-model", "digits-cnn"]
    assert [row[5] for row in rows] == ["0", "1", "0", "2"]
    assert [" ".join(row[7:-1]) for row in rows] == ["PASS", "FAIL", "NOT GATED", "NOT GATED"]
    accuracy = [all_metrics(load_results(run))["performance.accuracy"] for run in history_runs]
    assert [row[-1] for row in rows] == [format_value(a) for a in accuracy]

    assert main(["history", "--store", store_url, "--model", "digits-cnn", "--limit", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [run["run_id"] for run in data] == [ids[1], ids[3]]  # the 2 newest, oldest first
    assert [run["seed"] for run in data] == [1, 2]
    assert [run["verdict"] for run in data] == ["fail", "not_gated"]
    assert data[0]["headline"] == {"accuracy": {"metric": "performance.accuracy", "value": accuracy[1]}}
    assert data[1]["run_dir"] == str(history_runs[3].resolve())

    assert main(["history", "--store", store_url, "--metric", "imbalance.balanced_accuracy", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [run["metrics"] for run in data] == [
        {"imbalance.balanced_accuracy": all_metrics(load_results(run))["imbalance.balanced_accuracy"]}
        for run in history_runs]
    assert main(["history", "--store", store_url, "--metric", "imbalance.balanced_accuracy"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[-1] == "imbalance.balanced_accuracy" and len(text) == 2 + len(history_runs)


def test_history_errors_name_the_option(store_url: str, history_runs: list[Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--store", store_url]) == 0
    assert "no runs in" in capsys.readouterr().out
    _register(store_url, history_runs[:1])
    assert main(["history", "--store", store_url, "--model", "digits-cn"]) == 2
    err = capsys.readouterr().err
    assert "--model 'digits-cn'" in err and "did you mean digits-cnn" in err
    assert main(["history", "--store", store_url, "--metric", "performance.acuracy"]) == 2
    err = capsys.readouterr().err
    assert "--metric 'performance.acuracy'" in err and "performance.accuracy" in err
    assert main(["history"]) == 2
    assert "pass --store URL" in capsys.readouterr().err


# -- references to runs --------------------------------------------------------------------------------------


def test_resolve_run_refs(store_url: str, history_runs: list[Path], tmp_path: Path) -> None:
    _register(store_url, history_runs)
    ids = [load_results(run)["manifest"]["run_id"] for run in history_runs]
    with open_store(store_url) as store:
        assert resolve_run(store, "latest:digits-cnn") == history_runs[3].resolve()
        assert resolve_run(store, "latest-pass:digits-cnn") == history_runs[0].resolve()
        assert resolve_run(store, "latest:other-model") == history_runs[2].resolve()
        assert resolve_run(store, ids[1]) == history_runs[1].resolve()
        assert resolve_run(store, ids[1][:8]) == history_runs[1].resolve()
        # the candidate of a comparison is never its own baseline: the newest other run
        assert resolve_run(store, "latest:digits-cnn", exclude=ids[3]) == history_runs[1].resolve()
        assert resolve_run(store, "latest-pass:digits-cnn", exclude=ids[3]) == history_runs[0].resolve()
        with pytest.raises(StoreError, match="whose verdict is pass other than the candidate"):
            resolve_run(store, "latest-pass:digits-cnn", exclude=ids[0])
        for ref, expected in [("latest:nope", "has no run of model 'nope' (models: digits-cnn, other-model)"),
                              ("latest-pass:other-model", "no run of model 'other-model' whose verdict is pass"),
                              ("0" * 32, "no run with this id"), ("newest:digits-cnn", "not a run reference"),
                              ("latest:", "names no model")]:
            with pytest.raises(StoreError) as err:
                resolve_run(store, ref)
            assert repr(ref) in str(err.value) and expected in str(err.value), str(err.value)
        # a run moved: registering its new place relocates it; when that directory is gone, the error says so
        moved = tmp_path / "moved"
        shutil.copytree(history_runs[3], moved)
        assert store.register(moved).run_id == ids[3]
        assert resolve_run(store, "latest:digits-cnn") == moved.resolve()
        shutil.rmtree(moved)
        with pytest.raises(StoreError, match=r"resolves to run .* but its run directory .* is gone"):
            resolve_run(store, "latest:digits-cnn")
        assert len(store.runs()) == 4


def test_resolve_run_refuses_an_overwritten_directory(store_url: str, weights: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg", weights, name="reused")
    run = run_config(config, tmp_path / "run")
    old = load_results(run)["manifest"]["run_id"]
    with open_store(store_url) as store:
        store.register(run)
        from audit.config import load_config
        from audit.runner import run_audit

        run_audit(load_config(config), run, config_path=config, existing="overwrite")
        new = load_results(run)["manifest"]["run_id"]
        assert new != old
        with pytest.raises(StoreError, match=f"{old!r} resolves to run {old}, but .* now holds another run .*{new}"):
            resolve_run(store, old)
        store.register(run)
        assert resolve_run(store, "latest:reused") == run.resolve()
        assert len(store.runs(model="reused")) == 2  # both runs happened


# -- run ids, model versions, config -------------------------------------------------------------------------


def test_resume_keeps_the_run_id_and_a_version_change_keeps_the_sections(weights: Path, tmp_path: Path) -> None:
    from audit.config import load_config
    from audit.runner import run_audit

    config_path = write_config(tmp_path / "cfg", weights, version="v1")
    run = run_config(config_path, tmp_path / "run")
    first = load_results(run)["manifest"]
    config = load_config(config_path)
    assert config.model.version == "v1"
    config.model.version, config.model.name, config.store = "v2", "renamed", str(tmp_path / "s.db")
    run_audit(config, run, config_path=config_path, existing="resume")
    second = load_results(run)["manifest"]
    assert second["run_id"] == first["run_id"] and second["created_at"] == first["created_at"]
    assert second["resumes"][-1]["kept"] == ["performance", "imbalance"]  # name, version and store change no number


def test_model_version_from_git(weights: Path, tmp_path: Path, store_url: str) -> None:
    git = shutil.which("git")
    if git is None:
        import system

        system.need("git is not installed (apt-get install git)")
    repo = tmp_path / "repo"
    config = write_config(repo, weights, name="gitmodel")
    (repo / "notes.txt").write_text("one\n")

    def call(*args: str) -> str:
        return subprocess.run([git, "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                              capture_output=True, text=True, check=True).stdout.strip()

    call("init", "-q")
    call("add", ".")
    call("commit", "-q", "-m", "init")
    commit = call("rev-parse", "HEAD")
    clean = run_config(config, tmp_path / "clean")
    (repo / "notes.txt").write_text("two\n")  # a tracked file changed
    (repo / "untracked.txt").write_text("x\n")
    dirty = run_config(config, tmp_path / "dirty")
    assert load_results(clean)["manifest"]["git"] == {"commit": commit, "dirty": False}
    assert load_results(dirty)["manifest"]["git"] == {"commit": commit, "dirty": True}
    with open_store(store_url) as store:
        a, b = store.register(clean), store.register(dirty)
        assert (a.model_version, a.version_source, a.git_commit, a.git_dirty) == (commit[:12], "git", commit, False)
        assert (b.model_version, b.version_source, b.git_dirty) == (commit[:12] + "-dirty", "git", True)
    config.write_text(config.read_text().replace("name: gitmodel", "name: gitmodel\n  version: '2.0'"))
    versioned = run_config(config, tmp_path / "versioned")
    with open_store(store_url) as store:
        c = store.register(versioned)
        assert (c.model_version, c.version_source, c.git_commit) == ("2.0", "config", commit)


def test_config_store_key(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from audit.config import load_config

    monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    config = write_config(tmp_path / "proj", weights, name="cfgstore", store="stores/team.db")
    assert load_config(config).store == str((tmp_path / "proj" / "stores" / "team.db").resolve())
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    assert "registered run" in capsys.readouterr().out
    with open_store(str(tmp_path / "proj" / "stores" / "team.db")) as store:
        assert [r.model_name for r in store.runs()] == ["cfgstore"]
    # precedence: --store, then $NNAUDIT_STORE, then the config
    monkeypatch.setenv("NNAUDIT_STORE", str(tmp_path / "env.db"))
    assert configured_store(None, "cfg.db", config_dir=tmp_path) == f"sqlite:///{tmp_path / 'env.db'}"
    assert configured_store("cli.db", "cfg.db") == f"sqlite:///{Path.cwd() / 'cli.db'}"
    monkeypatch.setenv("NNAUDIT_STORE", "")
    assert configured_store(None, "cfg.db", config_dir=tmp_path) == f"sqlite:///{tmp_path / 'cfg.db'}"
    assert configured_store(None, None) is None
    # a password in the config is refused: the config is copied into results.json
    bad = write_config(tmp_path / "bad", weights, store="postgresql+psycopg://ci:hunter2secret@db/nnaudit")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert err.value.key == "store" and "PGPASSWORD" in str(err.value) and "hunter2secret" not in str(err.value)
    assert "ci:***@db" in str(err.value)


def test_urls_are_redacted() -> None:
    secret = "p@ss/w:rd"
    from urllib.parse import quote

    url = f"postgresql+psycopg://team:{quote(secret, safe='')}@db.example:5432/audits?sslmode=require&password=qq1"
    assert redact_url(url) == "postgresql+psycopg://team:***@db.example:5432/audits?sslmode=require&password=***"
    message = f"failed for {url}: server said {secret} and {quote(secret, safe='')}; also qq1"
    cleaned = scrub(message, url)
    assert secret not in cleaned and quote(secret, safe="") not in cleaned and "qq1" not in cleaned
    assert redact_url("postgresql+psycopg://team@db/audits") == "postgresql+psycopg://team@db/audits"
    assert normalize_store_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(StoreError, match="mysql://u:\\*\\*\\*@h/db"):
        normalize_store_url("mysql://u:topsecret@h/db")
    with pytest.raises(StoreError, match="in-memory"):
        normalize_store_url("sqlite://")


# -- migrations ------------------------------------------------------------------------------------------------


def test_migration_from_an_empty_database(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with open_store(store_url) as store:
        def check(conn: sa.Connection) -> tuple[Any, ...]:
            context = MigrationContext.configure(conn, opts={"version_table": tables.VERSION_TABLE})
            info = conn.execute(sa.select(tables.store_info)).one()
            return context.get_current_heads(), compare_metadata(context, tables.metadata), info

        heads, diff, info = store.transaction(check, write=False)
    assert heads == ("0001",)
    assert diff == [], "the migrations and audit/engine/store_tables.py differ"
    assert (info.revision, info.nnaudit_version) == ("0001", __version__)
    with open_store(store_url) as store:  # a second use finds the schema at head and changes nothing
        assert store.migrate() == "0001"


NEWER_REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.add_column("nnaudit_runs", sa.Column("reviewed_by", sa.Text))
'''


def test_a_store_from_a_newer_nnaudit_is_refused(store_url: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from audit.engine.store import MIGRATIONS

    newer = tmp_path / "newer-migrations"
    shutil.copytree(MIGRATIONS, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "v0002_reviewed_by.py").write_text(NEWER_REVISION)
    store = ResultsStore(normalize_store_url(store_url))
    try:
        assert store.migrate(script_location=newer, writer="9.9.9") == "0002"
    finally:
        store.close()
    with pytest.raises(StoreError) as err:
        open_store(store_url)
    message = str(err.value)
    assert "nnaudit 9.9.9" in message and "revision '0002'" in message and f"({__version__})" in message
    assert "upgrade nnaudit" in message and "knows up to '0001'" in message
    assert main(["history", "--store", store_url]) == 2
    assert "nnaudit 9.9.9" in capsys.readouterr().err


# -- an unreachable store, import later, credentials -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_store_the_run_completes_and_import_adds_it_later(
        weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    secret = "Unreach4bleSecret"
    url = f"postgresql+psycopg://ci:{secret}@127.0.0.1:{_closed_port()}/nnaudit"
    config = write_config(tmp_path / "cfg", weights, name="offline")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--store", url]) == 0
    captured = capsys.readouterr()
    assert "the run was not registered in the results store" in captured.err
    assert "postgresql+psycopg://ci:***@127.0.0.1" in captured.err
    assert f"nnaudit store import {out} --store postgresql+psycopg://ci:***@" in captured.err
    assert load_results(out)["manifest"]["status"] == "complete"
    for text in (captured.out, captured.err, (out / RESULTS_FILE).read_text()):
        assert secret not in text
    # a SQLite store that cannot be created (its folder is a file): same
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", str(config), "--out", str(tmp_path / "run2"), "--store", str(blocker / "s.db")]) == 0
    assert "not registered" in capsys.readouterr().err
    # later
    later = str(tmp_path / "later.db")
    assert main(["store", "import", str(out), "--store", later]) == 0
    printed = capsys.readouterr().out
    assert f"registered {load_results(out)['manifest']['run_id']}  offline" in printed
    assert "1 of 1 run(s) registered" in printed
    with open_store(later) as store:
        assert [r.run_dir for r in store.runs()] == [str(out.resolve())]


def test_store_import_folders(store_url: str, history_runs: list[Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "many"
    for i, run in enumerate(history_runs[:2]):
        shutil.copytree(run, folder / f"r{i}")
    broken = folder / "broken"
    broken.mkdir()
    (broken / RESULTS_FILE).write_text("{not json")
    assert main(["store", "import", str(folder), str(history_runs[2]), "--store", store_url]) == 1
    captured = capsys.readouterr()
    assert "not registered: cannot register" in captured.err and str(broken) in captured.err
    assert "3 of 4 run(s) registered" in captured.out
    assert main(["store", "import", str(folder / "r0"), "--store", store_url]) == 0  # again: updated, not doubled
    with open_store(store_url) as store:
        assert len(store.runs()) == 3
    assert main(["store", "import", str(tmp_path / "nothing"), "--store", store_url]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_credentials_never_reach_an_output(postgres_server: Any, weights: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    server = postgres_server
    secret = server.password
    database = server.new_database()
    monkeypatch.delenv("PGPASSWORD", raising=False)
    config = write_config(tmp_path / "cfg", weights, name="secretive")
    config.write_text(config.read_text().replace("report: false", "report: true"))
    outputs: list[str] = []
    # 1. the password in the URL ($NNAUDIT_STORE, as a CI secret): it works, and is never shown
    monkeypatch.setenv("NNAUDIT_STORE", server.url(database, with_password=True))
    assert main(["run", str(config), "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert f"in postgresql+psycopg://nnaudit:***@127.0.0.1:{server.port}/{database}" in captured.out
    outputs += [captured.out, captured.err]
    # 2. no password in the URL: libpq reads PGPASSWORD
    monkeypatch.delenv("NNAUDIT_STORE")
    monkeypatch.setenv("PGPASSWORD", secret)
    assert main(["run", str(config), "--out", str(tmp_path / "b"), "--store", server.url(database)]) == 0
    captured = capsys.readouterr()
    assert "registered run" in captured.out
    outputs += [captured.out, captured.err]
    # 3. a wrong password: the server's refusal is shown, neither password is
    monkeypatch.delenv("PGPASSWORD")
    wrong = server.url(database, with_password=True).replace(secret, "Wr0ngPassw0rdXYZ")
    assert main(["run", str(config), "--out", str(tmp_path / "c"), "--store", wrong]) == 0
    captured = capsys.readouterr()
    assert "password authentication failed" in captured.err and "nnaudit:***@" in captured.err
    assert "Wr0ngPassw0rdXYZ" not in captured.err + captured.out
    outputs += [captured.out, captured.err, caplog.text]
    for run in ("a", "b", "c"):
        for name in (RESULTS_FILE, "report.html"):
            outputs.append((tmp_path / run / name).read_text())
    # 4. history and import print the URL redacted too
    monkeypatch.setenv("PGPASSWORD", secret)
    assert main(["store", "import", str(tmp_path / "c"), "--store", server.url(database, with_password=True)]) == 0
    assert main(["history", "--store", server.url(database, with_password=True), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out[captured.out.index("[\n"):])) == 3
    outputs += [captured.out, captured.err]
    assert all(secret not in text for text in outputs), "the store's password leaked into an output"


def test_store_and_history_need_no_torch(tmp_path: Path) -> None:
    """The dashboard (no torch) will read the store: the store, the history table and a registration work with
    torch blocked."""
    run = write_run(tmp_path, "run")
    code = (
        "import sys\n"
        "for name in ('torch', 'shap', 'lime', 'captum', 'foolbox', 'fairlearn'):\n"
        "    sys.modules[name] = None\n"
        "from audit.engine.store import open_store, resolve_run\n"
        "from reports.history import history_table\n"
        "with open_store(sys.argv[1]) as store:\n"
        "    store.register(sys.argv[2])\n"
        "    runs = store.runs()\n"
        "    print(history_table([r.to_dict() for r in runs]))\n"
        "    print(resolve_run(store, 'latest:' + runs[0].model_name))\n")
    env = cli_env()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.db"), str(run)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(str(run.resolve()))


def test_env_var_store_for_ci(weights: Path, tmp_path: Path) -> None:
    """`NNAUDIT_STORE` alone registers a `nnaudit run` (the CI form)."""
    config = write_config(tmp_path / "cfg", weights, name="ci-model")
    env = cli_env(NNAUDIT_STORE=str(tmp_path / "ci.db"))
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "run", str(config), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "registered run" in proc.stdout
    history = subprocess.run([sys.executable, "-m", "audit.cli", "history", "--model", "ci-model"],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert history.returncode == 0, history.stderr
    assert "ci-model" in history.stdout.splitlines()[2]
    assert os.path.exists(tmp_path / "ci.db")


def test_postgres_tests_skip_without_the_server_unless_required(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import pg_helpers
    import system

    monkeypatch.setenv(pg_helpers.BINDIR_ENV, str(tmp_path / "no-postgres"))
    monkeypatch.delenv(system.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL server binaries"):
        pg_helpers.start_server()
    monkeypatch.setenv(system.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="NNAUDIT_REQUIRE_SYSTEM=1 requires it"):
        pg_helpers.start_server()


STOPPING_PLUGINS = '''
import os
import time
from pathlib import Path

from audit.plugin import SectionPlugin


class Waiter(SectionPlugin):
    """Holds its section open until $NNAUDIT_TEST_GATE exists."""

    name = "waiter"

    def run(self, ctx, result):
        gate = Path(os.environ["NNAUDIT_TEST_GATE"])
        while not gate.exists():
            time.sleep(0.02)
        result.metric("waited", 1.0)


class Broken(SectionPlugin):
    name = "broken"

    def run(self, ctx, result):
        raise RuntimeError("this section always fails")
'''


def test_interrupted_and_failed_runs_are_registered(weights: Path, tmp_path: Path) -> None:
    """A run stopped by SIGINT (exit 130) and a run whose section errors (exit 3) are registered as such."""
    import signal
    import time

    from plugin_helpers import write_plugin_dist
    from store_helpers import WAIT_S, finish, start

    site = tmp_path / "site"
    write_plugin_dist(site, module="nnaudit_storetest", source=STOPPING_PLUGINS,
                      entry_points="[nnaudit.sections]\nwaiter = nnaudit_storetest:Waiter\n"
                                   "broken = nnaudit_storetest:Broken\n")
    store = tmp_path / "s.db"
    env = cli_env(NNAUDIT_TEST_GATE=str(tmp_path / "never"), NNAUDIT_STORE=str(store))
    env["PYTHONPATH"] = os.pathsep.join((str(site), env["PYTHONPATH"]))
    stopped = tmp_path / "stopped"
    config = write_config(tmp_path / "cfg1", weights, name="stops", sections={"performance": {}, "waiter": {}})
    proc = start(["-m", "audit.cli", "run", str(config), "--out", str(stopped)], env)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((stopped / RESULTS_FILE).read_text())["manifest"]["current_section"] == "waiter":
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 130, err[-3000:]
    assert "registered run" in out, err[-3000:]
    config = write_config(tmp_path / "cfg2", weights, name="breaks", sections={"performance": {}, "broken": {}})
    done = subprocess.run([sys.executable, "-m", "audit.cli", "run", str(config), "--out", str(tmp_path / "failed")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=WAIT_S, check=False)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "registered run" in done.stdout
    with open_store(str(store)) as opened:
        runs = {run.model_name: run for run in opened.runs()}
    assert runs["stops"].status == "interrupted" == load_results(stopped)["manifest"]["status"]
    assert runs["breaks"].status == "failed"
    assert runs["breaks"].headline["accuracy"][1] == all_metrics(load_results(tmp_path / "failed"))[
        "performance.accuracy"]
