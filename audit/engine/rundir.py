"""The run directory: whether a run may write it, and clearing what a run wrote. Reads and deletes files only.

A directory that already holds a run is refused unless the caller says what to do with it:
``overwrite`` (delete its results, report and artifacts first) or ``resume`` (keep every finished
section whose fingerprint is unchanged: ``audit.runner``). A live run (one holding the directory's
``.nnaudit.lock``) is never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from audit.errors import ResultsError, RunDirError
from audit.results import ARTIFACTS_DIR, RESULTS_FILE, load_results

REPORT_FILE = "report.html"  # written by reports.html (the CLI asks for it); a run only ever deletes it
Existing = Literal["refuse", "overwrite", "resume"]

# -- run directory errors (RunDirError); tests match these ------------------------------------
ALREADY_A_RUN = ("{out} already holds an audit ({what}); pass --overwrite to replace it (deletes its results.json, "
                 "report.html and artifacts/), --resume to keep its finished sections and run the rest, or choose "
                 "another --out")
LEFTOVERS = ("{out} holds {found} but no results.json; pass --overwrite to clear them, or choose another --out")
NOT_A_DIRECTORY = "--out {out} is a file, not a directory; choose a directory for the run"
NOTHING_TO_RESUME = ("nothing to resume in {out}: it has no results.json; start the run with "
                     "`nnaudit run CONFIG --out {out}`")
CANNOT_RESUME = "cannot resume {out}: {error}; start it again with --overwrite"


def check_out_dir(out_dir: Path, existing: Existing, *, holding_lock: bool = False) -> dict[str, Any] | None:
    """Whether a run may write ``out_dir``; reads only. Returns the previous results when resuming.

    Raises ``RunDirError`` when a live run holds the directory, when it holds a run and neither
    overwrite nor resume was asked for, or when there is nothing to resume.
    """
    from audit.engine.lock import inspect_lock

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(NOT_A_DIRECTORY.format(out=out))
    lock = inspect_lock(out)
    if lock.state == "held" and not holding_lock:
        from audit.engine.lock import LOCKED

        raise RunDirError(LOCKED.format(run_dir=out, pid=lock.pid if lock.pid is not None else "?",
                                        host=lock.host or "?", started=lock.started_at or "at an unknown time"))
    results = out / RESULTS_FILE
    if existing == "resume":
        if not results.exists():
            raise RunDirError(NOTHING_TO_RESUME.format(out=out))
        try:
            return load_results(results, validate=True)
        except ResultsError as err:
            raise RunDirError(CANNOT_RESUME.format(out=out, error=err)) from err
    if existing == "overwrite":
        return None
    if results.exists():
        raise RunDirError(ALREADY_A_RUN.format(out=out, what=_describe_run(results)))
    found = [name for name in (ARTIFACTS_DIR + "/", REPORT_FILE) if (out / name.rstrip("/")).exists()]
    if found:
        raise RunDirError(LEFTOVERS.format(out=out, found=" and ".join(found)))
    return None


def _describe_run(results: Path) -> str:
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
        manifest = data["manifest"]
        return f"status {manifest['status']}, started {manifest['created_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its results.json cannot be read"


def clear_run_dir(out_dir: Path) -> None:
    """Delete what a run writes (results.json, report.html, artifacts/); leave every other file alone."""
    out = Path(out_dir)
    (out / RESULTS_FILE).unlink(missing_ok=True)
    (out / REPORT_FILE).unlink(missing_ok=True)
    if (out / ARTIFACTS_DIR).is_dir():
        shutil.rmtree(out / ARTIFACTS_DIR)


def clear_section_artifacts(folder: Path, *, keep_chunks: bool) -> None:
    """Delete a section's artifacts; with ``keep_chunks`` its finished chunks stay for the run that redoes it."""
    from audit.engine.chunks import CHUNKS_DIR

    if not folder.is_dir():
        return
    if not keep_chunks:
        shutil.rmtree(folder)
        return
    for item in folder.iterdir():
        if item.name == CHUNKS_DIR and item.is_dir():
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
