"""The audit trail, for ATS analysts: who did what to the data of their ATS's patients, when and from where.

Rows are those about patients of the analyst's ATS, patients shown by pseudonym; ``detail`` keeps only its
structured fields (versions, states, dates, counts), never free text that could name someone. The query itself is
audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, StringConstraints
from sqlalchemy import select

from presa.care.store.models import AuditEvent, Patient
from presa.web.access import Permission
from presa.web.deps import Ctx, requires
from presa.web.errors import not_found

router = APIRouter(tags=["audit"])
SAFE_DETAIL = frozenset(
    {"version", "from", "to", "effective_on", "scopes", "role", "activities", "start", "pathways", "activity_id"}
)
Word = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@|:-]+$")]


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    patient: str | None
    remote_addr: str | None
    detail: dict[str, Any] | None


@router.get("/audit")
def query_audit(
    ctx: Annotated[Ctx, requires(Permission.READ_AUDIT)],
    patient: Annotated[str | None, Query(max_length=40, description="a patient's pseudonym")] = None,
    actor: Annotated[Word | None, Query()] = None,
    action: Annotated[Word | None, Query()] = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[AuditOut]:
    """Audit rows about the patients of the analyst's ATS, oldest first."""
    query = (
        select(AuditEvent, Patient)
        .join(Patient, Patient.id == AuditEvent.patient_id)
        .where(Patient.ats_code == ctx.actor.ats_code)
        .order_by(AuditEvent.at, AuditEvent.id)
        .limit(limit)
        .offset(offset)
    )
    if patient is not None:
        found = ctx.state.pseudonyms.resolve(ctx.session, ctx.actor.ats_code or "", patient)
        if found is None:
            raise not_found(f"patient {patient}")
        query = query.where(AuditEvent.patient_id == found)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    rows = ctx.session.execute(query).all()
    ctx.audit("query", "audit_trail", None, detail={"rows": len(rows), "filtered_by_patient": patient is not None})
    return [
        AuditOut(
            id=event.id,
            at=event.at,
            actor=event.actor,
            action=event.action,
            entity=event.entity,
            entity_id=None if event.entity == "patient" else event.entity_id,
            patient=ctx.pseudonym(p),
            remote_addr=event.remote_addr,
            detail={k: v for k, v in event.detail.items() if k in SAFE_DETAIL}
            if isinstance(event.detail, dict)
            else None,
        )
        for event, p in rows
    ]
