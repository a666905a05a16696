"""The audit trail: every read and write of patient data leaves one row, and no row can change afterwards.

:func:`record` is the one way to write it. The database refuses UPDATE and DELETE on ``audit_events`` (triggers
made by the first migration, on SQLite and PostgreSQL alike); the ORM refuses them earlier, at flush, with a
clearer message.

The caller's address ("from where") can be given per row, or once per session with :func:`set_origin`: the API
sets it for the session of each request, so the rows that services write carry the client's address too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, String, bindparam, event, insert, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.selectable import Select

from presa.care.store.models import AuditEvent

ORIGIN_KEY = "presa.audit.remote_addr"


class AuditTrailError(RuntimeError):
    """An attempt to change or remove an audit row."""


def set_origin(session: Session, remote_addr: str | None) -> None:
    """Where the session's requests come from (a client IP): the default ``remote_addr`` of its audit rows."""
    session.info[ORIGIN_KEY] = remote_addr


def origin(session: Session) -> str | None:
    value = session.info.get(ORIGIN_KEY)
    return value if isinstance(value, str) else None


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: object | None = None,
    patient_id: int | None = None,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Add one audit row to the session (written at the next flush, in the caller's transaction)."""
    if not actor.strip():
        raise ValueError("an audit row needs its actor")
    row = AuditEvent(
        at=at or datetime.now(UTC),
        actor=actor,
        action=action,
        entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        patient_id=patient_id,
        remote_addr=remote_addr if remote_addr is not None else origin(session),
        detail=detail,
    )
    session.add(row)
    return row


def trail(
    session: Session,
    *,
    patient_id: int | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> Sequence[AuditEvent]:
    """Audit rows, oldest first, filtered by patient, actor and period."""
    query = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id).limit(limit)
    if patient_id is not None:
        query = query.where(AuditEvent.patient_id == patient_id)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    return session.scalars(query).all()


@event.listens_for(AuditEvent, "before_update")
def _refuse_update(_mapper: Mapper[AuditEvent], _connection: Connection, target: AuditEvent) -> None:
    raise AuditTrailError(f"audit row {target.id} cannot be changed: the trail is append-only")


@event.listens_for(AuditEvent, "before_delete")
def _refuse_delete(_mapper: Mapper[AuditEvent], _connection: Connection, target: AuditEvent) -> None:
    raise AuditTrailError(f"audit row {target.id} cannot be deleted: the trail is append-only")


def recording_reads(
    page: Select[Any], order: Callable[[Any], Sequence[ColumnElement[Any]]], *, action: str, entity: str
) -> Select[Any]:
    """``page`` - rows of patient data with a ``patient_id``, in ``order`` (a function of the page's columns) - as
    one statement that also writes, as :func:`record` would, one audit row per patient among its first ``shown``
    rows: on PostgreSQL (a data-modifying ``WITH``), in the statement and the transaction that read them, one
    round trip. Its parameters: ``shown``, written in the text, and ``audit_at``, ``audit_actor`` and
    ``audit_addr``."""
    rows = page.cte("page")
    shown = select(rows.c.patient_id).order_by(*order(rows.c))
    shown_ids = shown.limit(bindparam("shown", type_=Integer, literal_execute=True)).subquery("shown")
    audit = AuditEvent.__table__.c
    written = select(
        bindparam("audit_at", type_=audit.at.type),
        bindparam("audit_actor", type_=String),
        literal(action, String, literal_execute=True),
        literal(entity, String, literal_execute=True),
        shown_ids.c.patient_id,
        bindparam("audit_addr", type_=String),
    ).distinct()
    columns = ["at", "actor", "action", "entity", "patient_id", "remote_addr"]
    audited = insert(AuditEvent).from_select(columns, written).cte("audited")
    return select(rows).add_cte(audited).order_by(*order(rows.c))
