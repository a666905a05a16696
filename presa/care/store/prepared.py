"""Statements built with SQLAlchemy, run by the database driver itself on the API's busiest path.

A work-list page on PostgreSQL is answered from the event loop on psycopg's own asyncio connections
(``presa.web.reads``), without SQLAlchemy's execution layer: its statement is built and compiled once, here, into
the text psycopg prepares, and each request only turns its values into what the driver takes. The values a
statement writes in its text (``literal_execute`` parameters: constants, a page's LIMIT) are written at compile
time, so one compiled text serves every request of its shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement's text with named placeholders (``%(name)s``), and how each named value reaches the driver."""

    sql: str
    processors: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    def values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The driver's values of the statement's parameters, from ``given`` by name (a missing one is a
        ``KeyError``: a statement never runs with a value it was not given)."""
        values = {}
        for name, process in self.processors:
            value = given[name]
            values[name] = value if process is None or value is None else process(value)
        return values


def driver_statement(
    statement: Executable, dialect: Dialect, written: Mapping[str, Any] | None = None
) -> DriverStatement:
    """``statement`` compiled for ``dialect``'s driver, with ``written`` the values of its ``literal_execute``
    parameters that have none (they are written in the text; so are those that have one)."""
    if dialect.paramstyle != "pyformat":
        raise ValueError(f"statements are compiled here for psycopg's named placeholders, not {dialect.paramstyle}")
    written = dict(written or {})
    compiled = _compiled(statement, dialect)
    unset = {name: bind for name, bind in compiled.binds.items() if bind.value is None}
    for name, bind in unset.items():
        if bind.literal_execute and name not in written:
            raise ValueError(f"give the value of '{name}': it is written in the statement's text")
    if "__[POSTCOMPILE_" in compiled.string:
        # SQLAlchemy writes the values of a statement's text only given values for all its parameters: the
        # driver's are given None here, and stay placeholders.
        placeholders = {name: None for name in unset if name not in written}
        valued = cast(Select[Any], statement).params({**placeholders, **written})  # INSERTs have none
        compiled = _compiled(valued, dialect, render_postcompile=True)
    sql = compiled.string
    processors = {}
    for bind, name in compiled.bind_names.items():
        if f"%({name})s" not in sql or name in processors:  # written in the text, or used twice
            continue
        if bind.key != name:  # pragma: no cover - an anonymous parameter: only named ones reach the driver here
            raise ValueError(f"the statement has a parameter without a name, {bind!r}: write it in its text")
        processors[name] = bind.type.dialect_impl(dialect).bind_processor(dialect)
    return DriverStatement(sql, tuple(processors.items()))


def _compiled(statement: Executable, dialect: Dialect, *, render_postcompile: bool = False) -> SQLCompiler:
    compiled = cast(ClauseElement, statement).compile(
        dialect=dialect, compile_kwargs={"render_postcompile": render_postcompile}
    )
    return cast(SQLCompiler, compiled)
