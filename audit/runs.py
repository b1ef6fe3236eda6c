"""A run as its readers see it: its title, how it stands (running, finished, or dead: the lock tells), and
where the runs under a directory are. Reads results.json and the run directory's lock; never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from audit.results import RESULTS_FILE


def run_title(results: Mapping[str, Any]) -> str:
    """The run's title, else "<model kind> on <data name>"."""
    manifest = results.get("manifest", {})
    title = manifest.get("title")
    if title:
        return str(title)
    model = manifest.get("model", {}).get("kind", "model")
    data = manifest.get("data", {}).get("name", "data")
    return f"{model} on {data}"


@dataclass(frozen=True)
class RunState:
    """How a run stands, as readers should show it.

    ``status`` is the stored status, except that a run stored as ``running`` whose process is gone
    (killed, crashed, machine rebooted) reads as ``incomplete``.
    """

    status: Literal["running", "complete", "failed", "interrupted", "incomplete"]
    stored: str
    reason: str
    never_ran: tuple[str, ...] = ()
    in_flight: str | None = None
    errored: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Every planned section ran (some may have errored)."""
        return self.status in ("complete", "failed")


def planned_sections(data: dict[str, Any]) -> list[str] | None:
    """The enabled sections of the run's config, in order; None when the manifest does not say."""
    manifest = data.get("manifest")
    config = manifest.get("config") if isinstance(manifest, dict) else None
    sections = config.get("sections") if isinstance(config, dict) else None
    if not isinstance(sections, dict):
        return None
    return [str(name) for name, spec in sections.items()
            if not (isinstance(spec, dict) and spec.get("enabled", True) is False)]


def run_state(data: dict[str, Any], run_dir: str | os.PathLike[str] | None = None) -> RunState:
    """The state of a run from its results (and its directory's lock, to tell a live run from a dead one)."""
    manifest: dict[str, Any] = data["manifest"] if isinstance(data.get("manifest"), dict) else {}
    stored = str(manifest.get("status", "complete"))
    sections = data.get("sections", {}) if isinstance(data.get("sections"), dict) else {}
    planned = planned_sections(data) or []
    never_ran = tuple(name for name in planned if name not in sections)
    errored = tuple(name for name, s in sections.items() if isinstance(s, dict) and s.get("status") == "error")
    in_flight = manifest.get("current_section") if stored != "complete" else None
    in_flight = in_flight if isinstance(in_flight, str) and in_flight not in sections else None
    where = f" while '{in_flight}' ran" if in_flight else ""
    if stored == "complete":
        return RunState("complete", stored, "every section ran", never_ran, None, errored)
    if stored == "failed":
        return RunState("failed", stored, f"{len(errored)} section(s) failed: {', '.join(errored)}", never_ran,
                        None, errored)
    if stored == "interrupted":
        by = manifest.get("interrupted_by") or "a signal"
        return RunState("interrupted", stored, f"stopped by {by}{where}", never_ran, in_flight, errored)
    if run_dir is None:
        return RunState("running", stored, "stored as running; no run directory to check whether it still runs",
                        never_ran, in_flight, errored)
    from audit.engine.lock import inspect_lock

    lock = inspect_lock(run_dir)
    if lock.state == "held":
        return RunState("running", stored, f"running ({lock.holder}){where.replace('ran', 'runs')}", never_ran,
                        in_flight, errored)
    if lock.state == "stale":
        reason = f"the process that wrote it ({lock.holder}) stopped without finishing{where}"
    else:
        reason = f"no process is writing it and it never finished{where}"
    return RunState("incomplete", stored, reason + " (killed or crashed)", never_ran, in_flight, errored)


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Run directories (those holding results.json) under ``root``, newest first."""
    base = Path(root)
    if (base / RESULTS_FILE).exists():
        return [base]
    if not base.is_dir():
        return []
    runs = [p.parent for p in base.rglob(RESULTS_FILE)]
    return sorted(runs, key=lambda p: (p / RESULTS_FILE).stat().st_mtime, reverse=True)
