"""Export a finished run to MLflow (``nnaudit export mlflow RUN_DIR``, ``nnaudit run --mlflow``; docs/mlflow.md).

One MLflow run per audit: the config flattened into parameters, every numeric metric, the verdict and status
as tags, and results.json, report.html, the model card and the report's figures (PNG) as artifacts.

MLflow allows metric and parameter keys of at most 250 characters made of letters, digits, ``_ - . / :`` and
spaces (no colon on Windows), that are not paths resolving elsewhere; nnaudit's names carry ``=`` and ``&``
(``robustness.worst_case.linf.eps=0.05.robust_accuracy``). ``mlflow_key`` replaces every other character with
``_`` (and ``/`` and ``:`` too, so a key is the same on every platform); two names that would meet get the second
a suffix of its own hash, so nothing is merged, and ``metric_keys.json`` (an artifact) maps every MLflow key back
to the nnaudit name and lists the metrics not logged (values the audit could not compute). Parameter values over
MLflow's 6,000 characters are cut and listed there too. mlflow is imported here only (``pip install
"nnaudit[mlflow]"``). Part of the application layer: it asks ``reports`` for the card and the figures.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import NNAuditError

MAX_KEY = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
MAX_PARAM_VALUE = 6000  # MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000  # MAX_TAG_VAL_LENGTH
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000  # MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH
DEFAULT_EXPERIMENT = "nnaudit"
KEY_MAP_FILE = "metric_keys.json"
NO_MLFLOW = ('MLflow export needs the mlflow package: pip install "nnaudit[mlflow]" (or pip install mlflow)')
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- ]")


@dataclass
class KeyMap:
    """nnaudit names -> MLflow keys, unique, for one kind of entity (metrics or params)."""

    keys: dict[str, str] = field(default_factory=dict)  # MLflow key -> nnaudit name

    def add(self, name: str) -> str:
        key = mlflow_key(name)
        if key in self.keys and self.keys[key] != name:
            digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
            key = f"{key[: MAX_KEY - 9]}_{digest}"
        self.keys[key] = name
        return key


def mlflow_key(name: str) -> str:
    """``name`` as a key MLflow accepts on every platform (see the module docstring); not yet unique."""
    key = _UNSAFE.sub("_", name).strip() or "_"
    if key.startswith("."):
        key = "_" + key
    if len(key) > MAX_KEY:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        key = f"{key[: MAX_KEY - 9]}_{digest}"
    return key


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as dotted keys with text values (lists and empty mappings as JSON; None left out)."""
    out: dict[str, str] = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, key + "."))
        elif value is None:
            continue
        elif isinstance(value, str):
            out[key] = value
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
    return out


@dataclass(frozen=True)
class MlflowPayload:
    """What goes to MLflow for one run: params, metrics and tags by MLflow key, and the key map artifact."""

    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    key_map: dict[str, Any]
    run_name: str


def payload(results: Mapping[str, Any]) -> MlflowPayload:
    """The params, metrics and tags of ``results`` (pure: no MLflow needed)."""
    from audit.engine.store_record import model_identity, stored_verdict
    from audit.results import decode_number

    manifest = results.get("manifest", {})
    params_map, metrics_map = KeyMap(), KeyMap()
    params: dict[str, str] = {}
    truncated = []
    for name, value in flatten_config(manifest.get("config", {}) or {}).items():
        if len(value) > MAX_PARAM_VALUE:
            truncated.append(name)
            value = value[: MAX_PARAM_VALUE - 1] + "…"
        params[params_map.add(name)] = value
    metrics: dict[str, float] = {}
    not_logged: dict[str, str] = {}
    for section in results.get("sections", {}).values():
        for metric, raw in (section.get("metrics") or {}).items():
            number = decode_number(raw)
            if number is None or math.isnan(number):
                not_logged[metric] = "not computed (null in results.json)"
                continue
            metrics[metrics_map.add(metric)] = float(number)
    model_name, version, _, _, _ = model_identity(manifest)
    record = results.get("verdict")
    record = record if isinstance(record, Mapping) else {}
    tags = {"nnaudit.verdict": stored_verdict(results), "nnaudit.status": str(manifest.get("status", "")),
            "nnaudit.run_id": str(manifest.get("run_id", "")), "nnaudit.model_name": model_name,
            "nnaudit.model_version": version or "", "nnaudit.version": str(manifest.get("nnaudit_version", "")),
            "nnaudit.model_sha256": str((manifest.get("model") or {}).get("sha256", "")),
            "nnaudit.data_sha256": str((manifest.get("data") or {}).get("sha256", "")),
            "nnaudit.data": str((manifest.get("data") or {}).get("name", "")),
            "nnaudit.seed": str(manifest.get("seed", ""))}
    checks = [c for c in record.get("checks", []) if isinstance(c, Mapping)]
    if checks:
        tags["nnaudit.checks_passed"] = f"{sum(c.get('status') == 'pass' for c in checks)} of {len(checks)}"
        waived = sum(c.get("status") == "waived" for c in checks)
        if waived:
            tags["nnaudit.checks_waived"] = str(waived)
    ungated = record.get("ungated_findings")
    if isinstance(ungated, Mapping):
        for severity, count in ungated.items():
            tags[f"nnaudit.ungated_{mlflow_key(str(severity))}"] = str(count)
    tags = {key: value[:MAX_TAG_VALUE] for key, value in tags.items() if value}
    key_map = {"metrics": metrics_map.keys, "params": params_map.keys, "not_logged": not_logged,
               "truncated_params": truncated}
    title = str(manifest.get("title") or model_name)
    return MlflowPayload(params=params, metrics=metrics, tags=tags, key_map=key_map, run_name=title)


@dataclass(frozen=True)
class Exported:
    run_id: str
    experiment_id: str
    tracking_uri: str
    n_metrics: int
    n_params: int
    artifacts: tuple[str, ...]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _write_artifacts(folder: Path, run_dir: Path, results: Mapping[str, Any], key_map: Mapping[str, Any]) -> None:
    """The files of the MLflow run, laid out in ``folder``: results.json, report.html, model card, figures."""
    import shutil

    from reports.card import render_card
    from reports.figures import figure_png
    from reports.views import slugify

    shutil.copy2(run_dir / "results.json", folder / "results.json")
    if (run_dir / "report.html").is_file():
        shutil.copy2(run_dir / "report.html", folder / "report.html")
    (folder / KEY_MAP_FILE).write_text(json.dumps(key_map, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "model_card.md").write_text(render_card(results, fmt="md", run_dir=run_dir), encoding="utf-8")
    for section_name, section in results.get("sections", {}).items():
        for spec in section.get("figures", []) or []:
            if spec.get("kind") == "tree":
                continue  # a nested list in the report, not a picture
            target = folder / "figures" / slugify(section_name) / f"{slugify(str(spec.get('name', 'figure')))}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(figure_png(spec, run_dir))


def export_run(run_dir: str | os.PathLike[str], *, tracking_uri: str | None = None,
               experiment: str = DEFAULT_EXPERIMENT) -> Exported:
    """Log the finished run in ``run_dir`` to MLflow; ``tracking_uri`` None: MLflow's own default
    ($MLFLOW_TRACKING_URI). Raises ``NNAuditError`` when mlflow is missing or the run cannot be read, and lets
    MLflow's own errors through (the caller reports them)."""
    from audit.results import load_results, resolve_results_path

    results_file = resolve_results_path(run_dir)
    folder = results_file.parent
    results = load_results(results_file, validate=True)
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise NNAuditError(NO_MLFLOW) from err
    data = payload(results)
    client = MlflowClient(tracking_uri=tracking_uri or None)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=data.run_name, tags=data.tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        for batch in _chunks([Param(k, v) for k, v in data.params.items()], PARAMS_PER_BATCH):
            client.log_batch(run_id, params=batch)
        for batch in _chunks([Metric(k, v, now, 0) for k, v in data.metrics.items()], METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=batch)
        client.log_batch(run_id, tags=[RunTag("nnaudit.run_dir", str(folder.resolve())[:MAX_TAG_VALUE])])
        with tempfile.TemporaryDirectory(prefix="nnaudit-mlflow-") as tmp:
            _write_artifacts(Path(tmp), folder, results, data.key_map)
            client.log_artifacts(run_id, tmp)
            artifacts = tuple(sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file()))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return Exported(run_id=run_id, experiment_id=experiment_id, tracking_uri=client.tracking_uri,
                    n_metrics=len(data.metrics), n_params=len(data.params), artifacts=artifacts)
