"""The runner: config -> model + data -> sections -> results.json (+ report.html).

Everything that can be wrong with the config is checked before any section runs. After each
section, results.json is rewritten atomically: a crash loses at most the section in flight.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from audit import __version__
from audit.config import AuditConfig
from audit.errors import ConfigError
from audit.plugin import SectionPlugin, section_plugin
from audit.results import RESULTS_FILE, SCHEMA_VERSION, SectionResult, _jsonable, atomic_write_text, dumps

log = logging.getLogger("nnaudit")

LIBRARIES = ("torch", "numpy", "scikit-learn", "captum", "shap", "lime", "foolbox", "fairlearn", "streamlit")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_out_dir() -> Path:
    return Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def build_plugins(config: AuditConfig) -> list[SectionPlugin]:
    """Instantiate every enabled section (validates plugin names and params before any work)."""
    plugins = [section_plugin(spec.plugin, section=name, params=spec.params)
               for name, spec in config.sections.items() if spec.enabled]
    if not plugins:
        raise ConfigError("sections", "no section enabled; add e.g. 'performance: {}' under 'sections'")
    for i, plugin in enumerate(plugins):
        later = [p for p in plugins[i + 1 :] if p.name in plugin.reads_sections]
        if later:
            raise ConfigError(f"sections.{later[0].section}", f"move '{later[0].section}' above '{plugin.section}': "
                              f"'{plugin.section}' reuses its results, so it must run first")
    return plugins


class Run:
    """One audit run: holds the results as they grow and writes them after every section."""

    def __init__(self, config: AuditConfig, out_dir: Path) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.sections: dict[str, SectionResult] = {}
        self.timings: dict[str, float] = {}
        self.manifest: dict[str, Any] = {
            "nnaudit_version": __version__,
            "created_at": _now(),
            "finished_at": None,
            "status": "running",
            "title": config.title,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "libraries": library_versions(),
            "config": config.model_dump(mode="json"),
            "model": {},
            "data": {},
            "device": config.device,
            "seed": config.seed,
            "timings": self.timings,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "manifest": _jsonable(self.manifest),
                "sections": {name: s.to_dict() for name, s in self.sections.items()}}

    def write(self) -> Path:
        path = self.out_dir / RESULTS_FILE
        atomic_write_text(path, dumps(self.to_dict()))
        return path


def run_audit(config: AuditConfig, out_dir: Path, *, config_dir: Path | None = None) -> dict[str, Any]:
    """Run every enabled section and return the results dict (also written to ``out_dir``)."""
    from audit.context import AuditContext
    from audit.data import load_data
    from audit.model import Bounds, load_model, resolve_device
    from audit.validate import validate_run

    start = time.perf_counter()
    plugins = build_plugins(config)
    device = resolve_device(config.device)
    data = load_data(config.data, seed=config.seed)
    default_bounds = None
    if data.modality == "image" and data.lower is not None and data.upper is not None:
        default_bounds = Bounds(float(data.lower.min()), float(data.upper.max()))
    extra = [p for p in (config_dir, Path.cwd()) if p is not None]
    adapter = load_model(config.model, num_classes=data.num_classes, sample=data.x, device=device,
                         batch_size=config.batch_size, default_bounds=default_bounds, extra_paths=extra)
    ctx = AuditContext(model=adapter, data=data, run_dir=Path(out_dir), seed=config.seed,
                       batch_size=config.batch_size)
    validate_run(ctx, plugins)  # data vs model, then each plugin's validate hook: before any work or file
    run = Run(config, out_dir)
    run.manifest["model"] = adapter.describe()
    run.manifest["data"] = data.describe()
    run.manifest["device"] = str(device)
    run.timings["load"] = round(time.perf_counter() - start, 4)
    run.write()
    total = len(plugins)
    for i, plugin in enumerate(plugins, 1):
        log.info("[%d/%d] %s ...", i, total, plugin.section)
        result = plugin(ctx)
        ctx.results[plugin.section] = result
        run.sections[plugin.section] = result
        run.timings[plugin.section] = round(result.duration_s, 4)
        run.write()
        status = "ok" if result.status == "ok" else f"ERROR: {result.error['message'] if result.error else ''}"
        log.info("[%d/%d] %s %s (%.1f s)", i, total, plugin.section, status, result.duration_s)
    run.timings["total"] = round(time.perf_counter() - start, 4)
    run.manifest["status"] = "complete"
    run.manifest["finished_at"] = _now()
    run.write()
    if config.report:
        from reports.html import write_report

        write_report(run.out_dir)
    return run.to_dict()
