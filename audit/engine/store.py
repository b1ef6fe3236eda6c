"""The results store: every run registered in one database, for history and for baselines.

``open_store(url)`` opens (and on first use creates) a store: a SQLite file, or a PostgreSQL
database for a team (``audit.engine.store_url``). Its schema is made and upgraded by the Alembic
migrations shipped in ``audit/engine/migrations/``, applied here on first use of each nnaudit
release; a store migrated by a newer nnaudit (a revision this one does not know) is refused with
that version in the message.

``store.register(run_dir)`` writes what ``audit.engine.store_record`` reads from the run, in one
transaction: the store holds the whole run or none of it, whatever kills the writer. The run id
(results.json ``manifest.run_id``) is the key, so registering a run again (after ``--resume``,
or by ``nnaudit store import``) replaces its entry. ``store.runs(...)`` lists runs oldest first;
``resolve_run(store, ref)`` turns ``latest:NAME``, ``latest-pass:NAME`` or a run id into a run
directory.

Concurrency: two writers at the same moment both land. On SQLite, the database is in WAL mode
(readers never block the writer), every write transaction starts with ``BEGIN IMMEDIATE`` (it
takes the write lock at once, so two writers queue instead of deadlocking on a lock upgrade),
waits up to ``BUSY_TIMEOUT_S`` for the lock and is retried when it still finds the database
locked. On PostgreSQL, a run's row is an upsert (``INSERT ... ON CONFLICT DO UPDATE``) and the
schema migration holds a transaction-scoped advisory lock, so two first uses of an empty
database do not both create the tables; serialization failures and deadlocks are retried.
SQLite's locks need a local file system: put a shared store on PostgreSQL, not on NFS.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from audit import __version__
from audit.engine import store_tables as tables
from audit.engine.provenance import run_id_of
from audit.engine.store_record import (
    RunRecord,
    StoredRun,
    decode_stored,
    encode_stored,
    headline_order,
    record_from_run,
)
from audit.engine.store_url import backend_of, normalize_store_url, redact_url, scrub
from audit.errors import StoreError
from audit.results import RESULTS_FILE, load_results

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0  # SQLite: how long a writer waits for another's lock before the retry
RETRIES = 5
CONNECT_TIMEOUT_S = 10  # PostgreSQL: an unreachable server fails in seconds, not minutes
ADVISORY_LOCK = 0x6E6E_6175_6469_74  # "nnaudit": serializes schema migrations on PostgreSQL
TEST_HOOK_ENV = "NNAUDIT_STORE_TEST_HOOK"  # tests only: "STAGE=kill" or "STAGE=wait:FILE" (see _test_hook)

NEWER_STORE = ("the results store {url} was migrated by nnaudit {writer} to store schema revision {revision!r}, "
               "which this nnaudit ({ours}) does not know (it knows up to {head!r}); upgrade nnaudit "
               "(pip install -U nnaudit) to use this store")
UNREACHABLE = "cannot use the results store {url}: {error}"
REF_FORMS = "latest:NAME, latest-pass:NAME or a run id"
NO_RUN = "{ref!r} resolves to no run: the results store {url} has {what}{known}"
DIR_GONE = ("{ref!r} resolves to run {run_id} ({model}, {created}), but its run directory {run_dir} (registered from "
            "{host}) is gone: copy the run back there, or import it where it is now (nnaudit store import DIR)")
DIR_REUSED = ("{ref!r} resolves to run {run_id}, but its run directory {run_dir} now holds another run ({other}); "
              "the run was overwritten")

T = TypeVar("T")


def _utc(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    return value


def _test_hook(stage: str) -> None:
    """Tests only: with ``NNAUDIT_STORE_TEST_HOOK="STAGE=kill"`` the process SIGKILLs itself at ``stage``; with
    ``"STAGE=wait:FILE"`` it touches ``FILE.<pid>.reached`` and waits until ``FILE`` exists. Stages:
    ``migrate`` (schema upgraded, not committed), ``register:start`` (run read, no transaction yet),
    ``register:run`` (run row written), ``register:metrics``,
    ``register:findings`` (all written, not committed). Several: separated by ``;``."""
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec:
        return
    for item in spec.split(";"):
        at, _, action = item.partition("=")
        if at != stage:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("wait:"):
            gate = Path(action[len("wait:"):])
            Path(f"{gate}.{os.getpid()}.reached").touch()
            deadline = time.monotonic() + 600
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.02)


# -- the engine -------------------------------------------------------------------------------------------


def _make_engine(url: str) -> sa.Engine:
    from sqlalchemy import event
    from sqlalchemy.pool import NullPool

    if backend_of(url) == "sqlite":
        database = sa.engine.make_url(url).database
        if database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": BUSY_TIMEOUT_S})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # transactions are begun below, not by the sqlite3 module
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: sa.Connection) -> None:
            write = connection.get_execution_options().get("nnaudit_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    query = sa.engine.make_url(url).query
    connect_args = {} if "connect_timeout" in query else {"connect_timeout": CONNECT_TIMEOUT_S}
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _transient(err: BaseException, backend: str) -> bool:
    """A lock or serialization conflict that a retry resolves (never a connection or schema error)."""
    orig = getattr(err, "orig", None)
    if backend == "sqlite":
        text = str(orig or err).lower()
        return "database is locked" in text or "database is busy" in text or "database table is locked" in text
    code = getattr(orig, "sqlstate", None)
    # serialization failure, deadlock, lock not available
    return code in ("40001", "40P01", "55P03")


class ResultsStore:
    """An open results store (see the module docstring). Use ``open_store``; close it (or use ``with``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display = redact_url(url)
        self.backend = backend_of(url)
        self.engine = _make_engine(url)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    def error(self, err: BaseException) -> StoreError:
        """A ``StoreError`` for a database error: the driver's message, with the URL and its secrets hidden."""
        orig = getattr(err, "orig", None)
        text = str(orig if orig is not None else err).strip().splitlines()
        message = "; ".join(line.strip() for line in text if line.strip()) or type(err).__name__
        return StoreError(UNREACHABLE.format(url=self.display, error=scrub(message, self.url)))

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(nnaudit_write=True)
            with conn.begin():
                yield conn

    def transaction(self, work: Callable[[sa.Connection], T], *, write: bool = True) -> T:
        """Run ``work(conn)`` in one transaction, retried on lock conflicts; errors as ``StoreError``."""
        for attempt in range(RETRIES + 1):
            try:
                with self._connect(write=write) as conn:
                    return work(conn)
            except DBAPIError as err:
                if attempt < RETRIES and _transient(err, self.backend):
                    time.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
                    continue
                raise self.error(err) from None
            except SQLAlchemyError as err:
                raise self.error(err) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema -------------------------------------------------------------------------------------

    def migrate(self, *, script_location: Path = MIGRATIONS, writer: str = __version__) -> str:
        """Bring the schema to the newest revision this nnaudit knows; returns it. Refuses a newer store."""
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(script_location))
        script = ScriptDirectory.from_config(config)
        head = script.get_current_head()
        known = {rev.revision for rev in script.walk_revisions()}
        if head is None:  # pragma: no cover - the package ships its migrations
            raise StoreError(f"no store migrations found in {script_location}")
        if self.transaction(lambda conn: self._current(conn, known, head), write=False) == head:
            return head

        def upgrade(conn: sa.Connection) -> str:
            if self.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK)))
            if self._current(conn, known, head) != head:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                _test_hook("migrate")
            now = dt.datetime.now(dt.timezone.utc)
            conn.execute(sa.delete(tables.store_info))
            conn.execute(sa.insert(tables.store_info).values(id=1, revision=head, nnaudit_version=writer,
                                                             migrated_at=now))
            return head

        return self.transaction(upgrade)

    def _current(self, conn: sa.Connection, known: set[str], head: str) -> str | None:
        from alembic.runtime.migration import MigrationContext

        heads = MigrationContext.configure(conn, opts={"version_table": tables.VERSION_TABLE}).get_current_heads()
        unknown = [rev for rev in heads if rev not in known]
        if unknown:
            try:
                writer = conn.execute(sa.select(tables.store_info.c.nnaudit_version)).scalar()
            except SQLAlchemyError:
                writer = None
            raise StoreError(NEWER_STORE.format(url=self.display, writer=writer or "(a newer version, not recorded)",
                                                revision=unknown[0], ours=__version__, head=head))
        return heads[0] if heads else None

    # -- writing ------------------------------------------------------------------------------------

    def register(self, run_dir: str | os.PathLike[str]) -> RunRecord:
        """Register (or update) the run in ``run_dir``, in one transaction. Returns what was written."""
        record = record_from_run(run_dir)
        _test_hook("register:start")
        self.transaction(lambda conn: self._write(conn, record))
        return record

    def _write(self, conn: sa.Connection, record: RunRecord) -> None:
        row = {name: getattr(record, name) for name in (c.name for c in tables.runs.columns) if name != "registered_at"}
        row["created_at"] = _utc(record.created_at)
        row["finished_at"] = _utc(record.finished_at)
        row["registered_at"] = dt.datetime.now(dt.timezone.utc)
        conn.execute(self._upsert(row))
        _test_hook("register:run")
        conn.execute(sa.delete(tables.metrics).where(tables.metrics.c.run_id == record.run_id))
        conn.execute(sa.delete(tables.findings).where(tables.findings.c.run_id == record.run_id))
        metric_rows = []
        for metric in record.metrics:
            value, special = encode_stored(metric.value)
            metric_rows.append({"run_id": record.run_id, "name": metric.name, "value": value, "special": special,
                                "direction": metric.direction, "headline": metric.headline})
        if metric_rows:
            conn.execute(sa.insert(tables.metrics), metric_rows)
        _test_hook("register:metrics")
        finding_rows = [{"run_id": record.run_id, "position": i, "section": f.section, "severity": f.severity,
                         "message": f.message, "code": f.code, "metric": f.metric}
                        for i, f in enumerate(record.findings)]
        if finding_rows:
            conn.execute(sa.insert(tables.findings), finding_rows)
        _test_hook("register:findings")

    def _upsert(self, row: dict[str, Any]) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if self.backend == "postgresql" else sqlite.insert
        statement = insert(tables.runs).values(**row)
        return statement.on_conflict_do_update(index_elements=[tables.runs.c.run_id],
                                               set_={k: v for k, v in row.items() if k != "run_id"})

    # -- reading ------------------------------------------------------------------------------------

    def runs(self, *, model: str | None = None, verdict: str | None = None, run_ids: Sequence[str] | None = None,
             metrics: Sequence[str] = (), limit: int | None = None) -> list[StoredRun]:
        """Registered runs, oldest first (the ``limit`` newest), with their headline and the ``metrics`` named."""
        runs_t, metrics_t = tables.runs, tables.metrics

        def read(conn: sa.Connection) -> list[StoredRun]:
            query = sa.select(runs_t)
            if model is not None:
                query = query.where(runs_t.c.model_name == model)
            if verdict is not None:
                query = query.where(runs_t.c.verdict == verdict)
            if run_ids is not None:
                query = query.where(runs_t.c.run_id.in_(list(run_ids)))
            query = query.order_by(runs_t.c.created_at.desc(), runs_t.c.registered_at.desc(), runs_t.c.run_id.desc())
            if limit is not None:
                query = query.limit(limit)
            rows = list(conn.execute(query).mappings())[::-1]
            ids = [row["run_id"] for row in rows]
            headline: dict[str, dict[str, tuple[str, float | None]]] = {i: {} for i in ids}
            values: dict[str, dict[str, float | None]] = {i: {} for i in ids}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                wanted = sa.or_(metrics_t.c.headline.is_not(None), metrics_t.c.name.in_(list(metrics)))
                for m in conn.execute(sa.select(metrics_t).where(metrics_t.c.run_id.in_(chunk), wanted)).mappings():
                    value = decode_stored(m["value"], m["special"])
                    if m["headline"] is not None:
                        headline[m["run_id"]][m["headline"]] = (m["name"], value)
                    if m["name"] in metrics:
                        values[m["run_id"]][m["name"]] = value
            return [_stored(row, dict(sorted(headline[row["run_id"]].items(), key=lambda kv: headline_order(kv[0]))),
                            values[row["run_id"]]) for row in rows]

        return self.transaction(read, write=False)

    def get(self, run_id: str) -> StoredRun | None:
        """The run with this id, or with this unique id prefix (at least 6 hex digits); None when none."""
        found = self.runs(run_ids=[run_id])
        if found:
            return found[0]
        if len(run_id) < 6:
            return None

        def by_prefix(conn: sa.Connection) -> list[str]:
            query = sa.select(tables.runs.c.run_id).where(tables.runs.c.run_id.startswith(run_id, autoescape=True))
            return list(conn.execute(query.limit(2)).scalars())

        matches = self.transaction(by_prefix, write=False)
        if len(matches) > 1:
            raise StoreError(f"run id prefix {run_id!r} is ambiguous in the results store {self.display}: give more "
                             "digits")
        return self.runs(run_ids=matches)[0] if matches else None

    def metrics(self, run_id: str) -> dict[str, tuple[float | None, str | None]]:
        """Every metric of a run: name -> (value decoded, direction)."""
        m = tables.metrics
        query = sa.select(m.c.name, m.c.value, m.c.special, m.c.direction).where(m.c.run_id == run_id)
        rows = self.transaction(lambda conn: list(conn.execute(query.order_by(m.c.name))), write=False)
        return {row.name: (decode_stored(row.value, row.special), row.direction) for row in rows}

    def findings(self, run_id: str) -> list[dict[str, Any]]:
        """Every finding of a run, in results order: section, severity, message, code, metric."""
        f = tables.findings
        query = sa.select(f.c.section, f.c.severity, f.c.message, f.c.code, f.c.metric).where(f.c.run_id == run_id)
        rows = self.transaction(lambda conn: list(conn.execute(query.order_by(f.c.position)).mappings()),
                                write=False)
        return [dict(row) for row in rows]

    def model_names(self) -> list[str]:
        query = sa.select(tables.runs.c.model_name).distinct().order_by(tables.runs.c.model_name)
        return self.transaction(lambda conn: list(conn.execute(query).scalars()), write=False)

    def metric_names(self, *, model: str | None = None) -> list[str]:
        query = sa.select(tables.metrics.c.name).distinct()
        if model is not None:
            query = query.join(tables.runs).where(tables.runs.c.model_name == model)
        return self.transaction(lambda conn: sorted(conn.execute(query).scalars()), write=False)


def _stored(row: Any, headline: dict[str, tuple[str, float | None]], values: dict[str, float | None]) -> StoredRun:
    data = {key: _utc(value) for key, value in dict(row).items()}
    return StoredRun(**data, headline=headline, values=values)


def open_store(url: str, *, migrate: bool = True) -> ResultsStore:
    """Open the store at ``url`` (a path or a database URL; normalized), creating or upgrading its schema.

    Raises ``StoreError`` (URL redacted) when it cannot be reached or was made by a newer nnaudit.
    """
    normalized = normalize_store_url(url)
    try:
        store = ResultsStore(normalized)
    except OSError as err:  # a SQLite file whose folder cannot be made
        raise StoreError(UNREACHABLE.format(url=redact_url(normalized), error=scrub(str(err), normalized))) from None
    try:
        if migrate:
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def register_run(url: str, run_dir: str | os.PathLike[str]) -> RunRecord:
    """Open the store, register one run, close it (what ``nnaudit run --store`` does when a run ends)."""
    with open_store(url) as store:
        return store.register(run_dir)


# -- references to runs --------------------------------------------------------------------------------


def resolve_run(store: ResultsStore, ref: str, *, exclude: str | None = None) -> Path:
    """The run directory ``ref`` names: ``latest:NAME`` (the newest run of model NAME), ``latest-pass:NAME`` (the
    newest whose stored verdict is pass) or a run id (or a unique prefix of one). ``exclude``: a run id that
    ``latest...`` never resolves to (the candidate of ``nnaudit compare``, registered before it is compared with
    the latest run that passed: CI registers the candidate first).

    Raises ``StoreError`` naming ``ref`` when it resolves to no run, or when the run's directory is gone or now
    holds another run.
    """
    kind, sep, name = ref.partition(":")
    if sep and kind in ("latest", "latest-pass"):
        if not name:
            raise StoreError(f"{ref!r} names no model: write {kind}:NAME ({REF_FORMS})")
        verdict = "pass" if kind == "latest-pass" else None
        found = [r for r in store.runs(model=name, verdict=verdict, limit=2 if exclude else 1) if r.run_id != exclude]
        if not found:
            what = f"no run of model {name!r}" + (" whose verdict is pass" if verdict else "") + \
                (" other than the candidate" if exclude else "")
            models = store.model_names()
            known = f" (models: {', '.join(models)})" if models else " (it holds no runs yet)"
            raise StoreError(NO_RUN.format(ref=ref, url=store.display, what=what, known=known))
        run = found[-1]
    elif sep:
        raise StoreError(f"{ref!r} is not a run reference: use {REF_FORMS}")
    else:
        got = store.get(ref)
        if got is None:
            raise StoreError(NO_RUN.format(ref=ref, url=store.display, what="no run with this id",
                                           known=f" (use {REF_FORMS}; `nnaudit history` lists the ids)"))
        run = got
    folder = Path(run.run_dir)
    created = run.created_at.isoformat(timespec="seconds")
    model = f"{run.model_name} {run.model_version or ''}".strip()
    if not (folder / RESULTS_FILE).is_file():
        host = run.host + ("" if run.host == socket.gethostname() else ", another machine")
        raise StoreError(DIR_GONE.format(ref=ref, run_id=run.run_id, model=model, created=created,
                                         run_dir=folder, host=host))
    manifest = load_results(folder, validate=False).get("manifest", {})
    other = run_id_of(manifest, folder, run.host)
    if other != run.run_id:
        raise StoreError(DIR_REUSED.format(ref=ref, run_id=run.run_id, run_dir=folder,
                                           other=f"run {other}, started {manifest.get('created_at')}"))
    return folder
