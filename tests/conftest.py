"""Shared fixtures: databases of both backends, SQLite and a real PostgreSQL.

- ``backend``: "sqlite" or "postgresql"; a test that uses any fixture below runs once on each (ids
  ``[sqlite]``, ``[postgresql]``, so ``-k postgresql`` picks one);
- ``db``: a session on the care store migrated to the latest revision, inside a transaction rolled back after
  the test (services never commit, so tests see their own writes and leave nothing behind);
- ``db_engine``: the migrated engine itself, for tests that need their own connections;
- ``empty_database``: a URL of a fresh empty database, for the migration tests;
- ``api``: the API served by uvicorn on a free port over a database of its own, filled by
  ``tests.apiworld.build_world`` (module-scoped: one server per test module and backend; a module setting
  ``FOLLOWUP_WORLD = True`` also gets ``add_followup``);
- ``pg_server``: the PostgreSQL server (tests/pgserver.py); one database per test session, ``presa_test_<pid>``,
  dropped at the end. No server means failure, never a skip.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from presa.care.store import make_engine, upgrade
from tests.apiworld import World, add_followup, build_world
from tests.liveserver import LiveServer
from tests.pgserver import PgServer, PgUnavailableError, acquire

BACKENDS = ("sqlite", "postgresql")
_used_servers: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for origin in _used_servers:
        terminalreporter.write_line(f"PostgreSQL tests ran on {origin}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = acquire()
    except PgUnavailableError as exc:
        pytest.fail(f"PostgreSQL is required for the database tests and none is available: {exc}", pytrace=False)
    _used_servers.append(server.origin)
    try:
        yield server
    finally:
        server.close()


class Databases:
    """Fresh databases for one test session: SQLite files in pytest's tmp dir, PostgreSQL databases on the
    ``pg_server``, which drops whatever is left of them when it closes."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        self._request, self._tmp = request, tmp
        self._counter = itertools.count(1)

    def new(self, backend: str) -> str:
        number = next(self._counter)
        if backend == "sqlite":
            return f"sqlite:///{self._tmp / f'db{number}.sqlite3'}"
        if backend == "postgresql":
            name = f"presa_test_{os.getpid()}" + ("" if number == 1 else f"_{number}")
            return self._pg().create_database(name)
        raise ValueError(f"unknown backend {backend!r}")

    def drop(self, url: str) -> None:
        if url.startswith("postgresql"):
            self._pg().drop_database(url.rsplit("/", 1)[1])

    def _pg(self) -> PgServer:
        server: PgServer = self._request.getfixturevalue("pg_server")
        return server


@pytest.fixture(scope="session")
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    yield Databases(request, tmp_path_factory.mktemp("databases"))


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def db_engine(backend: str, databases: Databases) -> Iterator[Engine]:
    engine = make_engine(databases.new(backend))
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def db(db_engine: Engine) -> Iterator[Session]:
    with db_engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


@pytest.fixture
def empty_database(backend: str, databases: Databases) -> Iterator[str]:
    url = databases.new(backend)
    try:
        yield url
    finally:
        databases.drop(url)


@pytest.fixture(scope="module")
def api_database(backend: str, databases: Databases) -> Iterator[str]:
    """A fresh, migrated database for one test module's live API (the API commits: no rollback here)."""
    url = databases.new(backend)
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    try:
        yield url
    finally:
        databases.drop(url)


@dataclass
class Api:
    """The live API of a test module: the server, its world, an httpx client over the socket."""

    server: LiveServer
    world: World
    http: httpx.Client


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, api_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The live API; a module that sets ``FOLLOWUP_WORLD = True`` gets A1 in follow-up (``add_followup``)."""
    engine = make_engine(api_database)
    try:
        world = build_world(engine, tmp_path_factory.mktemp("api-runs"))
        if getattr(request.module, "FOLLOWUP_WORLD", False):
            add_followup(engine, world)
    finally:
        engine.dispose()
    with LiveServer(api_database) as server, server.client() as http:
        yield Api(server, world, http)
