"""The contract check for section plugins: ``check_section``."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from audit.keys import parse_metric_key
from audit.plugin import SECTIONS_GROUP, SectionPlugin, available, load_plugin
from audit.results import SCHEMA_VERSION, SectionResult, validate_results
from audit.testing.checks import Report, _fail
from audit.testing.problem import Problem, tiny_problem


def _document(result: SectionResult, problem: Problem, seed: int) -> dict[str, Any]:
    """A whole results document holding one section result, as the runner writes it."""
    return {"schema_version": SCHEMA_VERSION,
            "manifest": {"nnaudit_version": "conformance", "created_at": "2026-01-01T00:00:00+00:00",
                         "status": "complete", "libraries": {}, "config": {}, "model": problem.adapter.describe(),
                         "data": problem.data.describe(), "device": "cpu", "seed": seed, "timings": {}},
            "sections": {result.name: result.to_dict()}}


def check_section(section: type, *, params: dict[str, Any] | None = None, modality: str = "image",
                  seed: int = 0, run_dir: str | Path | None = None, problem: Problem | None = None,
                  prior_params: dict[str, dict[str, Any]] | None = None) -> Report:
    """A section plugin (a ``audit.plugin.SectionPlugin`` subclass) honours the contract:

    - it has a docstring (``nnaudit plugins`` shows its first line) and keeps the base class's final
      ``__call__``, so an exception inside it becomes a recorded error (``status: error``), never a crash;
    - with ``params`` (default: its defaults) it runs on ``tiny_problem(modality)``: ``ok``, or ``skipped``
      with a note saying why; the sections it reads (``reads_sections``) run first when installed, with their
      ``prior_params`` (section name -> parameters; default: their defaults);
    - its result serialises to strict JSON (no NaN/inf) and validates against the results schema;
    - its metric keys start with the section's name and parse with ``audit.keys.parse_metric_key``;
    - two runs with the same seed give the same metrics and findings;
    - it prints nothing to stdout (progress goes through ``ctx.progress``, messages through logging).
    """
    name = str(getattr(section, "name", getattr(section, "__name__", section)))
    if not (isinstance(section, type) and issubclass(section, SectionPlugin)):
        raise _fail("section", name, "is not a subclass of audit.plugin.SectionPlugin")
    report = Report(name, "section")
    if not section.__doc__:
        raise _fail("section", name, "needs a docstring (nnaudit plugins shows its first line)")
    if section.__call__ is not SectionPlugin.__call__:
        raise _fail("section", name, "overrides __call__: write run(ctx, result) and let the base class capture "
                                     "errors, seed and time the section")
    problem = problem or tiny_problem(modality, n=24, seed=seed)
    runs = []
    with tempfile.TemporaryDirectory() if run_dir is None else contextlib.nullcontext(str(run_dir)) as folder:
        for attempt in range(2):
            ctx = problem.context(Path(folder) / f"run{attempt}", seed=seed)
            for prior in section.reads_sections:
                if prior in available(SECTIONS_GROUP):
                    ctx.results[prior] = load_plugin(prior, SECTIONS_GROUP)(**(prior_params or {}).get(prior, {}))(ctx)
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                result = section(**(params or {}))(ctx)
            if stdout.getvalue():
                raise _fail("section", name, f"printed to stdout: {stdout.getvalue()[:200]!r}; use logging or "
                                             "ctx.progress")
            if result.status not in ("ok", "skipped"):
                raise _fail("section", name, f"ended with status {result.status}: {result.error}")
            if result.status == "skipped" and not result.notes:
                raise _fail("section", name, "was skipped without a note saying why")
            try:
                validate_results(json.loads(json.dumps(_document(result, problem, seed), allow_nan=False)))
            except (ValueError, Exception) as err:
                raise _fail("section", name, f"its result does not validate against the results schema: {err}") \
                    from err
            for key in result.metrics:
                if parse_metric_key(key).section != result.name:
                    raise _fail("section", name, f"metric {key!r} does not start with the section's name")
            runs.append(result.to_dict())
    first, second = runs
    if first["metrics"] != second["metrics"] or \
            [f["message"] for f in first["findings"]] != [f["message"] for f in second["findings"]]:
        raise _fail("section", name, f"not deterministic for seed {seed}: two runs gave different metrics or "
                                     "findings; draw randomness from ctx.seed")
    report.passed += [f"{first['status']} on {modality} data", "valid results", "deterministic for a seed",
                      "prints nothing", "errors captured by the base class"]
    return report

