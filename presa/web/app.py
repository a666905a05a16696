"""The FastAPI app: the REST API under ``/api``, its OpenAPI document at ``/api/openapi.json`` (interactive at
``/api/docs``), and the web pages everywhere else (``presa.web.pages``).

``create_app`` connects to the care store (``PRESA_DATABASE_URL`` by default, see ``presa.care.store``) and reads
the secret key of pseudonyms and invitation codes (``presa.care.pseudonyms``). It does not migrate the store:
``presa serve`` does that before it starts the server.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from presa.care.pseudonyms import check_key, secret_key
from presa.care.store import database_url as default_database_url
from presa.care.store import make_engine, normalise_url, session_factory
from presa.web import errors, pages
from presa.web.access import Pseudonyms
from presa.web.api import router
from presa.web.deps import AppState
from presa.web.reads import WAIT_FOR_CONNECTION, ReadPool

DESCRIPTION = """presa's API: enrolment (presa in carico) of chronic patients, care pacts and individual care plans.

Sign in with `POST /api/auth/token` and send `Authorization: Bearer <token>`. Every response outside 2xx is
`{"detail": "...", "errors": [{"field": ..., "reason": ...}]}`. See docs/API.md for roles and scopes."""


POOL_SIZE = 20
"""Connections to a database server (not to a SQLite file) that a server process keeps open: as many as requests
it commonly has in flight (20 clients at once in bench/worklist.py), so that no request opens and closes one - a
PostgreSQL backend started and ended - as SQLAlchemy's default of 5 made every request beyond the fifth do."""
POOL_OVERFLOW = 10
"""Connections opened beyond those for a burst, closed when given back (a process holds at most 30)."""
PING_AFTER_IDLE = 5.0
"""Seconds a pooled connection may rest before it is tried (a round trip) on its way out of the pool."""


def create_app(database_url: str | None = None, *, key: bytes | None = None) -> FastAPI:
    """The app on the care store at ``database_url`` (default: ``PRESA_DATABASE_URL`` or the SQLite file)."""
    target = normalise_url(database_url) if database_url is not None else default_database_url()
    pool: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW, "pool_timeout": WAIT_FOR_CONNECTION}
    if target.get_backend_name() == "sqlite":
        pool = {}
    engine = make_engine(target, **pool)
    ping_when_idle(engine, PING_AFTER_IDLE)
    state = AppState(
        engine=engine,
        sessions=session_factory(engine),
        key=check_key(key, "key") if key is not None else secret_key(),
        pseudonyms=Pseudonyms(b""),
    )
    state.pseudonyms = Pseudonyms(state.key)
    if target.get_backend_name() == "postgresql":
        state.reads = ReadPool(target, size=POOL_SIZE, rest=PING_AFTER_IDLE)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.reads is not None:
            await state.reads.open()
        settle_long_lived_objects()
        try:
            yield
        finally:
            if state.reads is not None:
                await state.reads.close()
            engine.dispose()

    app = FastAPI(
        title="presa",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.presa = state
    errors.install(app)
    app.include_router(router, prefix="/api")
    pages.install(app)  # the web application (docs/WEB.md)
    return app


def settle_long_lived_objects() -> None:
    """Keep what the server holds for its whole life - the app, its routes, models and statements, some 260,000
    objects - out of the garbage collector's full passes, each of which took 100-150 ms over them all: a pause
    of every request in flight, the slowest of the work list's pages at 20 clients (Python's ``gc.freeze``)."""
    gc.collect()
    gc.freeze()


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Try a connection before handing it out when it has rested ``idle_seconds`` or more - when a restart of the
    database or a firewall may have closed it unseen - and replace it if it is gone. SQLAlchemy's ``pool_pre_ping``
    tried every connection on every checkout: a round trip and a statement per request, 0.1-0.3 ms of CPU on each
    side. A connection that served a request moments ago and breaks anyway fails that request; SQLAlchemy then
    drops every connection of the pool opened before, so the next requests reconnect."""

    @event.listens_for(engine, "connect")
    def opened(_: Any, record: ConnectionPoolEntry) -> None:
        record.info["rested_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def returned(_: Any, record: ConnectionPoolEntry) -> None:
        record.info["rested_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def taken(connection: Any, record: ConnectionPoolEntry, _: PoolProxiedConnection) -> None:
        if time.monotonic() - record.info.get("rested_since", 0.0) < idle_seconds:
            return
        try:
            engine.dialect.do_ping(connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection is gone: {exc}") from exc  # the pool opens another
