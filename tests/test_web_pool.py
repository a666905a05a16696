"""The app's connection pool: a connection that rested in the pool and was closed meanwhile (the database
restarted, a firewall dropped it) is replaced on its way out, not handed to a request."""

from __future__ import annotations

from sqlalchemy import text

from presa.care.store import make_engine
from presa.web.app import ping_when_idle
from tests.pgserver import PgServer


def test_a_rested_connection_closed_meanwhile_is_replaced(pg_server: PgServer) -> None:
    engine = make_engine(pg_server.url(pg_server.maintenance_db), pool_size=1, max_overflow=0)
    ping_when_idle(engine, 0.0)  # every connection has rested long enough to be tried
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        admin = make_engine(pg_server.url(pg_server.maintenance_db))
        with admin.connect() as other:  # the pooled connection's backend ends, unseen by the pool
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        admin.dispose()
        with engine.connect() as connection:
            second = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        assert second != first
    finally:
        engine.dispose()
