"""Alembic environment of the care store.

presa runs the migrations in code (``presa.care.store.upgrade``), handing over an open connection in
``config.attributes["connection"]``; run from the ``alembic`` command instead, the database is
``PRESA_DATABASE_URL`` (or the default SQLite file).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from presa.care.store.database import make_engine
from presa.care.store.schema import metadata

target_metadata = metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    if context.is_offline_mode():
        raise SystemExit("presa's care migrations run online only: give a database, not --sql")
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        run_on(given)
        return
    engine = make_engine()
    try:
        with engine.begin() as connection:
            run_on(connection)
    finally:
        engine.dispose()


run()
