"""What the results store keeps of a run, read from its results.json (no database here).

``record_from_run(run_dir)`` returns a ``RunRecord``: the model's name and version, title, data
and model hashes, seed, status, the stored verdict, every metric (with its direction and, for
the few headline metrics, a label), every finding, where the run directory lives, the times,
and the nnaudit and results schema versions. ``headline_metrics`` is the one place that says
which metrics are the headline. ``StoredRun`` is a run as the store lists it back.

Model name: ``model.name`` of the config, else the config file's name without its suffix
(``configs/digits-cnn.yaml`` -> ``digits-cnn``), else the run's title. Model version:
``model.version``, else the git commit recorded when the run started (``manifest.git``, with a
``dirty`` flag), else none.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.engine.provenance import run_id_of
from audit.errors import ResultsError, StoreError
from audit.keys import parse_metric_key
from audit.results import POSITIVE_INFINITY, all_directions, all_metrics, encode_number, load_results
from audit.runs import run_state

NOT_GATED = "not_gated"
VERDICTS = ("pass", "fail", "error", NOT_GATED)
STILL_RUNNING = ("{run_dir} is still running ({reason}); it is registered when it ends (or run "
                 "`nnaudit store import {run_dir}` then)")

# -- the headline: which metrics a history shows by default ---------------------------------------

ACCURACY = "performance.accuracy"
RELIABLE = "robustness.reliable"
WORST_CASE = ("robustness", "worst_case", None, "eps=", "robust_accuracy")  # parse_metric_key(...).matches
DISPARITIES = ("demographic_parity_difference", "equalized_odds_difference")
WORST_DISPARITY = "worst disparity"


def headline_metrics(metrics: Mapping[str, float | None]) -> dict[str, str]:
    """The headline metrics of a run: metric name -> its label in a history, in this order:

    - ``performance.accuracy`` ("accuracy");
    - every ``robustness.worst_case.<norm>.eps=<eps>.robust_accuracy`` ("robust <norm> eps=<eps>");
    - ``robustness.reliable`` ("reliable");
    - the largest fairness difference, over every grouping's ``demographic_parity_difference`` and
      ``equalized_odds_difference`` ("worst disparity"; a NaN one is never the worst).
    """
    out: dict[str, str] = {}
    if ACCURACY in metrics:
        out[ACCURACY] = "accuracy"
    for name in metrics:
        match = parse_metric_key(name).matches(*WORST_CASE)
        if match is not None:
            out[name] = f"robust {match['2']} eps={match['eps']}"
    if RELIABLE in metrics:
        out[RELIABLE] = "reliable"
    disparities = [(value, name) for name, value in metrics.items()
                   if _overall_disparity(name) and value is not None and not math.isnan(value)]
    if disparities:
        out[max(disparities)[1]] = WORST_DISPARITY
    return out


def _overall_disparity(name: str) -> bool:
    """A grouping's demographic-parity or equalized-odds difference over all its groups (not per group or class)."""
    key = parse_metric_key(name)
    return (key.section == "fairness" and len(key.segments) >= 3 and key.name in DISPARITIES
            and not {"group", "class"} & key.qualifiers.keys())


def headline_order(label: str) -> tuple[int, str, float, str]:
    """Sort key of headline labels: accuracy, robust accuracy by norm and eps, reliable, worst disparity."""
    if label.startswith("robust "):
        norm, _, eps = label[len("robust "):].partition(" eps=")
        try:
            number = float(eps)
        except ValueError:
            number = math.inf
        return 1, norm, number, eps
    rank = {"accuracy": 0, "reliable": 2, WORST_DISPARITY: 3}.get(label, 4)
    return rank, "", 0.0, label


# -- the record -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRecord:
    name: str
    value: float | None  # decoded: +/-inf as floats, None for NaN ("could not compute")
    direction: str | None
    headline: str | None  # the label when it is a headline metric


@dataclass(frozen=True)
class FindingRecord:
    section: str
    severity: str
    message: str
    code: str | None
    metric: str | None


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    model_name: str
    model_version: str | None
    version_source: str | None  # "config", "git" or None
    git_commit: str | None
    git_dirty: bool | None
    title: str
    data_name: str | None
    data_sha256: str | None
    model_sha256: str | None
    seed: int | None
    status: str  # complete, failed, interrupted, incomplete (killed)
    verdict: str
    run_dir: str
    host: str
    config_path: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    nnaudit_version: str
    schema_version: str
    metrics: tuple[MetricRecord, ...]
    findings: tuple[FindingRecord, ...]


@dataclass(frozen=True)
class StoredRun:
    """A run as the store lists it. ``headline``: label -> (metric, value); ``values``: the metrics asked for."""

    run_id: str
    model_name: str
    model_version: str | None
    version_source: str | None
    git_commit: str | None
    git_dirty: bool | None
    title: str
    data_name: str | None
    data_sha256: str | None
    model_sha256: str | None
    seed: int | None
    status: str
    verdict: str
    run_dir: str
    host: str
    config_path: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    registered_at: dt.datetime
    nnaudit_version: str
    schema_version: str
    headline: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    values: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601 UTC, numbers encoded as in results.json (inf "Infinity", NaN null)."""
        out: dict[str, Any] = {}
        for key in ("run_id", "model_name", "model_version", "version_source", "git_commit", "git_dirty", "title",
                    "data_name", "data_sha256", "model_sha256", "seed", "status", "verdict", "run_dir", "host",
                    "config_path", "nnaudit_version", "schema_version"):
            out[key] = getattr(self, key)
        for key in ("created_at", "finished_at", "registered_at"):
            value = getattr(self, key)
            out[key] = value.isoformat(timespec="seconds") if value is not None else None
        out["headline"] = {label: {"metric": metric, "value": encode_number(value)}
                           for label, (metric, value) in self.headline.items()}
        out["metrics"] = {name: encode_number(value) for name, value in self.values.items()}
        return out


def parse_time(text: Any) -> dt.datetime | None:
    """An ISO 8601 time from results.json as an aware UTC datetime (a naive one is taken as UTC)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def stored_verdict(results: Mapping[str, Any]) -> str:
    """results.json's ``verdict.status`` (pass, fail, error), or ``not_gated`` without one."""
    record = results.get("verdict")
    status = record.get("status") if isinstance(record, Mapping) else None
    return status if status in VERDICTS else NOT_GATED


def model_identity(manifest: Mapping[str, Any]) -> tuple[str, str | None, str | None, str | None, bool | None]:
    """(name, version, version source, git commit, git dirty) of a run's model; see the module docstring."""
    model = _mapping(_mapping(manifest.get("config")).get("model"))
    name = model.get("name")
    if not isinstance(name, str) or not name:
        config_path = manifest.get("config_path")
        name = Path(config_path).stem if isinstance(config_path, str) and config_path else None
    if not name:
        title = manifest.get("title")
        name = title if isinstance(title, str) and title else "unnamed"
    git = _mapping(manifest.get("git"))
    commit = git.get("commit") if isinstance(git.get("commit"), str) else None
    dirty = git.get("dirty") if isinstance(git.get("dirty"), bool) else None
    version = model.get("version")
    if isinstance(version, str) and version:
        return name, version, "config", commit, dirty
    if commit:
        return name, commit[:12] + ("-dirty" if dirty else ""), "git", commit, dirty
    return name, None, None, None, None


def record_from_run(run_dir: str | os.PathLike[str], *, host: str | None = None) -> RunRecord:
    """Everything the store keeps of the run in ``run_dir``. Raises ``StoreError`` for a run still running
    and for a results file that cannot be read."""
    folder = Path(run_dir).resolve()
    try:
        results = load_results(folder, validate=True)
    except ResultsError as err:
        raise StoreError(f"cannot register {folder}: {err}") from err
    state = run_state(results, folder)
    if state.status == "running":
        raise StoreError(STILL_RUNNING.format(run_dir=folder, reason=state.reason))
    manifest: dict[str, Any] = results["manifest"]
    host = host or socket.gethostname()
    name, version, source, commit, dirty = model_identity(manifest)
    metrics = all_metrics(results)
    directions = all_directions(results)
    headline = headline_metrics(metrics)
    created = parse_time(manifest.get("created_at"))
    if created is None:
        raise StoreError(f"cannot register {folder}: its manifest has no valid created_at "
                         f"({manifest.get('created_at')!r})")
    findings = tuple(FindingRecord(section=str(section_name), severity=str(f.get("severity")),
                                   message=str(f.get("message", "")), code=f.get("code"), metric=f.get("metric"))
                     for section_name, section in results.get("sections", {}).items()
                     for f in section.get("findings", []))
    seed = manifest.get("seed")
    data, model = _mapping(manifest.get("data")), _mapping(manifest.get("model"))
    return RunRecord(
        run_id=run_id_of(manifest, folder, host), model_name=name, model_version=version, version_source=source,
        git_commit=commit, git_dirty=dirty, title=str(manifest.get("title") or ""), data_name=_text(data.get("name")),
        data_sha256=_text(data.get("sha256")), model_sha256=_text(model.get("sha256")),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        status=state.status, verdict=stored_verdict(results), run_dir=str(folder), host=host,
        config_path=_text(manifest.get("config_path")), created_at=created,
        finished_at=parse_time(manifest.get("finished_at")),
        nnaudit_version=str(manifest.get("nnaudit_version", "")), schema_version=str(results["schema_version"]),
        metrics=tuple(MetricRecord(name, value, directions.get(name), headline.get(name))
                      for name, value in metrics.items()),
        findings=findings)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def encode_stored(value: float | None) -> tuple[float | None, str | None]:
    """A metric as two columns, encoded as in results.json: (finite value, None), (None, "Infinity" /
    "-Infinity"), or (None, None) for NaN ("could not compute")."""
    if value is None or math.isnan(value):
        return None, None
    if math.isinf(value):
        return None, POSITIVE_INFINITY if value > 0 else "-" + POSITIVE_INFINITY
    return float(value), None


def decode_stored(value: float | None, special: str | None) -> float | None:
    """The inverse of ``encode_stored``."""
    if special is not None:
        return math.inf if special == POSITIVE_INFINITY else -math.inf
    return None if value is None else float(value)
