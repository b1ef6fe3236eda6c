"""``nnaudit card`` (the model card, docs/card.md) and ``nnaudit export mlflow`` (docs/mlflow.md), and the MLflow
export at the end of ``nnaudit run --mlflow``. ``audit.cli`` adds them with ``add_export_commands``.

Start-up stays light: mlflow and the renderers load inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from audit.errors import NNAuditError

EXIT_OK = 0
MLFLOW_HELP = ("log the finished run to MLflow: this tracking URI (sqlite:///mlflow.db, http://host:5000, a folder), "
               "or with no value $MLFLOW_TRACKING_URI / MLflow's default (docs/mlflow.md)")


def cmd_card(args: argparse.Namespace) -> int:
    from audit.results import load_results
    from reports.card import write_card

    load_results(args.run_dir)  # a clear error for a missing or invalid file
    path = write_card(Path(args.run_dir), fmt=args.format, out=Path(args.out) if args.out else None)
    print(f"nnaudit: model card written to {path}")
    return EXIT_OK


def _print_export(exported: Any) -> None:
    print(f"nnaudit: exported to MLflow run {exported.run_id} (experiment {exported.experiment_id}) at "
          f"{exported.tracking_uri}: {exported.n_metrics} metrics, {exported.n_params} params, "
          f"{len(exported.artifacts)} artifacts")


def cmd_export_mlflow(args: argparse.Namespace) -> int:
    from audit.mlflow_export import export_run

    if not args.experiment.strip():
        raise NNAuditError("--experiment is empty; give an MLflow experiment name (default: nnaudit)")
    try:
        exported = export_run(Path(args.run_dir), tracking_uri=args.tracking_uri, experiment=args.experiment)
    except NNAuditError:
        raise
    except Exception as err:  # MLflow's own errors (unreachable server, bad URI, refused values)
        raise NNAuditError(f"MLflow export failed: {type(err).__name__}: {err}") from err
    _print_export(exported)
    return EXIT_OK


def export_at_end(run_dir: Path, tracking_uri: str | None) -> None:
    """``nnaudit run --mlflow``: export the finished run; a failure is reported on stderr, with the command that
    exports it later, and leaves the run and its exit code alone. ``tracking_uri`` None: not asked for."""
    if tracking_uri is None:
        return
    from audit.mlflow_export import DEFAULT_EXPERIMENT, export_run

    uri = tracking_uri or None
    try:
        exported = export_run(run_dir, tracking_uri=uri, experiment=DEFAULT_EXPERIMENT)
    except Exception as err:  # the audit is complete whatever MLflow does
        later = f"nnaudit export mlflow {run_dir}" + (f" --tracking-uri {tracking_uri}" if tracking_uri else "")
        print(f"nnaudit: warning: the MLflow export failed: {type(err).__name__}: {err}\n"
              f"nnaudit: the run itself is complete; export it later with `{later}`", file=sys.stderr)
        return
    print("  mlflow:    ", end="")
    _print_export(exported)


def add_export_commands(sub: Any) -> None:
    """The ``card`` and ``export`` subcommands."""
    card = sub.add_parser("card", help="write the model card of a finished run (Markdown or HTML; docs/card.md)",
                          description="A model card in the sections of Mitchell et al. 2019, filled from the run's "
                          "results.json; the narrative (intended use, ethical considerations, caveats...) comes "
                          "from the config's 'card:' block, and each field left out reads 'not provided'.")
    card.add_argument("run_dir", help="the run directory (or its results.json)")
    card.add_argument("--format", choices=["md", "html"], default="md", help="Markdown (default) or HTML")
    card.add_argument("--out", help="write the card here (default: RUN_DIR/model_card.md or .html)")
    card.set_defaults(func=cmd_card)

    export = sub.add_parser("export", help="export a finished run to another system (mlflow)")
    export_sub = export.add_subparsers(dest="export_target", metavar="TARGET", required=True)
    mlflow = export_sub.add_parser("mlflow", help="log a finished run to MLflow: params, metrics, verdict tags, "
                                   "results.json, report, model card and figures (docs/mlflow.md)")
    mlflow.add_argument("run_dir", help="the run directory (or its results.json)")
    mlflow.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or MLflow's "
                        "default)")
    mlflow.add_argument("--experiment", default="nnaudit", help="MLflow experiment name (default: nnaudit; created "
                        "when missing)")
    mlflow.set_defaults(func=cmd_export_mlflow)
