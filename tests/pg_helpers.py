"""A private PostgreSQL server for the results store tests: Debian's postgresql package, started per session.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` system user
(``runuser``) in a folder it owns under the system temp dir (pytest's own temp dirs are private
to root). It listens on 127.0.0.1 on a free port (password authentication, scram-sha-256) and
on a unix socket in that folder (trust, for the test's administration). Where the server
binaries are missing the tests skip, unless ``NNAUDIT_REQUIRE_SYSTEM=1`` (CI sets it): then
they fail, so an install that went wrong cannot pass CI green.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from system import need

USER = "nnaudit"


BINDIR_ENV = "NNAUDIT_PG_BINDIR"


def pg_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: $NNAUDIT_PG_BINDIR, else Debian's
    /usr/lib/postgresql/<newest>/bin, else PATH."""
    if os.environ.get(BINDIR_ENV):
        return Path(os.environ[BINDIR_ENV])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing(reason: str) -> None:
    """Skip, or fail when the environment requires the system packages (CI): ``system.need``."""
    need(f"{reason} (install Debian's postgresql package)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(12))
    as_postgres: bool = False
    _databases: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=check,
                              env={**os.environ, "LC_ALL": "C"})

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.as_postgres:
            entry = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text("admin-" + secrets.token_hex(8) + "\n")
        if self.as_postgres:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", f"--pwfile={pwfile}")
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")
        self.admin(f"CREATE ROLE {USER} LOGIN PASSWORD '{self.password}'")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def admin(self, sql: str, *, dbname: str = "postgres") -> None:
        """Run SQL as the superuser over the unix socket (trust)."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname,
                             autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """A fresh, empty database owned by the test role; returns its name."""
        self._databases += 1
        name = f"store{self._databases}_{secrets.token_hex(3)}"
        self.admin(f"CREATE DATABASE {name} OWNER {USER}")
        return name

    def url(self, dbname: str, *, with_password: bool = False) -> str:
        """A SQLAlchemy URL for the test role over TCP; without password, libpq reads PGPASSWORD."""
        secret = f":{self.password}" if with_password else ""
        return f"postgresql+psycopg://{USER}{secret}@127.0.0.1:{self.port}/{dbname}"

    def env(self) -> dict[str, str]:
        """The environment a subprocess needs to reach the server (PGPASSWORD)."""
        return {"PGPASSWORD": self.password}


def start_server() -> PostgresServer:
    """Start a private server, or skip / fail (see the module docstring)."""
    bindir = pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        missing("PostgreSQL server binaries (initdb, pg_ctl) not found")
    assert bindir is not None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install 'nnaudit[postgres]')")
    as_postgres = os.geteuid() == 0
    if as_postgres:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no 'postgres' user to run initdb as")
        if shutil.which("runuser") is None:
            missing("running as root and runuser is missing")
    root = Path(tempfile.mkdtemp(prefix="nnaudit-pg-"))
    os.chmod(root, 0o755)
    server = PostgresServer(bindir=bindir, root=root, port=_free_port(), as_postgres=as_postgres)
    try:
        server.start()
    except subprocess.CalledProcessError as err:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {err.cmd}: {err.stderr}\n{log[-2000:]}")
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (import this fixture into a test module), stopped at the end."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
