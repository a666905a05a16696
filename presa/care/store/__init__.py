"""The care store: typed SQLAlchemy models, the connection and the Alembic migrations, bulk loads, the audit trail.

- ``models``: the tables (see its docstring for the groups and their FHIR counterparts)
- ``database``: :func:`database_url` (``PRESA_DATABASE_URL``), :func:`make_engine`, :func:`upgrade`,
  :func:`downgrade`
- ``bulk``: :func:`bulk_insert`, COPY on PostgreSQL and one executemany on SQLite
- ``audit``: :func:`record`, the one way to write the append-only trail
"""

from presa.care.store.database import (
    DATABASE_URL_VARIABLE,
    current_revision,
    database_url,
    downgrade,
    make_engine,
    normalise_url,
    session_factory,
    upgrade,
)

__all__ = [
    "DATABASE_URL_VARIABLE",
    "current_revision",
    "database_url",
    "downgrade",
    "make_engine",
    "normalise_url",
    "session_factory",
    "upgrade",
]
