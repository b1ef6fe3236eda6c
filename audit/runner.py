"""The runner: config -> model + data -> sections -> results.json. It writes results only: the caller asks
``reports/`` for report.html (``audit.cli``).

Everything that can be wrong with the config is checked before any section runs. results.json
is rewritten atomically when a section starts and after it ends: a crash loses at most the
section in flight, and the manifest says which one that was.

Lifecycle of a run directory (``manifest.status``): ``running`` while a run writes it (it holds
``.nnaudit.lock``), then ``complete`` (every section ran without error), ``failed`` (every
section ran, at least one errored) or ``interrupted`` (SIGINT/SIGTERM; written before the
process exits). A run killed outright stays ``running`` on disk; readers see from the lock that
its process is gone and show it as incomplete (``audit.runs.run_state``).

A directory that already holds a run is refused unless the caller says what to do with it
(``audit.engine.rundir``): ``overwrite`` (delete its results, report and artifacts first) or ``resume``
(keep every finished section whose fingerprint is unchanged, reload what it left for later sections,
run the rest).

When the run ends, whatever its status, it stores the run verdict (its own gate policy, decided) that
the ``verdict_of`` function it was given builds from the final results: the application passes
``audit.decide.evaluate_verdict``, since the engine does not import the decision layer above it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from audit import __version__
from audit.config import AuditConfig
from audit.engine.rundir import REPORT_FILE, Existing, check_out_dir, clear_run_dir, clear_section_artifacts
from audit.errors import ConfigError
from audit.plugin import SectionPlugin, section_plugin
from audit.results import (
    ARTIFACTS_DIR,
    RESULTS_FILE,
    SCHEMA_VERSION,
    VERDICT_KEY,
    SectionResult,
    _jsonable,
    atomic_write_text,
    dumps,
)

if TYPE_CHECKING:
    from audit.context import AuditContext

log = logging.getLogger("nnaudit")

LIBRARIES = ("torch", "numpy", "scikit-learn", "captum", "shap", "lime", "foolbox", "fairlearn", "streamlit")
CONTEXT_FILE = "context.npz"
# the results dict -> the run verdict record, or None when the run carries no policy
VerdictOf = Callable[[dict[str, Any]], dict[str, Any] | None]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a run was writing; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


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


@contextlib.contextmanager
def _signals(mode: Literal["raise", "ignore"]) -> Iterator[None]:
    """While inside: SIGINT/SIGTERM raise ``Interrupted`` (or are ignored, while the final state is written).

    Only the main thread can set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    handler: Any = interrupt if mode == "raise" else signal.SIG_IGN
    # a signal the parent told us to ignore (nohup, `cmd &` in a script) stays ignored
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


# -- fingerprints and resume ------------------------------------------------------------------


def section_fingerprint(config: AuditConfig, plugin: SectionPlugin, *, model_sha256: str, data_sha256: str,
                        device: str, upstream: list[str]) -> str:
    """sha256 of everything a section's results depend on: a resumed run keeps the section when it is unchanged.

    The model and data configs and hashes, seed, batch size, device, the section's plugin and
    parameters, the nnaudit version, and the fingerprints of the earlier sections it reads.
    """
    settings = config.model_dump(mode="json", exclude={  # what does not change the numbers
        "title": True, "report": True, "sections": True, "device": True, "train_data": True, "gate": True,
        "store": True, "model": {"name", "version"}})
    payload = {"nnaudit": __version__, "settings": settings, "device": device, "section": plugin.section,
               "plugin": plugin.name, "params": plugin.params.model_dump(mode="json"), "model": model_sha256,
               "data": data_sha256, "upstream": upstream}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fingerprints(config: AuditConfig, plugins: list[SectionPlugin], model_sha256: str, data_sha256: str,
                  device: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, plugin in enumerate(plugins):
        upstream = [out[p.section] for p in plugins[:i] if p.name in plugin.reads_sections]
        out[plugin.section] = section_fingerprint(config, plugin, model_sha256=model_sha256, data_sha256=data_sha256,
                                                  device=device, upstream=upstream)
    return out


def plan_resume(previous: dict[str, Any], plugins: list[SectionPlugin], fingerprints: dict[str, str],
                ctx: AuditContext) -> dict[str, SectionResult]:
    """The sections of ``previous`` a resumed run keeps, their saved outputs put back into ``ctx``.

    A section is kept when it finished (ok or skipped) with the same fingerprint, every earlier
    section it reads is kept too, and what it left for later sections can be reloaded.
    """
    from audit.context import OUTPUT_TYPES
    from audit.engine import checkpoint

    old_sections: dict[str, Any] = previous.get("sections", {})
    kept: dict[str, SectionResult] = {}
    for i, plugin in enumerate(plugins):
        old = old_sections.get(plugin.section)
        producers = [p.section for p in plugins[:i] if p.name in plugin.reads_sections]
        reason = None
        if old is None:
            reason = "it did not finish"
        elif old.get("status") == "error":
            reason = "it failed"
        elif old.get("fingerprint") != fingerprints[plugin.section]:
            reason = "its config, model, data, seed or nnaudit version changed"
        elif any(p not in kept for p in producers):
            reason = f"it reads {', '.join(p for p in producers if p not in kept)}, which runs again"
        elif old.get("context"):
            try:
                ctx.restore_outputs(checkpoint.load(ctx.run_dir / old["context"], OUTPUT_TYPES))
            except (OSError, ValueError, KeyError, TypeError) as err:
                reason = f"its saved outputs cannot be read ({err})"
        if reason is None and old is not None:
            kept[plugin.section] = SectionResult.from_dict(old)
        else:
            log.info("resume: '%s' runs again: %s", plugin.section, reason)
    return kept


# -- the run ----------------------------------------------------------------------------------


class Run:
    """One audit run: holds the results as they grow and writes them at every section boundary."""

    def __init__(self, config: AuditConfig, out_dir: Path, *, config_path: Path | None = None,
                 verdict_of: VerdictOf | None = None) -> None:
        self.config = config
        self.verdict_of = verdict_of
        self.out_dir = Path(out_dir)
        self.sections: dict[str, SectionResult] = {}
        self.timings: dict[str, float] = {}
        self.verdict: dict[str, Any] | None = None
        from audit.engine.provenance import git_state, new_run_id

        self.manifest: dict[str, Any] = {
            "nnaudit_version": __version__,
            "run_id": new_run_id(),  # the results store's key: a resumed run keeps it, --overwrite gets a new one
            "created_at": _now(),
            "finished_at": None,
            "status": "running",
            "current_section": None,
            "title": config.title,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "libraries": library_versions(),
            "config": config.model_dump(mode="json"),
            "config_path": str(Path(config_path).resolve()) if config_path is not None else None,
            "git": git_state(Path(config_path).resolve().parent) if config_path is not None else None,
            "model": {},
            "data": {},
            "device": config.device,
            "seed": config.seed,
            "timings": self.timings,
        }

    def to_dict(self) -> dict[str, Any]:
        data = {"schema_version": SCHEMA_VERSION, "manifest": _jsonable(self.manifest),
                "sections": {name: s.to_dict() for name, s in self.sections.items()}}
        if self.verdict is not None:
            data[VERDICT_KEY] = self.verdict
        return data

    def write(self) -> Path:
        path = self.out_dir / RESULTS_FILE
        atomic_write_text(path, dumps(self.to_dict()))
        return path

    def finish(self, status: str, start: float, **extra: Any) -> None:
        """Write the final state (signals ignored meanwhile, so a second Ctrl+C cannot cut it short)."""
        with _signals("ignore"):
            self.manifest.update(status=status, finished_at=_now(), **extra)
            if status in ("complete", "failed"):
                self.manifest["current_section"] = None
            self.timings["total"] = round(time.perf_counter() - start, 4)
            try:
                if self.verdict_of is not None:  # the run's own gate policy, if it carries one
                    self.verdict = self.verdict_of(self.to_dict())
            except ConfigError as err:  # validated with the config, so only a bug gets here: keep the results
                log.warning("the run's gate policy could not be evaluated (%s); no verdict stored", err)
            self.write()


def run_audit(config: AuditConfig, out_dir: Path, *, config_dir: Path | None = None,
              config_path: Path | None = None, existing: Existing = "refuse", backend: Any = None,
              verdict_of: VerdictOf | None = None) -> dict[str, Any]:
    """Run every enabled section and return the results dict (also written to ``out_dir``).

    ``existing`` says what to do when ``out_dir`` already holds a run: refuse (``RunDirError``),
    ``overwrite`` it, or ``resume`` it. SIGINT/SIGTERM raise ``Interrupted`` after results.json
    says ``interrupted``. ``backend`` runs the chunks of chunked sections (``audit.engine.backends``;
    default: in this process). ``verdict_of`` builds the run verdict stored when the run ends
    (``audit.decide.evaluate_verdict``); without it a run carrying a gate policy stores none (readers
    still decide it from the policy in its config). Writes no report: see ``reports.html.write_report``.
    """
    from audit.engine.lock import RunLock

    out = Path(out_dir)
    if config_path is not None and config_dir is None:
        config_dir = Path(config_path).resolve().parent
    with _signals("raise"):
        plugins = build_plugins(config)
        check_out_dir(out, existing)  # fail fast, before loading anything
        created = not out.exists()
        lock = RunLock(out)
        try:
            lock.acquire()
            return _run(config, out, plugins, config_dir=config_dir, config_path=config_path, existing=existing,
                        backend=backend, verdict_of=verdict_of)
        finally:
            lock.release()
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # stopped before writing anything: leave no empty directory behind


def _run(config: AuditConfig, out: Path, plugins: list[SectionPlugin], *, config_dir: Path | None,
         config_path: Path | None, existing: Existing, backend: Any = None,
         verdict_of: VerdictOf | None = None) -> dict[str, Any]:
    from audit.context import AuditContext
    from audit.data import load_data
    from audit.model import Bounds, load_model, resolve_device
    from audit.model.text_load import load_tokenizer
    from audit.preflight import preflight

    start = time.perf_counter()
    previous = check_out_dir(out, existing, holding_lock=True)  # again: it may have changed meanwhile
    device = resolve_device(config.device)
    tokenizer = load_tokenizer(config.model)  # a text model's: the data is tokenized with it
    data = load_data(config.data, seed=config.seed, tokenizer=tokenizer, task=config.model.task)
    default_bounds = None
    if data.modality == "image" and data.lower is not None and data.upper is not None:
        default_bounds = Bounds(float(data.lower.min()), float(data.upper.max()))
    extra = [p for p in (config_dir, Path.cwd()) if p is not None]
    adapter = load_model(config.model, num_classes=data.num_classes, sample=data.x, device=device,
                         batch_size=config.batch_size, default_bounds=default_bounds, extra_paths=extra,
                         tokenizer=tokenizer, task=data.task, task_auto=config.model.task == "auto")
    run = Run(config, out, config_path=config_path, verdict_of=verdict_of)
    run.manifest["model"] = adapter.describe()
    run.manifest["data"] = data.describe()
    run.manifest["device"] = str(device)
    run.timings["load"] = round(time.perf_counter() - start, 4)
    ctx = AuditContext(model=adapter, data=data, run_dir=run.out_dir, seed=config.seed,
                       batch_size=config.batch_size)
    preflight(ctx, plugins)  # data vs model, then each plugin's validate hook: before any work or file
    if config.compile or config.precision != "fp32":
        from audit.engine.execution import prepare_execution

        prepare_execution(ctx, config, plugins)  # compile; keep bf16/fp16 only if robust accuracy holds
        run.manifest["model"] = adapter.describe()
    fingerprints = _fingerprints(config, plugins, run.manifest["model"]["sha256"], run.manifest["data"]["sha256"],
                                 str(device))
    ctx.fingerprints.update(fingerprints)
    if backend is not None:
        ctx.backend = backend
    kept: dict[str, SectionResult] = {}
    if existing == "overwrite":
        clear_run_dir(out)
    elif previous is not None:
        kept = plan_resume(previous, plugins, fingerprints, ctx)
        _carry_over(run, previous, kept)
        if len(kept) < len(plugins):
            (out / REPORT_FILE).unlink(missing_ok=True)  # it shows the previous, unfinished state
    run.write()
    total = len(plugins)
    try:
        for i, plugin in enumerate(plugins, 1):
            if plugin.section in kept:
                ctx.results[plugin.section] = run.sections[plugin.section]
                log.info("[%d/%d] %s kept from the previous run", i, total, plugin.section)
                continue
            _run_section(run, ctx, plugin, fingerprints[plugin.section], f"[{i}/{total}]")
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        run.finish("interrupted", start, interrupted_by=signal.Signals(signum).name)
        raise
    errored = [name for name, s in run.sections.items() if s.status == "error"]
    run.manifest["model"] = adapter.describe()  # now with any out-of-memory back-off of the sections
    run.finish("failed" if errored else "complete", start)
    return run.to_dict()


def _carry_over(run: Run, previous: dict[str, Any], kept: dict[str, SectionResult]) -> None:
    """A resumed run keeps its start time, its resume history and the kept sections with their timings."""
    old = previous.get("manifest", {})
    run.manifest["created_at"] = old.get("created_at", run.manifest["created_at"])
    from audit.engine.provenance import run_id_of

    run.manifest["run_id"] = run_id_of(old, run.out_dir)  # the same run: its id and the commit it started from
    if "git" in old:
        run.manifest["git"] = old["git"]
    run.manifest["resumes"] = [*old.get("resumes", []), {"at": _now(), "kept": list(kept)}]
    old_timings = old.get("timings", {})
    for name, section in kept.items():
        run.sections[name] = section
        run.timings[name] = old_timings.get(name, round(section.duration_s, 4))
    configured = set(run.config.sections)
    for name in previous.get("sections", {}):
        folder = run.out_dir / ARTIFACTS_DIR / name
        if name not in kept and folder.is_dir():
            # it runs again (its finished chunks stay; audit.engine.chunks keeps them only under the same
            # fingerprint) or is no longer in the config
            clear_section_artifacts(folder, keep_chunks=name in configured)


def _run_section(run: Run, ctx: AuditContext, plugin: SectionPlugin, fingerprint: str, counter: str) -> None:
    from audit.context import progress_scope

    name = plugin.section
    # a previous attempt's partial artifacts, but its finished chunks (kept when the fingerprint matches)
    clear_section_artifacts(run.out_dir / ARTIFACTS_DIR / name, keep_chunks=True)
    run.manifest["current_section"] = name
    run.write()
    log.info("%s %s ...", counter, name)
    before = ctx.outputs_snapshot()
    with progress_scope(f"{counter} {name}"):
        result = plugin(ctx)
    result.fingerprint = fingerprint
    if result.status != "error":
        _save_outputs(ctx, result, ctx.outputs_since(before))
    ctx.results[name] = result
    run.sections[name] = result
    run.timings[name] = round(result.duration_s, 4)
    run.manifest["current_section"] = None
    run.write()
    log.info("%s %s %s (%.1f s)", counter, name, _progress_word(result), result.duration_s)


def _save_outputs(ctx: AuditContext, result: SectionResult, outputs: dict[str, dict[str, Any]]) -> None:
    """Save what the section left for later sections, so that a resumed run can keep it."""
    from audit.engine import checkpoint

    if not outputs:
        return
    path, rel = ctx.artifact_path(result.name, CONTEXT_FILE)
    try:
        checkpoint.save(path, outputs)
    except checkpoint.NotPersistable as err:
        result.fingerprint = None  # a resumed run must run it again to rebuild its outputs
        log.warning("section '%s' left outputs that cannot be saved (%s); --resume will run it again", result.name,
                    err)
        return
    result.context = rel


def _progress_word(result: SectionResult) -> str:
    """The progress line's word for a finished section."""
    if result.status == "ok":
        return "ok"
    if result.status == "skipped":
        return "skipped" + (f": {result.notes[-1]}" if result.notes else "")
    message = (result.error or {}).get("message") or "no message recorded"
    return f"ERROR: {message}"
