"""Bulk loads: COPY on PostgreSQL, one executemany on SQLite, always inside the caller's transaction.

Rows are tuples of Python values in the order of ``columns`` (dates, strings, booleans, enum members, lists for
JSON columns, timezone-aware datetimes). On PostgreSQL they stream through psycopg 3's ``cursor.copy``; on SQLite
they go through SQLAlchemy's executemany in chunks, so that the column types convert them as an ORM insert would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from itertools import islice
from typing import Any

from psycopg import sql
from sqlalchemy import JSON, Table, insert
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

SQLITE_CHUNK_ROWS = 10_000
COPY_LINES = 1_000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def table_of(model: type[Any]) -> Table:
    """The Table of a mapped class."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def counted(session: Session, statement: Executable) -> int:
    """Execute an INSERT ... SELECT, UPDATE or DELETE and return how many rows it touched."""
    result = session.execute(statement, execution_options={"preserve_rowcount": True})
    if not isinstance(result, CursorResult):
        raise TypeError("not a DML statement")
    return int(result.rowcount)


def bulk_insert(connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Insert ``rows`` into ``table``; return how many. Nothing is committed."""
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {', '.join(unknown)}")
    if connection.dialect.name == "postgresql":
        return _copy(connection, table, columns, rows)
    return _executemany(connection, table, columns, rows)


def copy_text(connection: Connection, table: Table, columns: Sequence[str], lines: Iterable[str]) -> None:
    """COPY rows already written in COPY's text format (PostgreSQL only): for the bulk paths that render each
    distinct piece once instead of converting every value of every row (``copy_value`` escapes a value).

    Lines are sent a thousand at a time, so that the server parses while the caller writes the next ones.
    """
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    iterator = iter(lines)
    with driver_of(connection).cursor() as cursor, cursor.copy(statement) as copy:
        while batch := "".join(islice(iterator, COPY_LINES)):
            copy.write(batch)


def copy_value(value: str | None) -> str:
    """A value in COPY's text format: backslash, tab and line ends escaped; None as ``\\N``."""
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def driver_of(connection: Connection) -> Any:
    """The psycopg connection under a SQLAlchemy one, for COPY and for statements run without SQLAlchemy's layers."""
    driver = connection.connection.driver_connection
    if driver is None:  # pragma: no cover - a live connection always has one
        raise RuntimeError("no DBAPI connection under this one")
    return driver


def _executemany(connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    statement = insert(table)
    count = 0
    iterator = iter(rows)
    while chunk := [dict(zip(columns, row, strict=True)) for row in islice(iterator, SQLITE_CHUNK_ROWS)]:
        connection.execute(statement, chunk)
        count += len(chunk)
    return count


def _copy(connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    converters = [_copy_converter(table, name) for name in columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    count = 0
    with driver_of(connection).cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([convert(value) for convert, value in zip(converters, row, strict=True)])
            count += 1
    return count


def _copy_converter(table: Table, name: str) -> Callable[[Any], Any]:
    column_type = table.c[name].type
    if isinstance(column_type, JSON):
        return _json
    if hasattr(column_type, "enum_class") and column_type.enum_class is not None:
        return _enum_value
    return _same


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _same(value: Any) -> Any:
    return value
