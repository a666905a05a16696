"""The PAI: preview, generate, personalise (add, drop, move, each with a reason), activate; read its versions;
export the calendar (iCalendar, ``text/calendar``) and the patient's printable plan (PDF, in Italian).

Clinicians (the patient's clinical manager or GP within the gestore) write plans; staff and the patient read
them. Every write, and a preview, needs the patient's consent in force: after the pact is revoked they answer 409
with the reason. Staff exports need it too; the patient may always read and export their own plan.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints

from presa.care.calendar import draft_care_plan
from presa.care.ical import to_ical
from presa.care.plan import CarePlan, PlanActivity
from presa.care.pseudonyms import pseudonym
from presa.care.service.common import CareError
from presa.care.service.letters import plan_document
from presa.care.service.pacts import require_processing
from presa.care.service.plans import (
    _sex,
    activate_plan,
    add_to_plan,
    drop_from_plan,
    generate_plan,
    load_plan,
    move_in_plan,
    offered_activities,
    plan_versions,
    plans_of,
)
from presa.care.store.models import CarePlanRecord, PlanStatus
from presa.web.access import Permission
from presa.web.api.invitations import PDF, _pdf
from presa.web.api.patients import PatientRef
from presa.web.deps import Ctx, requires
from presa.web.errors import ApiError, not_found
from presa.web.schemas import Body, Day, Text

router = APIRouter(tags=["care plans"])
PlanId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ActivityKey = Annotated[str, StringConstraints(min_length=1, max_length=96, pattern=r"^[A-Za-z0-9_.:-]+$")]
PLAN_WINDOW = timedelta(days=366)


class StartIn(Body):
    start: Day


class AddIn(Body):
    action: Literal["add"]
    activity_key: ActivityKey
    day: Day
    reason: Text


class DropIn(Body):
    action: Literal["drop"]
    activity_id: ActivityKey
    reason: Text


class MoveIn(Body):
    action: Literal["move"]
    activity_id: ActivityKey
    day: Day
    reason: Text


ChangeIn = Annotated[AddIn | DropIn | MoveIn, Field(discriminator="action")]


class ActivityOut(BaseModel):
    key: str
    code: str | None
    kind: str
    discipline: str | None
    provider: str
    description_it: str
    description_en: str
    times_per_year: float
    precedes_visit: bool
    pathways: list[str]
    conditions: list[str]


class PlannedOut(ActivityOut):
    id: str
    day: date
    origin: str


class ChangeOut(BaseModel):
    version: int
    action: str
    activity_id: str
    reason: str
    author: str
    at: datetime
    from_day: date | None
    to_day: date | None


class PlanOut(BaseModel):
    id: int | None = Field(description="null for a preview, which is not stored")
    patient_id: int
    status: PlanStatus | None
    version: int
    start: date
    end: date
    level: int
    age: int
    sex: str
    pathologies: list[str]
    pathways: list[str]
    generic_follow_up: list[str]
    needs_clinician_review: bool
    activities: list[PlannedOut]
    changes: list[ChangeOut]


class PlanSummaryOut(BaseModel):
    id: int
    status: PlanStatus
    current_version: int
    start: date
    end: date
    created_at: datetime
    created_by: str
    activated_at: datetime | None


class VersionOut(BaseModel):
    version: int
    author: str
    created_at: datetime
    action: str | None
    activity_id: str | None
    reason: str | None
    from_day: date | None
    to_day: date | None


def _activity(a: PlanActivity) -> dict[str, object]:
    return {
        "key": a.key,
        "code": a.code,
        "kind": a.kind,
        "discipline": a.discipline,
        "provider": a.provider,
        "description_it": a.description_it,
        "description_en": a.description_en,
        "times_per_year": a.times_per_year,
        "precedes_visit": a.precedes_visit,
        "pathways": list(a.pathways),
        "conditions": list(a.conditions),
    }


def plan_out(plan: CarePlan, *, patient_id: int, plan_id: int | None, status: PlanStatus | None) -> PlanOut:
    m = plan.merged
    return PlanOut(
        id=plan_id,
        patient_id=patient_id,
        status=status,
        version=plan.version,
        start=plan.start,
        end=plan.end,
        level=m.level,
        age=m.age,
        sex=m.sex,
        pathologies=list(m.pathologies),
        pathways=list(m.pathways),
        generic_follow_up=list(m.generic_follow_up),
        needs_clinician_review=m.needs_clinician_review,
        activities=[
            PlannedOut(id=p.id, day=p.day, origin=p.origin, **_activity(p.activity))  # type: ignore[arg-type]
            for p in plan.activities
        ],
        changes=[
            ChangeOut(
                version=c.version,
                action=c.action,
                activity_id=c.activity_id,
                reason=c.reason,
                author=c.author,
                at=c.at,
                from_day=c.from_day,
                to_day=c.to_day,
            )
            for c in plan.changes
        ],
    )


def _check_start(start: date) -> None:
    today = datetime.now(UTC).date()
    if abs(start - today) > PLAN_WINDOW:
        raise ApiError(422, f"invalid request: body.start: a plan starts within a year of today ({today.isoformat()})")


def visible_plan(ctx: Ctx, plan_id: int) -> CarePlanRecord:
    stored = ctx.session.get(CarePlanRecord, plan_id)
    if stored is None:
        raise not_found(f"care plan {plan_id}")
    ctx.patient_by_id(stored.patient_id, what=f"care plan {plan_id}")
    return stored


def _stored_out(ctx: Ctx, stored: CarePlanRecord, version: int | None = None) -> PlanOut:
    plan = load_plan(ctx.session, stored.id, version)
    return plan_out(plan, patient_id=stored.patient_id, plan_id=stored.id, status=stored.status)


@router.post("/patients/{ref}/plans/preview")
def preview(ctx: Annotated[Ctx, requires(Permission.WRITE_PLANS)], ref: PatientRef, body: StartIn) -> PlanOut:
    """The plan the patient's pathways give from ``start``, laid on the calendar but not stored."""
    _check_start(body.start)
    patient, _ = ctx.patient(ref)
    require_processing(ctx.session, patient.id)
    try:
        plan = draft_care_plan(
            patient.pathologies,
            level=patient.level,
            age=patient.age_on(body.start),
            sex=_sex(patient.sex),
            start=body.start,
            municipality=patient.municipality,
        )
    except ValueError as exc:
        raise CareError(f"no plan can be built for patient {patient.id}: {exc}") from None
    ctx.audit("preview", "care_plan", None, patient_id=patient.id, detail={"start": body.start.isoformat()})
    return plan_out(plan, patient_id=patient.id, plan_id=None, status=None)


@router.post("/patients/{ref}/plans", status_code=201)
def generate(ctx: Annotated[Ctx, requires(Permission.WRITE_PLANS)], ref: PatientRef, body: StartIn) -> PlanOut:
    """Generate and store the plan as version 1 of a draft."""
    _check_start(body.start)
    patient, _ = ctx.patient(ref)
    stored = generate_plan(ctx.session, patient.id, start=body.start, author=ctx.actor.username)
    return _stored_out(ctx, stored)


@router.get("/patients/{ref}/plans")
def list_plans(ctx: Annotated[Ctx, requires(Permission.READ_PLANS)], ref: PatientRef) -> list[PlanSummaryOut]:
    """The patient's plans, one per plan year."""
    patient, _ = ctx.patient(ref)
    ctx.audit("list", "care_plan", None, patient_id=patient.id)
    return [
        PlanSummaryOut(
            id=p.id,
            status=p.status,
            current_version=p.current_version,
            start=p.start_on,
            end=p.end_on,
            created_at=p.created_at,
            created_by=p.created_by,
            activated_at=p.activated_at,
        )
        for p in plans_of(ctx.session, patient.id)
    ]


@router.get("/plans/{plan_id}")
def get_plan(
    ctx: Annotated[Ctx, requires(Permission.READ_PLANS)],
    plan_id: PlanId,
    version: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> PlanOut:
    """A plan as of its latest version, or of ``version``."""
    stored = visible_plan(ctx, plan_id)
    ctx.audit("read", "care_plan", stored.id, patient_id=stored.patient_id, detail={"version": version})
    return _stored_out(ctx, stored, version)


@router.get("/plans/{plan_id}/versions")
def versions(ctx: Annotated[Ctx, requires(Permission.READ_PLANS)], plan_id: PlanId) -> list[VersionOut]:
    """Every version: who made it, when, and the change with its reason."""
    stored = visible_plan(ctx, plan_id)
    ctx.audit("read_versions", "care_plan", stored.id, patient_id=stored.patient_id)
    return [
        VersionOut(
            version=v.version,
            author=v.author,
            created_at=v.created_at,
            action=v.action,
            activity_id=v.activity_id,
            reason=v.reason,
            from_day=v.from_day,
            to_day=v.to_day,
        )
        for v in plan_versions(ctx.session, stored.id)
    ]


@router.get("/plans/{plan_id}/offered")
def offered(ctx: Annotated[Ctx, requires(Permission.WRITE_PLANS)], plan_id: PlanId) -> list[ActivityOut]:
    """What may be added: the plan's activities and its pathways' suggestions."""
    stored = visible_plan(ctx, plan_id)
    ctx.audit("read_offered", "care_plan", stored.id, patient_id=stored.patient_id)
    return [ActivityOut(**_activity(a)) for _, a in sorted(offered_activities(ctx.session, stored.id).items())]  # type: ignore[arg-type]


@router.post("/plans/{plan_id}/changes", status_code=201)
def personalise(ctx: Annotated[Ctx, requires(Permission.WRITE_PLANS)], plan_id: PlanId, body: ChangeIn) -> PlanOut:
    """A new version with one change - add, drop or move an activity - and its reason."""
    stored = visible_plan(ctx, plan_id)
    author = ctx.actor.username
    if isinstance(body, AddIn):
        add_to_plan(
            ctx.session, stored.id, activity_key=body.activity_key, day=body.day, reason=body.reason, author=author
        )
    elif isinstance(body, DropIn):
        drop_from_plan(ctx.session, stored.id, activity_id=body.activity_id, reason=body.reason, author=author)
    else:
        move_in_plan(
            ctx.session, stored.id, activity_id=body.activity_id, day=body.day, reason=body.reason, author=author
        )
    return _stored_out(ctx, stored)


@router.post("/plans/{plan_id}/activate")
def activate(ctx: Annotated[Ctx, requires(Permission.WRITE_PLANS)], plan_id: PlanId) -> PlanOut:
    """Make the draft the patient's active PAI (the first activation moves the episode to pai_active)."""
    stored = visible_plan(ctx, plan_id)
    activate_plan(ctx.session, stored.id, author=ctx.actor.username)
    return _stored_out(ctx, stored)


def _export_allowed(ctx: Ctx, stored: CarePlanRecord) -> None:
    if ctx.actor.staff:
        require_processing(ctx.session, stored.patient_id)


@router.get(
    "/plans/{plan_id}/calendar.ics",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}, "description": "RFC 5545"}},
)
def calendar(ctx: Annotated[Ctx, requires(Permission.READ_PLANS)], plan_id: PlanId) -> Response:
    """The plan's activities as all-day events (iCalendar, RFC 5545)."""
    stored = visible_plan(ctx, plan_id)
    _export_allowed(ctx, stored)
    plan = load_plan(ctx.session, stored.id)
    patient, _ = ctx.patient_by_id(stored.patient_id, what=f"care plan {plan_id}")
    text = to_ical(plan, calendar_id=pseudonym(ctx.state.key, patient.resident_id), stamp=datetime.now(UTC))
    ctx.audit("export_ical", "care_plan", stored.id, patient_id=stored.patient_id)
    return Response(
        text.encode("utf-8"),
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="pai-{stored.id}.ics"', "Cache-Control": "no-store"},
    )


@router.get("/plans/{plan_id}/pdf", response_class=Response, responses=PDF)
def plan_pdf(ctx: Annotated[Ctx, requires(Permission.READ_PLANS)], plan_id: PlanId) -> Response:
    """The plan for the patient, month by month, in Italian."""
    stored = visible_plan(ctx, plan_id)
    _export_allowed(ctx, stored)
    ctx.audit("print", "care_plan", stored.id, patient_id=stored.patient_id)
    return _pdf(plan_document(ctx.session, stored), f"piano-assistenziale-{stored.id}.pdf")
