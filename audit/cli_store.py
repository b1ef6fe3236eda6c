"""The results store's commands: ``nnaudit run --store`` (registration when a run ends), ``nnaudit store import``
and ``nnaudit history`` (docs/store.md). ``audit.cli`` adds them with ``add_store_commands``.

Start-up stays light: the store (SQLAlchemy, Alembic) loads inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from audit.errors import NNAuditError

EXIT_OK = 0

STORE_HELP = "results store: a SQLite file or a postgresql+psycopg:// URL (password from PGPASSWORD; docs/store.md)"
NO_STORE = "no results store: pass --store URL (a SQLite file or postgresql+psycopg://...) or set NNAUDIT_STORE"


def run_store(cli_value: str | None, config_value: str | None, config_path: Path | None) -> str | None:
    """The store a run registers in (--store, $NNAUDIT_STORE, config 'store:'); a malformed URL stops before the
    run."""
    from audit.engine.store_url import configured_store

    return configured_store(cli_value, config_value,
                            config_dir=Path(config_path).resolve().parent if config_path is not None else None)


def register_run_at_end(run_dir: Path, url: str | None) -> None:
    """Register a finished run; a store that fails is reported on stderr and leaves the exit code alone."""
    if url is None:
        return
    from audit.engine.store import register_run
    from audit.engine.store_url import redact_url

    try:
        record = register_run(url, run_dir)
    except NNAuditError as err:
        print(f"nnaudit: warning: the run was not registered in the results store: {err}\n"
              f"nnaudit: the run itself is complete; register it later with "
              f"`nnaudit store import {run_dir} --store {redact_url(url)}`", file=sys.stderr)
        return
    version = f" {record.model_version}" if record.model_version else ""
    print(f"  store:     registered run {record.run_id} ({record.model_name}{version}) in {redact_url(url)}")


def _store_url(args: argparse.Namespace) -> str:
    from audit.engine.store_url import configured_store

    url = configured_store(args.store)
    if url is None:
        raise NNAuditError(NO_STORE)
    return url


def cmd_store_import(args: argparse.Namespace) -> int:
    """Register runs made before: each DIR is a run directory or a folder of runs. Exit 0 all registered, 1 some
    could not be (each named), 2 the store cannot be used or no run was found."""
    from audit.engine.store import open_store
    from audit.errors import StoreError
    from audit.runs import find_runs

    runs: list[Path] = []
    for item in args.dirs:
        found = find_runs(item)
        if not found:
            raise NNAuditError(f"no run directory (holding results.json) in {item}")
        runs += [run for run in reversed(found) if run not in runs]  # oldest first
    failed = 0
    with open_store(_store_url(args)) as store:
        for run in runs:
            try:
                record = store.register(run)
            except StoreError as err:
                failed += 1
                print(f"nnaudit: not registered: {err}", file=sys.stderr)
                continue
            version = f" {record.model_version}" if record.model_version else ""
            print(f"registered {record.run_id}  {record.model_name}{version}  seed {record.seed}  {record.status}  "
                  f"verdict {record.verdict}  {record.run_dir}")
        print(f"nnaudit: {len(runs) - failed} of {len(runs)} run(s) registered in {store.display}")
    return 1 if failed else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    import difflib
    import json

    from audit.engine.store import open_store
    from reports.history import history_table

    if args.limit is not None and args.limit <= 0:
        raise NNAuditError("--limit must be a positive number of runs")
    with open_store(_store_url(args)) as store:
        if args.model is not None and args.model not in store.model_names():
            close = difflib.get_close_matches(args.model, store.model_names(), n=3)
            raise NNAuditError(f"--model {args.model!r}: no run of this model in {store.display}"
                               + (f"; did you mean {', '.join(close)}?" if close else
                                  f" (models: {', '.join(store.model_names()) or 'none yet'})"))
        if args.metric is not None:
            names = store.metric_names(model=args.model)
            if args.metric not in names:
                close = difflib.get_close_matches(args.metric, names, n=3, cutoff=0.5)
                raise NNAuditError(f"--metric {args.metric!r}: no run{' of ' + args.model if args.model else ''} "
                                   f"in the store has this metric" + (f"; did you mean {', '.join(close)}?"
                                                                      if close else ""))
        runs = store.runs(model=args.model, metrics=[args.metric] if args.metric else (), limit=args.limit)
        display = store.display
    data = [run.to_dict() for run in runs]
    if args.json:
        print(json.dumps(data, indent=2, allow_nan=False))
    elif not data:
        print(f"nnaudit: no runs in {display} yet: `nnaudit run CONFIG --store URL` registers one")
    else:
        print(history_table(data, args.metric))
    return EXIT_OK


def add_store_commands(sub: Any) -> None:
    """The ``store`` and ``history`` subcommands."""
    store = sub.add_parser("store", help="manage the results store (docs/store.md)")
    store_sub = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    imp = store_sub.add_parser("import", help="register runs made before: run directories or folders of runs",
                               description="Exit codes: 0 every run registered; 1 some could not be (each is named); "
                               "2 the store cannot be used, or no run was found.")
    imp.add_argument("dirs", nargs="+", metavar="DIR", help="a run directory, or a folder searched for runs")
    imp.add_argument("--store", help=STORE_HELP + " (default: $NNAUDIT_STORE)")
    imp.set_defaults(func=cmd_store_import)

    history = sub.add_parser("history", help="list the runs of a results store over time, with verdict and headline",
                             description="Runs oldest first (the newest last): time, model name and version, seed, "
                             "status, verdict, and the headline metrics (or --metric).")
    history.add_argument("--store", help=STORE_HELP + " (default: $NNAUDIT_STORE)")
    history.add_argument("--model", help="only the runs of this model name")
    history.add_argument("--metric", help="show this metric instead of the headline, e.g. performance.accuracy")
    history.add_argument("--limit", type=int, help="only the N newest runs")
    history.add_argument("--json", action="store_true", help="print the runs as JSON")
    history.set_defaults(func=cmd_history)
