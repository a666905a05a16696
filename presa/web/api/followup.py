"""The follow-up: work lists and their items, a patient's timeline, providers' schedules and slots, booking (one
activity, or a whole plan-year), calls, discharges and ER visits posted by a person, activities marked done.

Who may call what is in ``presa.web.access.POLICY``; in short: the service centre (gestore administrators, case
managers, operators) works the lists, books and logs calls for their gestore's patients; clinicians read and work
the items of the patients they follow, post transitions of care and mark activities done; a gestore administrator
publishes the schedules of the providers in their network; a patient reads their own timeline; an ATS analyst
reads the work list of their ATS, pseudonymised, and nothing else here.

Staff see a work item only when it belongs to their gestore *and* its patient is within their scope (the same
condition as every patient query, ``access.visible``): anything else answers 404, as an item that does not exist.
Every write needs the patient's consent in force (409 after a revocation); every patient row shown or written
leaves an audit row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, BeforeValidator, Field, StrictBool, StringConstraints
from sqlalchemy import Row, exists, select
from sqlalchemy.orm import Session

from presa.care.pseudonyms import pseudonym
from presa.care.service.common import CareError, now, today_in_italy
from presa.care.service.organisations import network
from presa.care.service.pacts import can_process, require_processing
from presa.care.service.plans import plans_of
from presa.care.store.audit import recording_reads
from presa.care.store.models import CarePlanRecord, Patient, PlanCalendarActivity, PlanStatus, PlanVersion, Provider
from presa.care.store.prepared import DriverStatement, driver_statement
from presa.followup.rules import activity_window, next_action
from presa.followup.service.booking import (
    PlannedActivity,
    book,
    book_plan,
    cancel,
    create_schedule,
    free_slots,
    planned_activity,
    preview_plan_booking,
    publish_slots,
    reschedule,
)
from presa.followup.service.booking import add_closure as close_provider
from presa.followup.service.contacts import log_contact
from presa.followup.service.reconcile import mark_done
from presa.followup.service.transitions import open_transition
from presa.followup.service.worklist import (
    LISTED_COLUMNS,
    MAX_PAGE,
    RowPage,
    WorkListFilter,
    assign,
    close,
    list_item_rows,
    list_order,
    row_page,
    row_page_statement,
    row_page_values,
    snooze,
)
from presa.followup.store import (
    ActivityOutcome,
    Availability,
    Booking,
    BookingStatus,
    CareTransition,
    Contact,
    ContactDirection,
    ContactOutcome,
    Execution,
    ExecutionSource,
    ItemKind,
    ItemStatus,
    Outcome,
    OutcomeSource,
    Priority,
    Schedule,
    Slot,
    TransitionKind,
    WorkItem,
)
from presa.web.access import Actor, Permission, Visibility, check, visibility
from presa.web.api.patients import PatientRef, ProcessingOut
from presa.web.api.plans import ActivityKey, visible_plan
from presa.web.deps import Ctx, client_address, current_actor, oauth2, request_session, requires, state_of
from presa.web.errors import ApiError, not_found
from presa.web.reads import DIALECT, fetch_rows, token_actor
from presa.web.schemas import Body, Code, Day, Instant, Name, PathologyId, QueryId, RowId, ServiceCode, Text

router = APIRouter(tags=["follow-up"])
IdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]
MAX_PUBLISH_DAYS = 400
MAX_SLOT_DAYS = 62
MAX_AHEAD = timedelta(days=366)
CONTACT_GRACE = timedelta(minutes=5)
CONTACT_PAST = timedelta(days=366)


def clock_text(value: object) -> object:
    """A time of day comes as text, ``HH:MM`` (or ``HH:MM:SS``)."""
    if not isinstance(value, str) or not 5 <= len(value) <= 8 or value[2:3] != ":":
        raise ValueError("give a time of day as text, HH:MM")
    return value


ClockTime = Annotated[time, BeforeValidator(clock_text)]
Weekday = Annotated[int, Field(strict=True, ge=0, le=6)]
SlotMinutes = Annotated[int, Field(strict=True, ge=5, le=480)]


# --- request bodies ------------------------------------------------------------------------------------------


class AssignIn(Body):
    owner_id: RowId


class SnoozeIn(Body):
    until: Instant
    reason: Text


class CloseIn(Body):
    outcome: Text


class OpeningIn(Body):
    weekday: Weekday = Field(description="0 = Monday ... 6 = Sunday")
    starts: ClockTime
    ends: ClockTime


class ScheduleIn(Body):
    service_code: ServiceCode
    name: Name
    slot_minutes: SlotMinutes
    openings: Annotated[list[OpeningIn], Field(min_length=1, max_length=50)]
    valid_from: Day
    valid_until: Day | None = None
    closed_on_holidays: StrictBool = True
    publish_until: Day | None = Field(None, description="publish slots from valid_from (or today) to this day")


class ClosureIn(Body):
    day: Day
    reason: Text
    schedule_id: RowId | None = None
    starts: ClockTime | None = None
    ends: ClockTime | None = None


class PublishIn(Body):
    start: Day
    end: Day = Field(description="excluded")


class SlotChoiceIn(Body):
    slot_id: RowId


class RescheduleIn(Body):
    slot_id: RowId
    reason: Text


class CancelIn(Body):
    reason: Text


class ContactIn(Body):
    direction: ContactDirection
    outcome: ContactOutcome
    at: Instant | None = Field(None, description="when the call took place (default: now)")
    call_back_at: Instant | None = Field(None, description="required exactly when the outcome is call_back")
    note: Text | None = None
    item_id: RowId | None = Field(None, description="the work item the call was about")


class TransitionIn(Body):
    kind: TransitionKind
    event_on: Day


class DoneIn(Body):
    done_on: Day
    note: Text


# --- responses -----------------------------------------------------------------------------------------------


class WorkItemOut(BaseModel):
    id: int
    kind: ItemKind
    status: ItemStatus
    priority: Priority
    priority_score: int
    due_on: date
    due_at: datetime | None
    title: str
    patient_id: int
    resident_id: str
    level: int
    gp_id: str | None
    gestore_id: int | None
    owner_id: int | None
    plan_id: int | None
    activity_id: str | None
    activity_kind: str | None
    snoozed_until: datetime | None
    snooze_reason: str | None
    outcome: str | None
    next_action: str
    action_path: str | None = Field(description="the API resource to act on next")


class PseudonymousWorkItemOut(BaseModel):
    id: int
    kind: ItemKind
    status: ItemStatus
    priority: Priority
    priority_score: int
    due_on: date
    pseudonym: str
    level: int
    gestore_id: int | None
    activity_kind: str | None
    next_action: str


class WorkListOut(BaseModel):
    items: list[WorkItemOut] | list[PseudonymousWorkItemOut]
    limit: int
    next_cursor: str | None = Field(description="pass as `after` for the next page; null on the last page")


class SlotOut(BaseModel):
    id: int
    schedule_id: int
    provider_id: int
    provider_name: str
    service_code: str
    day: date
    starts_at: datetime
    ends_at: datetime
    withdrawn: bool
    booked: bool


class BookingOut(BaseModel):
    id: int
    status: BookingStatus
    patient_id: int
    plan_id: int
    activity_id: str
    slot: SlotOut
    booked_at: datetime
    booked_by: str
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None
    replaces_id: int | None


class OutcomeOut(BaseModel):
    outcome: Outcome
    source: OutcomeSource
    done_on: date | None
    window_from: date
    window_until: date
    note: str | None
    recorded_by: str
    recorded_at: datetime


class ActivityRefOut(BaseModel):
    plan_id: int
    activity_id: str
    day: date
    code: str | None
    description: str
    window_from: date
    window_until: date


class ProposalOut(BaseModel):
    activity: ActivityRefOut
    slot: SlotOut | None


class PlanBookingOut(BaseModel):
    booked: list[BookingOut]
    without_slot: list[ActivityRefOut]
    taken_meanwhile: list[ActivityRefOut]


class TimelineActivityOut(BaseModel):
    id: str
    day: date
    code: str | None
    kind: str
    description_it: str
    description_en: str
    times_per_year: float
    window_from: date
    window_until: date
    outcome: OutcomeOut | None
    booking_id: int | None


class TimelinePlanOut(BaseModel):
    id: int
    status: PlanStatus
    version: int
    start: date
    end: date
    activities: list[TimelineActivityOut]


class ExecutionOut(BaseModel):
    id: int
    source: ExecutionSource
    day: date
    started_on: date | None
    code: str
    discipline: str
    provider_code: str


class ContactOut(BaseModel):
    id: int
    patient_id: int
    direction: ContactDirection
    at: datetime
    operator: str
    outcome: ContactOutcome
    call_back_at: datetime | None
    note: str | None
    item_id: int | None
    call_back_item_id: int | None


class TransitionOut(BaseModel):
    id: int
    patient_id: int
    kind: TransitionKind
    event_on: date
    source: str
    recorded_at: datetime
    recorded_by: str
    follow_up: WorkItemOut
    review: WorkItemOut


class TransitionSummaryOut(BaseModel):
    id: int
    kind: TransitionKind
    event_on: date
    source: str
    recorded_at: datetime
    follow_up_item_id: int
    review_item_id: int


class TimelineOut(BaseModel):
    patient_id: int
    processing: ProcessingOut
    plans: list[TimelinePlanOut]
    bookings: list[BookingOut]
    executions: list[ExecutionOut]
    contacts: list[ContactOut]
    transitions: list[TransitionSummaryOut]
    alerts: list[WorkItemOut] = Field(description="open and snoozed work items (staff only; empty for the patient)")


class OpeningOut(BaseModel):
    weekday: int
    starts: time
    ends: time


class ScheduleOut(BaseModel):
    id: int
    provider_id: int
    service_code: str
    name: str
    slot_minutes: int
    valid_from: date
    valid_until: date | None
    closed_on_holidays: bool
    openings: list[OpeningOut]
    published: int | None = Field(None, description="slots published by this request")


class ClosureOut(BaseModel):
    provider_id: int
    schedule_id: int | None
    day: date
    starts: time | None
    ends: time | None
    reason: str
    cancelled_bookings: int


class PublishedOut(BaseModel):
    schedule_id: int
    published: int


# --- work lists ----------------------------------------------------------------------------------------------


_NEXT_RESOURCE = {
    ItemKind.DUE_SOON: "timeline",
    ItemKind.CALL_BACK: "contacts",
    ItemKind.POST_DISCHARGE: "contacts",
    ItemKind.PAI_REVIEW: "plans",
    ItemKind.PLAN_RENEWAL: "plans",
    ItemKind.PACT_RENEWAL: "pacts",
}


def action_path(kind: ItemKind, patient_id: int, plan_id: int | None, activity_id: str | None) -> str | None:
    """Where the next action of an item is taken, as an API path."""
    if kind in (ItemKind.NOT_BOOKED, ItemKind.OVERDUE) and plan_id is not None and activity_id is not None:
        return f"/api/plans/{plan_id}/activities/{activity_id}/slots"
    where = _NEXT_RESOURCE.get(kind)
    return f"/api/patients/{patient_id}" + (f"/{where}" if where else "")


def item_out(item: WorkItem, resident_id: str, level: int, gp_id: str | None, next_action: str) -> WorkItemOut:
    return WorkItemOut(
        id=item.id,
        kind=item.kind,
        status=item.status,
        priority=item.priority,
        priority_score=item.priority_score,
        due_on=item.due_on,
        due_at=item.due_at,
        title=item.title,
        patient_id=item.patient_id,
        resident_id=resident_id,
        level=level,
        gp_id=gp_id,
        gestore_id=item.gestore_id,
        owner_id=item.owner_id,
        plan_id=item.plan_id,
        activity_id=item.activity_id,
        activity_kind=item.activity_kind,
        snoozed_until=item.snoozed_until,
        snooze_reason=item.snooze_reason,
        outcome=item.outcome,
        next_action=next_action,
        action_path=action_path(item.kind, item.patient_id, item.plan_id, item.activity_id),
    )


LISTED_NAMES = tuple(column.key for column in LISTED_COLUMNS)
"""The names of a list row's columns: the fields of :class:`WorkItemOut` but the two worked out here."""


def listed_item(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """A row of :func:`list_item_rows` as :class:`WorkItemOut` serialises it, without making the model: a page has
    up to 500 rows, and making and validating a model per row (after an ORM object per row) was most of the
    request's CPU. The rows' columns are typed by the database; the tests check that the two agree."""
    item = dict(zip(LISTED_NAMES, row, strict=True))
    kind = item["kind"]  # read from the dict: a row's attributes by name cost more
    item["next_action"] = next_action(kind)
    item["action_path"] = action_path(kind, item["patient_id"], item["plan_id"], item["activity_id"])
    return item


def pseudonymous_item(key: bytes, row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """A row of :func:`list_item_rows` as :class:`PseudonymousWorkItemOut` serialises it: no resident id, no name,
    no free text; the patient by their pseudonym."""
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "priority": row.priority,
        "priority_score": row.priority_score,
        "due_on": row.due_on,
        "pseudonym": pseudonym(key, row.resident_id),
        "level": row.level,
        "gestore_id": row.gestore_id,
        "activity_kind": row.activity_kind,
        "next_action": next_action(row.kind),
    }


def json_answer(content: object) -> Response:
    """``content`` (dicts and lists of JSON values, dates, instants and enums) as JSON written by orjson, in the
    text FastAPI writes for a model (instants in UTC with ``Z``): 15 times faster than pydantic-core's
    ``to_json`` on a page of work items, which was slow on enums."""
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z), media_type="application/json")


@dataclass(frozen=True, slots=True)
class WorkListAsked:
    """What a request for the work list asks: its query, checked."""

    owner_id: int | None
    mine: bool
    unassigned: bool
    gestore_id: int | None
    gp_id: str | None
    level: int | None
    pathology: str | None
    kinds: tuple[ItemKind, ...]
    priority: Priority | None
    due_from: date | None
    due_until: date | None
    include_snoozed: bool
    limit: int
    after: str | None


@router.get("/work-items", response_model=WorkListOut)
async def work_list(
    request: Request,
    token: Annotated[str | None, Depends(oauth2)],
    owner_id: Annotated[QueryId | None, Query(description="items assigned to this practitioner")] = None,
    mine: Annotated[bool, Query(description="items assigned to the signed-in practitioner")] = False,
    unassigned: Annotated[bool, Query()] = False,
    gestore_id: Annotated[QueryId | None, Query(description="staff: their own gestore only")] = None,
    gp_id: Annotated[Code | None, Query(description="the patients' GP (code)")] = None,
    level: Annotated[int | None, Query(ge=1, le=5)] = None,
    pathology: Annotated[PathologyId | None, Query(description="a catalog pathology id")] = None,
    kind: Annotated[list[ItemKind] | None, Query(description="repeatable", max_length=9)] = None,
    priority: Annotated[Priority | None, Query()] = None,
    due_from: Annotated[Day | None, Query()] = None,
    due_until: Annotated[Day | None, Query()] = None,
    include_snoozed: Annotated[bool, Query(description="also items snoozed into the future")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    after: Annotated[Cursor | None, Query(description="the next_cursor of the previous page")] = None,
) -> Response:
    """The work list, most urgent first (priority score, then due day, then item), one keyset page at a time.

    Staff see their gestore's items of the patients within their scope (a clinician: the patients they follow);
    an ATS analyst sees the items of their ATS, pseudonymised. Each row says its next action.
    """
    asked = WorkListAsked(
        owner_id, mine, unassigned, gestore_id, gp_id, level, pathology, tuple(kind or ()), priority, due_from,
        due_until, include_snoozed, limit, after,
    )  # fmt: skip
    state = state_of(request)
    reads = state.reads
    if reads is None or not reads.ready:
        return await run_in_threadpool(_work_list_in_session, request, token, asked)
    async with reads.connection() as connection:
        actor = await token_actor(connection, token, client_address(request))
        check(actor, Permission.READ_WORKLIST)
        filters, scope = _work_list_filter(actor, asked), visibility(actor)
        statement = reads.statement(
            ("work list", filters.shape, asked.after is not None, scope.form, asked.limit),
            lambda: _audited_page(filters, asked, scope),
        )
        at = now()  # the page as of this instant, and its audit rows' time
        values = row_page_values(filters, at, asked.limit, asked.after, "postgresql")
        audit = {"audit_at": at, "audit_actor": actor.username, "audit_addr": actor.remote_addr}
        rows = await fetch_rows(connection, statement, {**values, **scope.values, **audit})
    return _work_list_answer(state.key, actor, row_page(rows, asked.limit), asked.limit)


def _work_list_in_session(request: Request, token: str | None, asked: WorkListAsked) -> Response:
    """:func:`work_list` in a session, in the thread pool, as every endpoint runs (SQLite's way)."""
    state = state_of(request)
    with request_session(request) as session, session.begin():
        actor = current_actor(request, session, token)
        check(actor, Permission.READ_WORKLIST)
        filters = _work_list_filter(actor, asked)
        page = list_item_rows(session, filters, limit=asked.limit, after=asked.after, scope=visibility(actor))
        Ctx(session, actor, state).audit_patients("list", "work_item", dict.fromkeys(r.patient_id for r in page.rows))
    return _work_list_answer(state.key, actor, page, asked.limit)


def _audited_page(filters: WorkListFilter, asked: WorkListAsked, scope: Visibility) -> DriverStatement:
    """A page's statement with its audit rows, compiled for the read pool."""
    page = row_page_statement(filters, after=asked.after is not None, scope=scope, dialect="postgresql")
    audited = recording_reads(page, list_order, action="list", entity="work_item")
    return driver_statement(audited, DIALECT, {"limit": asked.limit + 1, "shown": asked.limit})


def _work_list_filter(actor: Actor, asked: WorkListAsked) -> WorkListFilter:
    """The filter of the items ``actor`` asked for and may see (staff: their gestore's; analysts: their ATS's)."""
    owner_id = asked.owner_id
    if asked.mine:
        if actor.practitioner_id is None:
            raise ApiError(422, "invalid request: query.mine: your account is not a practitioner's")
        owner_id = actor.practitioner_id
    if actor.pseudonymised:
        own_gestore, ats_code = asked.gestore_id, actor.ats_code
    else:
        own_gestore, ats_code = _own_gestore_id(actor), None
        if asked.gestore_id is not None and asked.gestore_id != own_gestore:
            raise ApiError(403, f"your account works for gestore {own_gestore}, not {asked.gestore_id}")
    return WorkListFilter(
        gestore_id=own_gestore,
        ats_code=ats_code,
        owner_id=owner_id,
        unassigned=asked.unassigned,
        gp_id=asked.gp_id,
        level=asked.level,
        pathology=asked.pathology,
        kinds=asked.kinds,
        priority=asked.priority,
        due_from=asked.due_from,
        due_until=asked.due_until,
        include_snoozed=asked.include_snoozed,
    )


def _own_gestore_id(actor: Actor) -> int:
    if actor.gestore_id is None:  # pragma: no cover - staff accounts always have their gestore
        raise ApiError(403, "your account works for no gestore")
    return actor.gestore_id


def _work_list_answer(key: bytes, actor: Actor, page: RowPage, limit: int) -> Response:
    if actor.pseudonymised:
        items = [pseudonymous_item(key, row) for row in page.rows]
    else:
        items = [listed_item(row) for row in page.rows]
    return json_answer({"items": items, "limit": limit, "next_cursor": page.next_cursor})


def visible_item(ctx: Ctx, item_id: int) -> tuple[WorkItem, Patient]:
    """The item if it is of the caller's gestore and its patient within their scope; 404 otherwise."""
    item = ctx.session.get(WorkItem, item_id)
    if item is None or item.gestore_id is None or item.gestore_id != ctx.actor.gestore_id:
        raise not_found(f"work item {item_id}")
    patient, _ = ctx.patient_by_id(item.patient_id, what=f"work item {item_id}")
    return item, patient


def _item_response(item: WorkItem, patient: Patient) -> WorkItemOut:
    return item_out(item, patient.resident_id, patient.level, patient.gp_id, next_action(item.kind))


@router.post("/work-items/{item_id}/assign")
def assign_item(ctx: Annotated[Ctx, requires(Permission.WORK_ITEMS)], item_id: IdPath, body: AssignIn) -> WorkItemOut:
    """Give the item to a practitioner with a role in the gestore."""
    item, patient = visible_item(ctx, item_id)
    require_processing(ctx.session, patient.id)
    return _item_response(assign(ctx.session, item.id, body.owner_id, author=ctx.actor.username), patient)


@router.post("/work-items/{item_id}/snooze")
def snooze_item(ctx: Annotated[Ctx, requires(Permission.WORK_ITEMS)], item_id: IdPath, body: SnoozeIn) -> WorkItemOut:
    """Put the item aside until a time, with a reason; it comes back by itself."""
    item, patient = visible_item(ctx, item_id)
    if body.until - now() > MAX_AHEAD:
        raise ApiError(422, "invalid request: body.until: snooze for at most a year")
    require_processing(ctx.session, patient.id)
    done = snooze(ctx.session, item.id, until=body.until, reason=body.reason, author=ctx.actor.username)
    return _item_response(done, patient)


@router.post("/work-items/{item_id}/close")
def close_item(ctx: Annotated[Ctx, requires(Permission.WORK_ITEMS)], item_id: IdPath, body: CloseIn) -> WorkItemOut:
    """Close the item with its outcome; a person's closure is final."""
    item, patient = visible_item(ctx, item_id)
    require_processing(ctx.session, patient.id)
    return _item_response(close(ctx.session, item.id, outcome=body.outcome, author=ctx.actor.username), patient)


# --- the patient's timeline ----------------------------------------------------------------------------------


@router.get("/patients/{ref}/timeline")
def timeline(ctx: Annotated[Ctx, requires(Permission.READ_TIMELINE)], ref: PatientRef) -> TimelineOut:
    """Everything of the follow-up about one patient: each plan's activities with what became of them and their
    bookings, every booking, the services the flows say were delivered, calls, transitions of care, and (for staff)
    the open work items."""
    patient, _ = ctx.patient(ref)
    session = ctx.session
    bookings = session.scalars(select(Booking).where(Booking.patient_id == patient.id).order_by(Booking.id)).all()
    slots = _slots(session, [b.slot_id for b in bookings])
    live = {(b.plan_id, b.activity_id): b.id for b in bookings if b.status is BookingStatus.BOOKED}
    outcomes = {
        (o.plan_id, o.activity_id): o
        for o in session.scalars(select(ActivityOutcome).where(ActivityOutcome.patient_id == patient.id))
    }
    plans = [_timeline_plan(session, p, outcomes, live) for p in plans_of(session, patient.id)]
    executions = session.scalars(
        select(Execution).where(Execution.patient_id == patient.id).order_by(Execution.day, Execution.id)
    ).all()
    contacts = session.scalars(
        select(Contact).where(Contact.patient_id == patient.id).order_by(Contact.at, Contact.id)
    ).all()
    transitions = session.scalars(
        select(CareTransition).where(CareTransition.patient_id == patient.id).order_by(CareTransition.event_on)
    ).all()
    alerts: list[WorkItemOut] = []
    if ctx.actor.staff:
        items = session.scalars(
            select(WorkItem)
            .where(
                WorkItem.patient_id == patient.id,
                WorkItem.gestore_id == ctx.actor.gestore_id,
                WorkItem.status != ItemStatus.CLOSED,
            )
            .order_by(WorkItem.priority_score.desc(), WorkItem.due_on, WorkItem.id)
        ).all()
        alerts = [_item_response(i, patient) for i in items]
    decision = can_process(session, patient.id)
    ctx.audit("read", "timeline", patient.id, patient_id=patient.id)
    return TimelineOut(
        patient_id=patient.id,
        processing=ProcessingOut(allowed=decision.allowed, reason=decision.reason),
        plans=plans,
        bookings=[booking_out(b, slots[b.slot_id]) for b in bookings],
        executions=[
            ExecutionOut(
                id=e.id,
                source=e.source,
                day=e.day,
                started_on=e.started_on,
                code=e.code,
                discipline=e.discipline,
                provider_code=e.provider_code,
            )
            for e in executions
        ],
        contacts=[contact_out(c) for c in contacts],
        transitions=[
            TransitionSummaryOut(
                id=t.id,
                kind=t.kind,
                event_on=t.event_on,
                source=t.source,
                recorded_at=t.recorded_at,
                follow_up_item_id=t.follow_up_item_id,
                review_item_id=t.review_item_id,
            )
            for t in transitions
        ],
        alerts=alerts,
    )


def _timeline_plan(
    session: Session,
    plan: CarePlanRecord,
    outcomes: dict[tuple[int, str], ActivityOutcome],
    live: dict[tuple[int, str], int],
) -> TimelinePlanOut:
    rows = session.scalars(
        select(PlanCalendarActivity)
        .join(PlanVersion, PlanVersion.calendar_id == PlanCalendarActivity.calendar_id)
        .where(PlanVersion.plan_id == plan.id, PlanVersion.version == plan.current_version)
        .order_by(PlanCalendarActivity.day, PlanCalendarActivity.activity_id)
    ).all()
    activities = []
    for a in rows:
        window = activity_window(a.day, a.times_per_year)
        stored = outcomes.get((plan.id, a.activity_id))
        activities.append(
            TimelineActivityOut(
                id=a.activity_id,
                day=a.day,
                code=a.code,
                kind=a.kind,
                description_it=a.description_it,
                description_en=a.description_en,
                times_per_year=a.times_per_year,
                window_from=window.opens,
                window_until=window.closes,
                outcome=None if stored is None else outcome_out(stored),
                booking_id=live.get((plan.id, a.activity_id)),
            )
        )
    return TimelinePlanOut(
        id=plan.id,
        status=plan.status,
        version=plan.current_version,
        start=plan.start_on,
        end=plan.end_on,
        activities=activities,
    )


def outcome_out(o: ActivityOutcome) -> OutcomeOut:
    return OutcomeOut(
        outcome=o.outcome,
        source=o.source,
        done_on=o.done_on,
        window_from=o.window_from,
        window_until=o.window_until,
        note=o.note,
        recorded_by=o.recorded_by,
        recorded_at=o.recorded_at,
    )


def contact_out(c: Contact) -> ContactOut:
    return ContactOut(
        id=c.id,
        patient_id=c.patient_id,
        direction=c.direction,
        at=c.at,
        operator=c.operator,
        outcome=c.outcome,
        call_back_at=c.call_back_at,
        note=c.note,
        item_id=c.item_id,
        call_back_item_id=c.call_back_item_id,
    )


# --- schedules and slots -------------------------------------------------------------------------------------


def _slots(session: Session, slot_ids: Iterable[int]) -> dict[int, SlotOut]:
    """The slots with their schedule's service and provider, and whether each has a live booking."""
    ids = sorted(set(slot_ids))
    if not ids:
        return {}
    taken = exists().where(Booking.slot_id == Slot.id, Booking.status == BookingStatus.BOOKED)
    rows = session.execute(
        select(Slot, Schedule.provider_id, Provider.name, Schedule.service_code, taken)
        .join(Schedule, Schedule.id == Slot.schedule_id)
        .join(Provider, Provider.id == Schedule.provider_id)
        .where(Slot.id.in_(ids))
    )
    return {
        slot.id: SlotOut(
            id=slot.id,
            schedule_id=slot.schedule_id,
            provider_id=provider_id,
            provider_name=name,
            service_code=code,
            day=slot.day,
            starts_at=slot.starts_at,
            ends_at=slot.ends_at,
            withdrawn=slot.withdrawn,
            booked=bool(booked),
        )
        for slot, provider_id, name, code, booked in rows
    }


def booking_out(b: Booking, slot: SlotOut) -> BookingOut:
    return BookingOut(
        id=b.id,
        status=b.status,
        patient_id=b.patient_id,
        plan_id=b.plan_id,
        activity_id=b.activity_id,
        slot=slot,
        booked_at=b.booked_at,
        booked_by=b.booked_by,
        ended_at=b.ended_at,
        ended_by=b.ended_by,
        end_reason=b.end_reason,
        replaces_id=b.replaces_id,
    )


def _booking_response(session: Session, b: Booking) -> BookingOut:
    return booking_out(b, _slots(session, [b.slot_id])[b.slot_id])


def schedule_out(session: Session, s: Schedule, published: int | None = None) -> ScheduleOut:
    openings = session.scalars(
        select(Availability).where(Availability.schedule_id == s.id).order_by(Availability.weekday, Availability.starts)
    )
    return ScheduleOut(
        id=s.id,
        provider_id=s.provider_id,
        service_code=s.service_code,
        name=s.name,
        slot_minutes=s.slot_minutes,
        valid_from=s.valid_from,
        valid_until=s.valid_until,
        closed_on_holidays=s.closed_on_holidays,
        openings=[OpeningOut(weekday=a.weekday, starts=a.starts, ends=a.ends) for a in openings],
        published=published,
    )


def _provider(ctx: Ctx, provider_id: int) -> Provider:
    provider = ctx.session.get(Provider, provider_id)
    if provider is None:
        raise not_found(f"provider {provider_id}")
    return provider


def _in_my_network(ctx: Ctx, provider: Provider) -> None:
    """403 unless the provider is in the network of the administrator's gestore today."""
    gestore_id = _own_gestore_id(ctx.actor)
    if provider.id not in {p.id for p in network(ctx.session, gestore_id, today_in_italy())}:
        raise ApiError(403, f"provider {provider.id} is not in the network of your gestore ({gestore_id})")


def _schedule(ctx: Ctx, schedule_id: int) -> Schedule:
    schedule = ctx.session.get(Schedule, schedule_id)
    if schedule is None:
        raise not_found(f"schedule {schedule_id}")
    return schedule


@router.get("/providers/{provider_id}/schedules")
def provider_schedules(
    ctx: Annotated[Ctx, requires(Permission.READ_SCHEDULES)], provider_id: IdPath
) -> list[ScheduleOut]:
    """A provider's schedules, one per service, with their weekly openings."""
    provider = _provider(ctx, provider_id)
    schedules = ctx.session.scalars(
        select(Schedule).where(Schedule.provider_id == provider.id).order_by(Schedule.service_code, Schedule.id)
    ).all()
    return [schedule_out(ctx.session, s) for s in schedules]


@router.post("/providers/{provider_id}/schedules", status_code=201)
def new_schedule(
    ctx: Annotated[Ctx, requires(Permission.MANAGE_SCHEDULES)], provider_id: IdPath, body: ScheduleIn
) -> ScheduleOut:
    """Publish a schedule for a service the provider offers, with weekly openings (Italian time); with
    ``publish_until``, its slots from ``valid_from`` (or today) up to that day too."""
    provider = _provider(ctx, provider_id)
    _in_my_network(ctx, provider)
    if body.valid_until is not None and body.valid_until < body.valid_from:
        raise ApiError(422, "invalid request: body.valid_until: before valid_from")
    first = max(body.valid_from, today_in_italy())
    if body.publish_until is not None and not first < body.publish_until <= first + timedelta(MAX_PUBLISH_DAYS):
        raise ApiError(422, f"invalid request: body.publish_until: within {MAX_PUBLISH_DAYS} days after {first}")
    schedule = create_schedule(
        ctx.session,
        provider.id,
        service_code=body.service_code,
        name=body.name,
        slot_minutes=body.slot_minutes,
        openings=[(o.weekday, o.starts, o.ends) for o in body.openings],
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        closed_on_holidays=body.closed_on_holidays,
        author=ctx.actor.username,
    )
    published = None
    if body.publish_until is not None:
        published = publish_slots(ctx.session, schedule.id, start=first, end=body.publish_until)
    return schedule_out(ctx.session, schedule, published)


@router.post("/providers/{provider_id}/closures", status_code=201)
def new_closure(
    ctx: Annotated[Ctx, requires(Permission.MANAGE_SCHEDULES)], provider_id: IdPath, body: ClosureIn
) -> ClosureOut:
    """Close the provider (or one schedule) for a day or part of it: its slots are withdrawn and their bookings
    cancelled, which puts the activities back on the work lists as not booked."""
    provider = _provider(ctx, provider_id)
    _in_my_network(ctx, provider)
    if body.schedule_id is not None:
        schedule = ctx.session.get(Schedule, body.schedule_id)
        if schedule is None or schedule.provider_id != provider.id:
            raise not_found(f"schedule {body.schedule_id} of provider {provider.id}")
    if (body.starts is None) != (body.ends is None) or (body.starts and body.ends and body.ends <= body.starts):
        raise ApiError(422, "invalid request: body.ends: a closure is a whole day, or a span that ends after it starts")
    cancelled = close_provider(
        ctx.session,
        provider.id,
        day=body.day,
        reason=body.reason,
        schedule_id=body.schedule_id,
        starts=body.starts,
        ends=body.ends,
        author=ctx.actor.username,
    )
    ctx.audit("close", "provider", provider.id, detail={"day": body.day.isoformat(), "cancelled": len(cancelled)})
    return ClosureOut(
        provider_id=provider.id,
        schedule_id=body.schedule_id,
        day=body.day,
        starts=body.starts,
        ends=body.ends,
        reason=body.reason,
        cancelled_bookings=len(cancelled),
    )


@router.get("/schedules/{schedule_id}/slots")
def schedule_slots(
    ctx: Annotated[Ctx, requires(Permission.READ_SCHEDULES)],
    schedule_id: IdPath,
    start: Annotated[Day | None, Query(description="first day (default: today)")] = None,
    end: Annotated[
        Day | None, Query(description=f"day after the last (default: 14 days on; at most {MAX_SLOT_DAYS})")
    ] = None,
    free: Annotated[bool, Query(description="only the free slots")] = False,
) -> list[SlotOut]:
    """A provider's booking calendar for one service: its slots day by day, booked or free (never by whom)."""
    schedule = _schedule(ctx, schedule_id)
    first = start or today_in_italy()
    last = end or first + timedelta(days=14)
    if not first < last <= first + timedelta(days=MAX_SLOT_DAYS):
        raise ApiError(422, f"invalid request: query.end: after start, and at most {MAX_SLOT_DAYS} days after it")
    query = (
        select(Slot.id)
        .where(Slot.schedule_id == schedule.id, Slot.day >= first, Slot.day < last)
        .order_by(Slot.starts_at)
    )
    if free:
        query = query.where(
            ~Slot.withdrawn,
            ~exists().where(Booking.slot_id == Slot.id, Booking.status == BookingStatus.BOOKED),
        )
    ids = list(ctx.session.scalars(query))
    slots = _slots(ctx.session, ids)
    return [slots[i] for i in ids]


@router.post("/schedules/{schedule_id}/slots")
def publish(
    ctx: Annotated[Ctx, requires(Permission.MANAGE_SCHEDULES)], schedule_id: IdPath, body: PublishIn
) -> PublishedOut:
    """Cut the schedule's openings from ``start`` to ``end`` (excluded) into slots; publishing again adds only
    what is missing."""
    schedule = _schedule(ctx, schedule_id)
    _in_my_network(ctx, _provider(ctx, schedule.provider_id))
    if not body.start < body.end <= body.start + timedelta(days=MAX_PUBLISH_DAYS):
        raise ApiError(422, f"invalid request: body.end: after start, and at most {MAX_PUBLISH_DAYS} days after it")
    published = publish_slots(ctx.session, schedule.id, start=body.start, end=body.end)
    ctx.audit("publish", "schedule", schedule.id, detail={"start": body.start.isoformat(), "slots": published})
    return PublishedOut(schedule_id=schedule.id, published=published)


# --- booking -------------------------------------------------------------------------------------------------


def _activity(ctx: Ctx, plan_id: int, activity_id: str) -> tuple[CarePlanRecord, PlannedActivity]:
    plan = visible_plan(ctx, plan_id)
    try:
        return plan, planned_activity(ctx.session, plan.id, activity_id)
    except CareError:
        raise not_found(f"activity {activity_id[:40]} in care plan {plan.id}") from None


def activity_ref(a: PlannedActivity) -> ActivityRefOut:
    window = a.window
    return ActivityRefOut(
        plan_id=a.plan_id,
        activity_id=a.activity_id,
        day=a.day,
        code=a.code,
        description=a.description,
        window_from=window.opens,
        window_until=window.closes,
    )


def visible_booking(ctx: Ctx, booking_id: int) -> Booking:
    booking = ctx.session.get(Booking, booking_id)
    if booking is None:
        raise not_found(f"booking {booking_id}")
    ctx.patient_by_id(booking.patient_id, what=f"booking {booking_id}")
    return booking


@router.get("/plans/{plan_id}/activities/{activity_id}/slots")
def activity_slots(
    ctx: Annotated[Ctx, requires(Permission.BOOK)],
    plan_id: IdPath,
    activity_id: Annotated[ActivityKey, Path()],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[SlotOut]:
    """Free slots for the activity's service, in its window, at providers of the gestore's network, nearest the
    planned day first."""
    plan, activity = _activity(ctx, plan_id, activity_id)
    require_processing(ctx.session, plan.patient_id)
    found = free_slots(ctx.session, activity, not_before=now(), limit=limit)
    ctx.audit("read_slots", "plan_activity", f"{plan.id}:{activity.activity_id}", patient_id=plan.patient_id)
    slots = _slots(ctx.session, [s.id for s in found])
    return [slots[s.id] for s in found]


@router.post("/plans/{plan_id}/activities/{activity_id}/booking", status_code=201)
def book_activity(
    ctx: Annotated[Ctx, requires(Permission.BOOK)],
    plan_id: IdPath,
    activity_id: Annotated[ActivityKey, Path()],
    body: SlotChoiceIn,
) -> BookingOut:
    """Book the activity into a free slot (409 if taken, withdrawn, outside its window or the network); the
    reminders are queued with it."""
    plan, activity = _activity(ctx, plan_id, activity_id)
    booking = book(ctx.session, plan.id, activity.activity_id, body.slot_id, author=ctx.actor.username)
    return _booking_response(ctx.session, booking)


@router.post("/bookings/{booking_id}/reschedule", status_code=201)
def reschedule_booking(
    ctx: Annotated[Ctx, requires(Permission.BOOK)], booking_id: IdPath, body: RescheduleIn
) -> BookingOut:
    """Move a live booking to another slot: the new booking replaces it; nothing changes if the slot is taken."""
    booking = visible_booking(ctx, booking_id)
    new = reschedule(ctx.session, booking.id, body.slot_id, reason=body.reason, author=ctx.actor.username)
    return _booking_response(ctx.session, new)


@router.post("/bookings/{booking_id}/cancel")
def cancel_booking(ctx: Annotated[Ctx, requires(Permission.BOOK)], booking_id: IdPath, body: CancelIn) -> BookingOut:
    """Cancel a live booking with a reason; its pending reminders are cancelled too."""
    booking = visible_booking(ctx, booking_id)
    require_processing(ctx.session, booking.patient_id)
    return _booking_response(
        ctx.session, cancel(ctx.session, booking.id, reason=body.reason, author=ctx.actor.username)
    )


@router.post("/plans/{plan_id}/bookings/preview")
def preview_year(ctx: Annotated[Ctx, requires(Permission.BOOK)], plan_id: IdPath) -> list[ProposalOut]:
    """A slot for every bookable activity of the plan not yet done nor booked whose window is still open, or
    none: what booking the whole plan-year would do. Nothing is stored."""
    plan = visible_plan(ctx, plan_id)
    proposals = preview_plan_booking(ctx.session, plan.id)
    slots = _slots(ctx.session, [p.slot.id for p in proposals if p.slot is not None])
    ctx.audit("preview_booking", "care_plan", plan.id, patient_id=plan.patient_id)
    return [
        ProposalOut(activity=activity_ref(p.activity), slot=None if p.slot is None else slots[p.slot.id])
        for p in proposals
    ]


@router.post("/plans/{plan_id}/bookings", status_code=201)
def book_year(ctx: Annotated[Ctx, requires(Permission.BOOK)], plan_id: IdPath) -> PlanBookingOut:
    """Book the whole plan-year as the preview proposes; say what had no slot and what was taken meanwhile."""
    plan = visible_plan(ctx, plan_id)
    if plan.status is not PlanStatus.ACTIVE:
        require_processing(ctx.session, plan.patient_id)
        raise ApiError(409, f"care plan {plan.id} is {plan.status}: bookings are made on the active PAI")
    result = book_plan(ctx.session, plan.id, author=ctx.actor.username)
    slots = _slots(ctx.session, [b.slot_id for b in result.booked])
    return PlanBookingOut(
        booked=[booking_out(b, slots[b.slot_id]) for b in result.booked],
        without_slot=[activity_ref(a) for a in result.without_slot],
        taken_meanwhile=[activity_ref(a) for a in result.taken_meanwhile],
    )


@router.post("/plans/{plan_id}/activities/{activity_id}/done", status_code=201)
def activity_done(
    ctx: Annotated[Ctx, requires(Permission.MARK_DONE)],
    plan_id: IdPath,
    activity_id: Annotated[ActivityKey, Path()],
    body: DoneIn,
) -> OutcomeOut:
    """A person records that the activity was done on a day (on time or late by its window), with a note; the
    flows never overwrite it."""
    plan, activity = _activity(ctx, plan_id, activity_id)
    row = mark_done(
        ctx.session, plan.id, activity.activity_id, done_on=body.done_on, note=body.note, author=ctx.actor.username
    )
    return outcome_out(row)


# --- contacts and transitions of care ------------------------------------------------------------------------


@router.post("/patients/{ref}/contacts", status_code=201)
def new_contact(ctx: Annotated[Ctx, requires(Permission.LOG_CONTACTS)], ref: PatientRef, body: ContactIn) -> ContactOut:
    """Log a call in or out with its outcome; a call-back becomes a work item at that time (at the desk's next
    opening); a call about a call-back item closes it."""
    patient, _ = ctx.patient(ref)
    current = now()
    at = body.at or current
    if not current - CONTACT_PAST <= at <= current + CONTACT_GRACE:
        raise ApiError(422, "invalid request: body.at: a call logged within the last year, not in the future")
    if (body.outcome is ContactOutcome.CALL_BACK) != (body.call_back_at is not None):
        raise ApiError(422, "invalid request: body.call_back_at: give it with a call_back outcome, and only then")
    if body.call_back_at is not None and not at < body.call_back_at <= at + MAX_AHEAD:
        raise ApiError(422, "invalid request: body.call_back_at: after the call, and within a year")
    if body.item_id is not None:
        item, _ = visible_item(ctx, body.item_id)
        if item.patient_id != patient.id:
            raise not_found(f"work item {body.item_id}")
    contact = log_contact(
        ctx.session,
        patient.id,
        direction=body.direction,
        outcome=body.outcome,
        operator=ctx.actor.username,
        at=at,
        call_back_at=body.call_back_at,
        note=body.note,
        item_id=body.item_id,
    )
    return contact_out(contact)


@router.post("/patients/{ref}/care-transitions", status_code=201)
def new_transition(
    ctx: Annotated[Ctx, requires(Permission.POST_TRANSITIONS)], ref: PatientRef, body: TransitionIn
) -> TransitionOut:
    """A hospital discharge or ER visit of the patient: a follow-up due within 2 working days for the case manager
    and a PAI review for the clinical manager (once per patient, kind and day: posting again returns the first)."""
    patient, _ = ctx.patient(ref)
    if body.event_on > today_in_italy():
        raise ApiError(422, "invalid request: body.event_on: in the future")
    require_processing(ctx.session, patient.id)
    known = ctx.session.scalars(
        select(CareTransition.id).where(
            CareTransition.patient_id == patient.id,
            CareTransition.kind == body.kind,
            CareTransition.event_on == body.event_on,
        )
    ).first()
    transition = open_transition(
        ctx.session, patient.id, body.kind, body.event_on, source="api", author=ctx.actor.username
    )
    if known is not None:
        ctx.audit("read", "care_transition", transition.id, patient_id=patient.id)
    follow_up, review = (
        ctx.session.get(WorkItem, i) for i in (transition.follow_up_item_id, transition.review_item_id)
    )
    assert follow_up is not None and review is not None
    return TransitionOut(
        id=transition.id,
        patient_id=patient.id,
        kind=transition.kind,
        event_on=transition.event_on,
        source=transition.source,
        recorded_at=transition.recorded_at,
        recorded_by=transition.recorded_by,
        follow_up=_item_response(follow_up, patient),
        review=_item_response(review, patient),
    )
