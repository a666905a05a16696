"""A real PostgreSQL server for the tests: the one at 127.0.0.1:5432 when it answers, else a throw-away cluster.

The throw-away cluster is made with ``initdb`` and ``pg_ctl`` (Debian's ``postgresql`` package, which ``./task
test`` installs when neither a server nor initdb is there) in a temporary directory, on a free port, with trust
authentication, and removed when the tests end. As root, the cluster runs as the ``postgres`` user, since the
server refuses to run as root.

``PRESA_TEST_POSTGRES`` chooses: ``auto`` (the default: the server on 5432, else a throw-away cluster),
``external`` (the server on 5432 only), ``throwaway`` (always a throw-away cluster, to test that path). When no
server can be had, :func:`acquire` raises :class:`PgUnavailableError` with the reason: the tests fail, never skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

MODE_VARIABLE = "PRESA_TEST_POSTGRES"
EXTERNAL_HOST, EXTERNAL_PORT, SUPERUSER = "127.0.0.1", 5432, "postgres"
MAINTENANCE_DATABASES = ("test", "postgres")
SERVER_USER = "postgres"
START_TIMEOUT_S = 60


class PgUnavailableError(RuntimeError):
    """No PostgreSQL server could be found or started."""


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    maintenance_db: str
    origin: str
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    created: list[str] = field(default_factory=list)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=self.maintenance_db, autocommit=True
        )

    def create_database(self, name: str) -> str:
        """A new empty database (an older one of the same name is dropped first); its SQLAlchemy URL."""
        self.drop_database(name)
        with self._admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
        self.created.append(name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self._admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        """Drop the databases made here, then stop the server if it is a throw-away one."""
        try:
            for name in reversed(list(self.created)):
                self.drop_database(name)
        finally:
            self.stop()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def acquire(mode: str | None = None) -> PgServer:
    """A server to test against, as ``PRESA_TEST_POSTGRES`` (or ``mode``) asks."""
    mode = mode or os.environ.get(MODE_VARIABLE, "auto") or "auto"
    if mode not in ("auto", "external", "throwaway"):
        raise PgUnavailableError(f"{MODE_VARIABLE}={mode!r}: give auto, external or throwaway")
    problem = "not tried"
    if mode != "throwaway":
        database, problem = probe(EXTERNAL_HOST, EXTERNAL_PORT)
        if database is not None:
            origin = f"the server at {EXTERNAL_HOST}:{EXTERNAL_PORT}"
            return PgServer(EXTERNAL_HOST, EXTERNAL_PORT, SUPERUSER, database, origin)
        if mode == "external":
            raise PgUnavailableError(f"no PostgreSQL server answers on {EXTERNAL_HOST}:{EXTERNAL_PORT}: {problem}")
    initdb = find_initdb()
    if initdb is None:
        raise PgUnavailableError(
            f"no PostgreSQL server answers on {EXTERNAL_HOST}:{EXTERNAL_PORT} ({problem}) and no initdb was found "
            "in /usr/lib/postgresql/*/bin or on PATH: install Debian's postgresql package (./task test does)"
        )
    return start_throwaway(initdb.parent)


def probe(host: str, port: int) -> tuple[str | None, str]:
    """The maintenance database the superuser can reach on host:port, or None and why not."""
    problem = ""
    for database in MAINTENANCE_DATABASES:
        try:
            with psycopg.connect(host=host, port=port, user=SUPERUSER, dbname=database, connect_timeout=3):
                return database, ""
        except psycopg.Error as exc:
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None, problem


def find_initdb() -> Path | None:
    """initdb from the newest /usr/lib/postgresql/<version>/bin, else from PATH."""

    def version(path: Path) -> int:
        match = re.fullmatch(r"\d+", path.parent.parent.name)
        return int(match.group()) if match else 0

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version, reverse=True)
    if candidates:
        return candidates[0]
    found = shutil.which("initdb")
    return Path(found).resolve() if found else None


def start_throwaway(bin_dir: Path) -> PgServer:
    """initdb a cluster in a temporary directory and start it on a free port of 127.0.0.1."""
    root = Path(tempfile.mkdtemp(prefix="presa-pg-"))
    prefix = _run_as_prefix(root)
    data, log = root / "data", root / "server.log"
    port = free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, check=False, timeout=120)

    def stop() -> None:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)

    initdb = run(str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PgUnavailableError(f"initdb failed in {root}: {initdb.stderr.strip() or initdb.stdout.strip()}")
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    started = run(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(START_TIMEOUT_S),
        "start",
    )  # fmt: skip
    if started.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else started.stderr
        stop()
        raise PgUnavailableError(f"pg_ctl could not start a throw-away cluster on port {port}: {tail.strip()}")
    database, problem = probe("127.0.0.1", port)
    if database is None:
        stop()
        raise PgUnavailableError(f"the throw-away cluster on port {port} started but does not answer: {problem}")
    version = bin_dir.parent.name
    return PgServer(
        "127.0.0.1", port, SUPERUSER, database, f"a throw-away PostgreSQL {version} cluster in {root}", stop
    )


def _run_as_prefix(root: Path) -> list[str]:
    """How to run the server's commands: as ourselves, or as ``postgres`` (owning ``root``) when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam(SERVER_USER)
    except KeyError:
        shutil.rmtree(root, ignore_errors=True)
        raise PgUnavailableError(
            f"running as root, and PostgreSQL refuses to run as root: no '{SERVER_USER}' user to run it as "
            "(Debian's postgresql package creates one)"
        ) from None
    os.chown(root, account.pw_uid, account.pw_gid)
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", SERVER_USER, "--"]
    return ["su", SERVER_USER, "-s", "/bin/sh", "-c", '"$0" "$@"']


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
