"""The API's busiest read, the work list, answered on the event loop over psycopg's own asyncio connections to
PostgreSQL, outside SQLAlchemy's sessions (``presa.care.store.prepared``).

At 20 case managers asking without pause, a page through the thread pool, an ORM session and SQLAlchemy's
execution layer cost 3.4-4.8 ms of Python and five round trips (BEGIN, the token, the page, its audit rows, COMMIT);
here it is two statements, each its own transaction: the token (``presa.auth.service.BEARER``), then the page
together with its audit rows (``presa.care.store.audit.recording_reads``), so that no page is ever shown without
its audit rows written. Requests wait for each other on the event loop, in order, not for the interpreter's lock
among threads.

The connections plan each statement once (a generic plan): the statements here write their constants in their
text (``presa.followup.service.worklist``), so the plan that holds for every value walks the list's queue indexes.

SQLite, the embedded default, has no such path: there the work list runs in the thread pool like every endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL

from presa.auth.service import BEARER, TOKEN_USED, AuthError, accepted_bearer, bearer_digest, token_use_stale
from presa.care.service.common import now
from presa.care.store.prepared import DriverStatement, driver_statement
from presa.web.access import Actor
from presa.web.deps import bearer_actor, unauthenticated

MIN_CONNECTIONS = 2
"""Connections opened when the server starts; more are opened as requests need them, up to the pool's size."""
CONNECTION_SETTINGS = {
    "autocommit": True,
    "prepare_threshold": 0,
    "options": "-c plan_cache_mode=force_generic_plan -c TimeZone=UTC",
    "application_name": "presa-reads",
}
"""Each statement its own transaction; prepared on its first run; planned once for all values (see above);
instants read in UTC, as the models read them; named, for whoever looks at the server's connections."""
MAX_STATEMENTS = 256
WAIT_FOR_CONNECTION = 10.0
"""Seconds a request waits for a connection (all in use, or the database unreachable) before it is answered 503."""


class ReadPool:
    """PostgreSQL connections for the reads served from the event loop, opened with the app (its lifespan) in the
    event loop that serves it. A connection that rested ``rest`` seconds or more is tried before it is handed out,
    and replaced when the database closed it meanwhile (as ``presa.web.app.ping_when_idle`` does for the others)."""

    def __init__(self, url: URL, *, size: int, rest: float, timeout: float = WAIT_FOR_CONNECTION) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._size, self._rest, self._timeout = size, rest, timeout
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._rested_since: WeakKeyDictionary[AsyncConnection[Any], float] = WeakKeyDictionary()
        self._statements: dict[object, DriverStatement] = {}

    @property
    def ready(self) -> bool:
        return self._pool is not None

    async def open(self) -> None:
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo,
            kwargs=CONNECTION_SETTINGS,
            min_size=min(MIN_CONNECTIONS, self._size),
            max_size=self._size,
            open=False,
            configure=self._rests,
            reset=self._rests,
            check=self._try_if_rested,
            timeout=self._timeout,
            name="presa-reads",
        )
        await pool.open()
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def connection(self) -> Any:
        """``async with pool.connection() as connection``: a connection of the pool, given back at the end."""
        if self._pool is None:
            raise RuntimeError("the read pool is not open")
        return self._pool.connection()

    def statement(self, key: object, build: Callable[[], DriverStatement]) -> DriverStatement:
        """The compiled statement of ``key``, built by ``build`` the first time."""
        statement = self._statements.get(key)
        if statement is None:
            if len(self._statements) >= MAX_STATEMENTS:
                self._statements.clear()
            statement = self._statements[key] = build()
        return statement

    async def _rests(self, connection: AsyncConnection[Any]) -> None:
        self._rested_since[connection] = time.monotonic()

    async def _try_if_rested(self, connection: AsyncConnection[Any]) -> None:
        if time.monotonic() - self._rested_since.get(connection, 0.0) >= self._rest:
            await connection.execute("SELECT 1")  # raises when the connection is gone: the pool replaces it


DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]
"""What the statements here are compiled for."""
_BEARER, _TOKEN_USED = driver_statement(BEARER, DIALECT), driver_statement(TOKEN_USED, DIALECT)


async def token_actor(connection: AsyncConnection[Any], token: str | None, remote_addr: str | None) -> Actor:
    """The actor of a bearer token, as ``presa.web.deps.current_actor`` finds it (401 otherwise)."""
    if not token:
        raise unauthenticated()
    at = now()
    try:
        digest = bearer_digest(token)
        cursor = connection.cursor(row_factory=namedtuple_row)
        row = await (await cursor.execute(_BEARER.sql, _BEARER.values({"digest": digest}))).fetchone()
        bearer = accepted_bearer(row, digest, at)
    except AuthError as exc:
        raise unauthenticated(str(exc)) from None
    if token_use_stale(row, at):
        await connection.execute(_TOKEN_USED.sql, _TOKEN_USED.values({"token_id": bearer.token_id, "used_at": at}))
    return bearer_actor(bearer, remote_addr)


async def fetch_rows(
    connection: AsyncConnection[Any], statement: DriverStatement, values: Mapping[str, Any]
) -> Sequence[Any]:
    """The rows of ``statement`` run with ``values``, as named tuples."""
    cursor = connection.cursor(row_factory=namedtuple_row)
    return await (await cursor.execute(statement.sql, statement.values(values))).fetchall()
