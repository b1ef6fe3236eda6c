"""Where a results store lives: its URL, normalized, and the same URL with its secrets hidden.

A store is a SQLite file (a plain path or ``sqlite:///path``; relative paths start at the
config file's folder for ``store:`` in a config, else at the current directory) or a PostgreSQL
database (``postgresql+psycopg://user@host:5432/db``). Credentials come from the environment:
libpq reads ``PGPASSWORD`` (or ``~/.pgpass``, ``PGPASSFILE``, ``PGHOST``, ``PGUSER``...), so the URL
needs no password. A URL that holds one (``user:secret@host`` or ``?password=``) still works from
``--store`` or ``NNAUDIT_STORE``, but nnaudit never prints it: every message shows ``redact_url``,
and driver errors pass through ``scrub`` first. A ``store:`` in the config may not hold a password
at all, since the config is copied into results.json.

Light: no SQLAlchemy at import time (the config imports this module).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from audit.errors import StoreError

STORE_ENV = "NNAUDIT_STORE"
REDACTED = "***"
SECRET_QUERY_KEYS = ("password", "sslpassword")
BACKENDS = ("sqlite", "postgresql")

UNSUPPORTED = ("unsupported results store {url}: use a SQLite file (a path or sqlite:///path) or PostgreSQL "
               "(postgresql+psycopg://user@host/db)")
UNPARSEABLE = ("the results store {url} is not a database URL: give a SQLite file path, sqlite:///path or "
               "postgresql+psycopg://user@host/db")
IN_MEMORY = "an in-memory SQLite store ({url}) keeps nothing: give a file path, e.g. runs/store.db"
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^/@:?#]*):(?P<secret>[^/?#]*)@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:" + "|".join(SECRET_QUERY_KEYS) + r")=)(?P<secret>[^&#]*)")


def is_url(text: str) -> bool:
    return "://" in text or text.startswith("sqlite:")


def _parse(text: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text)
    except (ArgumentError, ValueError) as err:
        raise StoreError(UNPARSEABLE.format(url=redact_url(text))) from err


def normalize_store_url(text: str, *, base_dir: str | os.PathLike[str] | None = None) -> str:
    """The store's full URL: a path becomes ``sqlite:////absolute/path``, ``postgresql://`` uses psycopg 3.

    Raises ``StoreError`` (the URL redacted) for an unparseable URL, an in-memory SQLite store or
    another database.
    """
    text = str(text).strip()
    if not text:
        raise StoreError("the results store URL is empty: give a SQLite file path or a postgresql+psycopg:// URL")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not is_url(text):
        return "sqlite:///" + str(_absolute(Path(text).expanduser(), base))
    url = _parse(text)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:") or str(url.database).startswith("file::memory:"):
            raise StoreError(IN_MEMORY.format(url=redact_url(text)))
        return str(url.set(database=str(_absolute(Path(url.database).expanduser(), base)))
                   .render_as_string(hide_password=False))
    if backend == "postgresql":
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return str(url.render_as_string(hide_password=False))
    raise StoreError(UNSUPPORTED.format(url=redact_url(text)))


def _absolute(path: Path, base: Path) -> Path:
    return (path if path.is_absolute() else base / path).resolve()


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql`` for a normalized store URL."""
    name = url.split(":", 1)[0].split("+", 1)[0]
    return "postgresql" if name == "postgres" else name


def has_password(text: str) -> bool:
    """Whether a store URL carries a password (in the user part or the query)."""
    if not is_url(text):
        return False
    return bool(_USERINFO.search(text) or _QUERY_SECRET.search(text))


def redact_url(text: str) -> str:
    """The URL as it may be shown: any password (user part or query) replaced by ``***``."""
    text = str(text)
    text = _USERINFO.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


def secrets_of(text: str) -> list[str]:
    """The passwords a URL holds, as written and as decoded (for ``scrub``)."""
    found: list[str] = []
    for pattern in (_USERINFO, _QUERY_SECRET):
        for match in pattern.finditer(str(text)):
            if match["secret"]:
                found.append(match["secret"])
    try:
        url = _parse(text) if is_url(text) else None
    except StoreError:
        url = None
    if url is not None:
        if url.password:
            found.append(str(url.password))
        for key in SECRET_QUERY_KEYS:
            value = url.query.get(key)
            found.extend([value] if isinstance(value, str) else list(value or ()))
    variants = {s for secret in found if secret for s in (secret, quote(secret, safe=""))}
    return sorted(variants, key=len, reverse=True)


def scrub(message: str, url: str) -> str:
    """``message`` with the store URL redacted and every password of ``url`` replaced by ``***``."""
    message = str(message).replace(url, redact_url(url))
    for secret in secrets_of(url):
        message = message.replace(secret, REDACTED)
    return message


def configured_store(cli_value: str | None, config_value: str | None = None, *,
                     config_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The store a command uses: ``--store``, else ``$NNAUDIT_STORE``, else the config's ``store:``; normalized.

    None when none is set (the run is not registered). An empty ``NNAUDIT_STORE`` counts as unset.
    """
    if cli_value:
        return normalize_store_url(cli_value)
    env = os.environ.get(STORE_ENV, "").strip()
    if env:
        return normalize_store_url(env)
    if config_value:
        return normalize_store_url(config_value, base_dir=config_dir)
    return None
