"""Work lists: items refreshed from the plans, bookings and enrolments; listed with filters and keyset pages.

:func:`refresh_worklist` is the daily job. From the active PAIs of the patients that may be processed it wants one
item per activity that is overdue, not yet booked (bookable and due within the booking horizon) or due soon; from
the episodes, one per invitation unanswered too long, per plan ending soon without a successor, per pact due for
its yearly renewal. It creates what is missing, closes (as ``system``) the items it made that are no longer
wanted, reopens its own closures when they are wanted again - never a person's closure - and brings every open
item's priority up to date. Items for a patient whose pact was revoked are closed; :func:`list_items` hides them
even before the next refresh.

Post-discharge follow-ups, PAI reviews and call-backs are made by their own services (``transitions``,
``contacts``) through :func:`add_item`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any, Protocol, TypeVar
from typing import cast as cast_type

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Date,
    Integer,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    or_,
    select,
    true,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy import literal as sql_literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import QueryableAttribute, Session, aliased
from sqlalchemy.sql.visitors import ExternallyTraversible, replacement_traverse

from presa.care.enrolment import EpisodeState
from presa.care.pact import PactStatus
from presa.care.service.common import CareError, get, now, require_text
from presa.care.service.organisations import active_role
from presa.care.store.audit import origin, record
from presa.care.store.bulk import bulk_insert, counted, table_of
from presa.care.store.models import (
    AuditEvent,
    CarePact,
    CarePlanRecord,
    Episode,
    Patient,
    PlanCalendarActivity,
    PlanStatus,
    PlanVersion,
    RoleKind,
)
from presa.followup.config import FollowupConfig, default_config
from presa.followup.rules import (
    ASAP_FROM,
    KIND_POINTS,
    LEVEL_POINTS,
    POINTS_PER_DAY_OVERDUE,
    URGENT_FROM,
    italian_day,
    next_action,
    priority_band,
    priority_score,
)
from presa.followup.service.scope import processable
from presa.followup.store import (
    ActivityOutcome,
    Booking,
    BookingStatus,
    ItemKind,
    ItemStatus,
    Outcome,
    Priority,
    Slot,
    WorkItem,
)

SYSTEM = "system"
REFRESH = "refresh"
CHUNK = 5_000
NEW_ITEM_COLUMNS = ("key", "kind", "status", "patient_id", "gestore_id", "ats_code", "owner_id", "plan_id",
                    "activity_id", "activity_kind", "due_on", "priority_score", "priority", "title", "origin",
                    "created_at", "created_by", "updated_at")  # fmt: skip
ACTIVITY_KINDS = frozenset({ItemKind.OVERDUE, ItemKind.NOT_BOOKED, ItemKind.DUE_SOON})
DEFAULT_PAGE = 50
MAX_PAGE = 500
TITLES: dict[ItemKind, str] = {
    ItemKind.DUE_SOON: "{what} due on {day}",
    ItemKind.OVERDUE: "{what} overdue since {day}",
    ItemKind.NOT_BOOKED: "{what} due on {day} is not booked",
    ItemKind.INVITED_NO_ANSWER: "invited on {day}, no gestore chosen yet",
    ItemKind.PLAN_RENEWAL: "PAI ends on {day}: renew it",
    ItemKind.PACT_RENEWAL: "care pact due for renewal on {day}",
}


# --- creating and changing items -----------------------------------------------------------------------------


def add_item(
    session: Session,
    *,
    key: str,
    kind: ItemKind,
    patient: Patient,
    title: str,
    due_on: date,
    author: str,
    origin: str,
    at: datetime,
    gestore_id: int | None = None,
    owner_id: int | None = None,
    due_at: datetime | None = None,
    plan_id: int | None = None,
    activity_id: str | None = None,
    activity_kind: str | None = None,
    config: FollowupConfig | None = None,
) -> WorkItem:
    """A new open item, or the existing one with the same key (an item is about one thing, once)."""
    existing = session.scalars(select(WorkItem).where(WorkItem.key == key)).first()
    if existing is not None:
        return existing
    cap = (config or default_config()).worklist.overdue_cap_days
    score = priority_score(kind, patient.level, due_on, italian_day(at), cap_days=cap)
    item = WorkItem(
        key=key,
        kind=kind,
        status=ItemStatus.OPEN,
        patient_id=patient.id,
        gestore_id=gestore_id,
        ats_code=patient.ats_code,
        owner_id=owner_id,
        plan_id=plan_id,
        activity_id=activity_id,
        activity_kind=activity_kind,
        due_on=due_on,
        due_at=due_at,
        priority_score=score,
        priority=priority_band(score),
        title=title,
        origin=origin,
        created_at=at,
        created_by=author,
        updated_at=at,
    )
    session.add(item)
    session.flush()
    record(
        session,
        actor=author,
        action="open",
        entity="work_item",
        entity_id=item.id,
        patient_id=patient.id,
        detail={"kind": kind.value, "due_on": due_on.isoformat()},
        at=at,
    )
    return item


def assign(session: Session, item_id: int, owner_id: int, *, author: str, at: datetime | None = None) -> WorkItem:
    """Give the item to a practitioner who holds a role within the item's gestore today."""
    at = at or now()
    item = _live(session, item_id)
    if item.gestore_id is None:
        raise CareError(f"work item {item.id} belongs to no gestore yet: it is the ATS's to handle")
    day = italian_day(at)
    roles = [r for r in RoleKind if active_role(session, owner_id, item.gestore_id, r, day) is not None]
    if not roles:
        raise CareError(f"practitioner {owner_id} holds no role within gestore {item.gestore_id} on {day.isoformat()}")
    previous, item.owner_id, item.updated_at = item.owner_id, owner_id, at
    session.flush()
    _audit(session, item, author, "assign", {"from": previous, "to": owner_id}, at)
    return item


def snooze(
    session: Session, item_id: int, *, until: datetime, reason: str, author: str, at: datetime | None = None
) -> WorkItem:
    """Put the item aside until ``until``, with a reason; it comes back by itself then."""
    at = at or now()
    item = _live(session, item_id)
    if until <= at:
        raise CareError(f"snooze until {until.isoformat()}: that is not in the future")
    item.status, item.snoozed_until = ItemStatus.SNOOZED, until
    item.snooze_reason, item.updated_at = require_text(reason, "the reason for snoozing"), at
    session.flush()
    _audit(session, item, author, "snooze", {"until": until.isoformat(), "reason": item.snooze_reason}, at)
    return item


def close(session: Session, item_id: int, *, outcome: str, author: str, at: datetime | None = None) -> WorkItem:
    """Close the item with its outcome; a person's closure is final (a refresh never reopens it)."""
    at = at or now()
    item = _live(session, item_id)
    _close(item, require_text(outcome, "the outcome"), author, at)
    session.flush()
    _audit(session, item, author, "close", {"outcome": item.outcome}, at)
    return item


def settle_booked(session: Session, plan_id: int, activity_id: str, *, author: str, at: datetime) -> int:
    """Close, as the refresh will, the "not booked" and "overdue" items of an activity just booked, so that no list
    offers to book it again until the next refresh; how many. They are closed as ``system``: should the booking
    be cancelled, the next refresh reopens them (a person's closure, by contrast, is final)."""
    w = WorkItem
    items = session.scalars(
        select(w).where(
            w.plan_id == plan_id,
            w.activity_id == activity_id,
            w.kind.in_((ItemKind.NOT_BOOKED, ItemKind.OVERDUE)),
            w.status != ItemStatus.CLOSED,
            w.origin == REFRESH,
        )
    ).all()
    for item in items:
        _close(item, "booked", SYSTEM, at)
    session.flush()
    for item in items:
        _audit(session, item, author, "close", {"outcome": item.outcome, "by": SYSTEM}, at)
    return len(items)


def _live(session: Session, item_id: int) -> WorkItem:
    item = get(session, WorkItem, item_id, "work item")
    if item.status is ItemStatus.CLOSED:
        raise CareError(f"work item {item.id} is closed ({item.outcome})")
    return item


def _close(item: WorkItem, outcome: str, author: str, at: datetime) -> None:
    item.status, item.closed_at, item.closed_by, item.outcome, item.updated_at = (
        ItemStatus.CLOSED,
        at,
        author,
        outcome,
        at,
    )
    item.snoozed_until = item.snooze_reason = None


def _audit(session: Session, item: WorkItem, author: str, action: str, detail: dict[str, object], at: datetime) -> None:
    record(
        session,
        actor=author,
        action=action,
        entity="work_item",
        entity_id=item.id,
        patient_id=item.patient_id,
        detail=detail,
        at=at,
    )


# --- the refresh ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    key: str
    kind: ItemKind
    patient_id: int
    gestore_id: int | None
    owner_id: int | None
    due_on: date
    title: str
    plan_id: int | None = None
    activity_id: str | None = None
    activity_kind: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshReport:
    created: int
    reopened: int
    closed: int
    rescored: int


def refresh_worklist(
    session: Session,
    *,
    today: date,
    at: datetime | None = None,
    gestore_id: int | None = None,
    config: FollowupConfig | None = None,
) -> RefreshReport:
    """Bring the work-list items in line with the plans, bookings and enrolments as of ``today``.

    Set-based, for a region's lists: the items wanted are computed in one pass, the new ones stored by the
    database's bulk load (with their audit rows), closures, reopenings and the new priorities written by a few
    UPDATE statements; never an ORM object per item.
    """
    at = at or now()
    settings = config or default_config()
    session.flush()
    wanted = {w.key: w for w in _wanted(session, today, gestore_id, settings)}
    mine = WorkItem.origin == REFRESH
    if gestore_id is not None:
        mine = and_(mine, WorkItem.gestore_id == gestore_id)
    existing = {
        key: (item_id, status, closed_by)
        for key, item_id, status, closed_by in session.execute(
            select(WorkItem.key, WorkItem.id, WorkItem.status, WorkItem.closed_by).where(mine)
        )
    }
    table, w = table_of(WorkItem), WorkItem
    new = [want for key, want in wanted.items() if key not in existing]
    created = _create(session, new, at, settings)
    reopen = [item_id for key, (item_id, status, by) in existing.items()
              if key in wanted and status is ItemStatus.CLOSED and by == SYSTEM]  # fmt: skip
    reopened = _by_ids(session, table, reopen, {"status": ItemStatus.OPEN, "closed_at": None, "closed_by": None,
                                                "outcome": None, "updated_at": at})  # fmt: skip
    closing = {"status": ItemStatus.CLOSED, "closed_at": at, "closed_by": SYSTEM, "snoozed_until": None,
               "snooze_reason": None, "updated_at": at}  # fmt: skip
    live = w.status != ItemStatus.CLOSED
    scope = [live] if gestore_id is None else [live, w.gestore_id == gestore_id]
    closed = counted(
        session,
        update(table)
        .where(*scope, w.kind != ItemKind.INVITED_NO_ANSWER, ~processable(w.patient_id))
        .values(**closing, outcome="processing stopped: no signed care pact in force"),
    )
    resolved = [item_id for key, (item_id, status, _) in existing.items()
                if key not in wanted and status is not ItemStatus.CLOSED]  # fmt: skip
    closed += _by_ids(session, table, resolved, {**closing, "outcome": "resolved"}, only_live=True)
    score = _score_sql(session, today, settings.worklist.overdue_cap_days)
    rescored = counted(
        session,
        update(table)
        .where(*scope, w.priority_score != score)
        .values(priority_score=score, priority=_band_sql(score), updated_at=at),
    )
    session.expire_all()
    return RefreshReport(created, reopened, closed, rescored)


def _create(session: Session, new: Sequence[Wanted], at: datetime, settings: FollowupConfig) -> int:
    """Store the new items and their audit rows, by the database's bulk load."""
    if not new:
        return 0
    levels: dict[int, tuple[int, str]] = {}
    ids = sorted({want.patient_id for want in new})
    for start in range(0, len(ids), CHUNK):
        levels.update(
            (patient_id, (level, ats_code))
            for patient_id, level, ats_code in session.execute(
                select(Patient.id, Patient.level, Patient.ats_code).where(Patient.id.in_(ids[start : start + CHUNK]))
            )
        )
    day, cap = italian_day(at), settings.worklist.overdue_cap_days
    rows = []
    for want in new:
        level, ats_code = levels[want.patient_id]
        score = priority_score(want.kind, level, want.due_on, day, cap_days=cap)
        rows.append((want.key, want.kind, ItemStatus.OPEN, want.patient_id, want.gestore_id, ats_code, want.owner_id,
                     want.plan_id, want.activity_id, want.activity_kind, want.due_on, score, priority_band(score),
                     want.title, REFRESH, at, SYSTEM, at))  # fmt: skip
    before = session.scalar(select(func.coalesce(func.max(WorkItem.id), 0)))
    connection = session.connection()
    bulk_insert(connection, table_of(WorkItem), NEW_ITEM_COLUMNS, rows)
    made = session.execute(
        select(WorkItem.id, WorkItem.patient_id, WorkItem.kind, WorkItem.due_on).where(
            WorkItem.id > before, WorkItem.origin == REFRESH, WorkItem.created_at == at
        )
    )
    where = origin(session)
    bulk_insert(
        connection,
        table_of(AuditEvent),
        ("at", "actor", "action", "entity", "entity_id", "patient_id", "remote_addr", "detail"),
        ((at, SYSTEM, "open", "work_item", str(item_id), patient_id, where,
          {"kind": kind.value, "due_on": due_on.isoformat()}) for item_id, patient_id, kind, due_on in made),
    )  # fmt: skip
    return len(rows)


def _by_ids(
    session: Session, table: Table, ids: Sequence[int], values: dict[str, Any], *, only_live: bool = False
) -> int:
    changed = 0
    for start in range(0, len(ids), CHUNK):
        statement = update(table).where(table.c.id.in_(ids[start : start + CHUNK])).values(**values)
        if only_live:
            statement = statement.where(table.c.status != ItemStatus.CLOSED)
        changed += counted(session, statement)
    return changed


def _score_sql(session: Session, today: date, cap_days: int) -> ColumnElement[int]:
    """``rules.priority_score`` in SQL, for every item at once (tests check that the two agree)."""
    w = WorkItem
    level = select(Patient.level).where(Patient.id == w.patient_id).scalar_subquery()
    level_points = case(*((level == k, v) for k, v in LEVEL_POINTS.items()), else_=100)
    kind_points = case(*((w.kind == k, v) for k, v in KIND_POINTS.items()), else_=0)
    if session.get_bind().dialect.name == "postgresql":
        late: ColumnElement[int] = func.least(func.greatest(sql_literal(today, Date) - w.due_on, 0), cap_days)
    else:
        days = cast(func.julianday(sql_literal(today.isoformat())) - func.julianday(w.due_on), Integer)
        late = func.min(func.max(days, 0), cap_days)
    return cast(level_points + kind_points + POINTS_PER_DAY_OVERDUE * late, Integer)


def _band_sql(score: ColumnElement[int]) -> ColumnElement[str]:
    """``rules.priority_band`` in SQL."""
    return case((score >= ASAP_FROM, Priority.ASAP.value), (score >= URGENT_FROM, Priority.URGENT.value),
                else_=Priority.ROUTINE.value)  # fmt: skip


def _wanted(session: Session, today: date, gestore_id: int | None, settings: FollowupConfig) -> list[Wanted]:
    return [
        *_activity_items(session, today, gestore_id, settings),
        *_invitation_items(session, today, gestore_id, settings),
        *_renewal_items(session, today, gestore_id, settings),
    ]


def _activity_items(session: Session, today: date, gestore_id: int | None, settings: FollowupConfig) -> list[Wanted]:
    w = settings.worklist
    live = aliased(Booking)
    query = (
        select(
            CarePlanRecord.id,
            CarePlanRecord.patient_id,
            Episode.gestore_id,
            Episode.case_manager_id,
            PlanCalendarActivity.activity_id,
            PlanCalendarActivity.day,
            PlanCalendarActivity.code,
            PlanCalendarActivity.kind,
            PlanCalendarActivity.description_en,
            Slot.day,
        )
        .join(
            PlanVersion,
            and_(PlanVersion.plan_id == CarePlanRecord.id, PlanVersion.version == CarePlanRecord.current_version),
        )
        .join(PlanCalendarActivity, PlanCalendarActivity.calendar_id == PlanVersion.calendar_id)
        .join(Episode, Episode.id == CarePlanRecord.episode_id)
        .outerjoin(
            ActivityOutcome,
            and_(
                ActivityOutcome.plan_id == CarePlanRecord.id,
                ActivityOutcome.activity_id == PlanCalendarActivity.activity_id,
            ),
        )
        .outerjoin(
            live,
            and_(
                live.plan_id == CarePlanRecord.id,
                live.activity_id == PlanCalendarActivity.activity_id,
                live.status == BookingStatus.BOOKED,
            ),
        )
        .outerjoin(Slot, Slot.id == live.slot_id)
        .where(
            CarePlanRecord.status == PlanStatus.ACTIVE,
            processable(CarePlanRecord.patient_id),
            PlanCalendarActivity.day >= today - timedelta(days=w.overdue_lookback_days),
            PlanCalendarActivity.day <= today + timedelta(days=w.booking_horizon_days),
            or_(ActivityOutcome.id.is_(None), ActivityOutcome.outcome == Outcome.MISSED),
        )
    )
    if gestore_id is not None:
        query = query.where(Episode.gestore_id == gestore_id)
    out = []
    for plan_id, patient_id, gestore, manager, activity_id, day, code, kind, what, booked_day in session.execute(query):
        effective = booked_day or day
        if effective < today:
            item_kind, key = ItemKind.OVERDUE, f"overdue:{plan_id}:{activity_id}:{effective.isoformat()}"
        elif code and booked_day is None:
            item_kind, key = ItemKind.NOT_BOOKED, f"not_booked:{plan_id}:{activity_id}"
        elif effective <= today + timedelta(days=w.due_soon_days):
            item_kind, key = ItemKind.DUE_SOON, f"due_soon:{plan_id}:{activity_id}"
        else:
            continue
        title = TITLES[item_kind].format(what=what, day=effective.isoformat())
        out.append(Wanted(key, item_kind, patient_id, gestore, manager, effective, title, plan_id, activity_id, kind))
    return out


def _invitation_items(session: Session, today: date, gestore_id: int | None, settings: FollowupConfig) -> list[Wanted]:
    if gestore_id is not None:
        return []  # an unanswered invitation has no gestore yet: it is on the ATS's list
    cutoff = today - timedelta(days=settings.worklist.invited_no_answer_days)
    query = select(Episode.id, Episode.patient_id, Episode.state_since).where(
        Episode.state == EpisodeState.INVITED, Episode.closed_on.is_(None), Episode.state_since <= cutoff
    )
    return [
        Wanted(
            f"invited:{episode_id}",
            ItemKind.INVITED_NO_ANSWER,
            patient_id,
            None,
            None,
            since + timedelta(days=settings.worklist.invited_no_answer_days),
            TITLES[ItemKind.INVITED_NO_ANSWER].format(day=since.isoformat()),
        )
        for episode_id, patient_id, since in session.execute(query)
    ]


def _renewal_items(session: Session, today: date, gestore_id: int | None, settings: FollowupConfig) -> list[Wanted]:
    lead = timedelta(days=settings.worklist.renewal_lead_days)
    later = aliased(CarePlanRecord)
    plans = (
        select(
            CarePlanRecord.id,
            CarePlanRecord.patient_id,
            Episode.gestore_id,
            Episode.clinical_manager_id,
            CarePlanRecord.end_on,
        )
        .join(Episode, Episode.id == CarePlanRecord.episode_id)
        .where(
            CarePlanRecord.status == PlanStatus.ACTIVE,
            CarePlanRecord.end_on <= today + lead,
            processable(CarePlanRecord.patient_id),
            ~exists().where(
                later.episode_id == CarePlanRecord.episode_id,
                later.id != CarePlanRecord.id,
                later.start_on > CarePlanRecord.start_on,
                later.status.in_((PlanStatus.DRAFT, PlanStatus.ACTIVE)),
            ),
        )
    )
    valid = timedelta(days=settings.worklist.pact_valid_days)
    pacts = (
        select(CarePact.id, CarePact.patient_id, Episode.gestore_id, Episode.case_manager_id, CarePact.signed_at)
        .join(Episode, Episode.id == CarePact.episode_id)
        .where(CarePact.status == PactStatus.SIGNED, Episode.closed_on.is_(None), processable(CarePact.patient_id))
    )
    if gestore_id is not None:
        plans, pacts = plans.where(Episode.gestore_id == gestore_id), pacts.where(Episode.gestore_id == gestore_id)
    out = [
        Wanted(f"plan_renewal:{plan_id}", ItemKind.PLAN_RENEWAL, patient_id, gestore, manager, end,
               TITLES[ItemKind.PLAN_RENEWAL].format(day=end.isoformat()), plan_id)
        for plan_id, patient_id, gestore, manager, end in session.execute(plans)
    ]  # fmt: skip
    for pact_id, patient_id, gestore, manager, signed_at in session.execute(pacts):
        if signed_at is None:  # pragma: no cover - a signed pact has its time (a CHECK says so)
            continue
        due = italian_day(signed_at) + valid
        if due <= today + lead:
            title = TITLES[ItemKind.PACT_RENEWAL].format(day=due.isoformat())
            out.append(
                Wanted(f"pact_renewal:{pact_id}", ItemKind.PACT_RENEWAL, patient_id, gestore, manager, due, title)
            )
    return out


# --- listing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkListFilter:
    """What to show; every field is optional and they all hold together."""

    gestore_id: int | None = None
    ats_code: str | None = None
    owner_id: int | None = None
    unassigned: bool = False
    gp_id: str | None = None
    level: int | None = None
    pathology: str | None = None
    kinds: tuple[ItemKind, ...] = ()
    priority: Priority | None = None
    due_from: date | None = None
    due_until: date | None = None
    include_snoozed: bool = False

    @property
    def shape(self) -> tuple[object, ...]:
        """What of the filter decides a page's statement: which filters are set, and how many kinds."""
        return _given(self), len(self.kinds)


@dataclass(frozen=True, slots=True)
class WorkRow:
    item: WorkItem
    resident_id: str
    level: int
    gp_id: str | None
    next_action: str


@dataclass(frozen=True, slots=True)
class WorkPage:
    rows: list[WorkRow]
    next_cursor: str | None = None
    filters: WorkListFilter = field(default_factory=WorkListFilter)


def encode_cursor(item: WorkItem | Row[*tuple[Any, ...]]) -> str:
    """The cursor of the page after ``item`` (an item, or a row of :func:`list_item_rows`)."""
    raw = f"{item.priority_score}|{item.due_on.isoformat()}|{item.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, date, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, day, item_id = raw.split("|")
        return int(score), date.fromisoformat(day), int(item_id)
    except ValueError:
        raise CareError(f"'{cursor}' is not a work-list cursor") from None


class PageScope(Protocol):
    """The caller's condition on the items' patients (the API's: which patients the account may see) in a form a
    statement built once can carry: ``condition`` is the same for every caller of one ``form``, its bind
    parameters named after the keys of ``values`` and holding no value of their own, so that a statement run
    without this caller's ``values`` fails instead of showing anyone else's patients."""

    @property
    def form(self) -> str: ...

    @property
    def values(self) -> Mapping[str, Any]: ...

    def condition(self, patient_id: QueryableAttribute[int]) -> ColumnElement[bool]: ...


def list_items(
    session: Session,
    filters: WorkListFilter,
    *,
    at: datetime | None = None,
    limit: int = DEFAULT_PAGE,
    after: str | None = None,
    scope: Sequence[ColumnElement[bool]] = (),
) -> WorkPage:
    """One page of the work list: highest priority first, then the earliest due, then the oldest item.

    Shown: open items, snoozed ones whose snooze has run out (``include_snoozed`` shows them all), call-backs
    only once their time has come; never the items of a patient whose care pact in force was revoked. ``scope``
    adds the caller's conditions on :class:`WorkItem` (the pages': which patients the account may see).
    """
    dialect = session.get_bind().dialect.name
    values = _page_values(filters, at or now(), limit, after, dialect)
    selected = select(WorkItem, Patient.resident_id, Patient.level, Patient.gp_id)
    query = _page_statement(selected, filters, after is not None, dialect).where(*scope)
    rows = [
        WorkRow(item, resident_id, level, gp_id, next_action(item.kind))
        for item, resident_id, level, gp_id in session.execute(query, values)
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return WorkPage(rows, encode_cursor(rows[-1].item) if more else None, filters)


_w = WorkItem
LISTED_COLUMNS = (
    _w.id, _w.kind, _w.status, _w.priority, _w.priority_score, _w.due_on, _w.due_at, _w.title, _w.patient_id,
    Patient.resident_id, Patient.level, Patient.gp_id, _w.gestore_id, _w.owner_id, _w.plan_id, _w.activity_id,
    _w.activity_kind, _w.snoozed_until, _w.snooze_reason, _w.outcome,
)  # fmt: skip
"""The columns of :func:`list_item_rows`: what a list shows of an item and of its patient."""


@dataclass(frozen=True, slots=True)
class RowPage:
    rows: Sequence[Row[*tuple[Any, ...]]]
    """The :data:`LISTED_COLUMNS` of each item, by name."""
    next_cursor: str | None = None


AnySelect = Select[*tuple[Any, ...]]
_ROW_PAGES: dict[tuple[object, ...], AnySelect] = {}
"""The statements of :func:`list_item_rows` by shape; a few dozen in practice (bounded all the same)."""
MAX_SHAPES = 512


def list_item_rows(
    session: Session,
    filters: WorkListFilter,
    *,
    scope: PageScope,
    at: datetime | None = None,
    limit: int = DEFAULT_PAGE,
    after: str | None = None,
) -> RowPage:
    """:func:`list_items` as plain rows of :data:`LISTED_COLUMNS` - the same items in the same order - for the API,
    which turns a page of up to 500 rows straight into JSON: no ORM object per item, and the statement of
    :func:`row_page_statement`, built once per shape."""
    dialect = session.get_bind().dialect.name
    statement = row_page_statement(filters, after=after is not None, scope=scope, dialect=dialect)
    values = row_page_values(filters, at or now(), limit, after, dialect)
    # On the session's connection, not through the session: the rows are plain columns, which the ORM's result
    # layer would only copy (0.2 ms a page).
    rows = session.connection().execute(statement, {**values, **scope.values}).all()
    return row_page(rows, limit)


def row_page(rows: Sequence[Row[*tuple[Any, ...]]], limit: int) -> RowPage:
    """The page of rows of :func:`row_page_statement` (one more than ``limit``, when more follow)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return RowPage(rows, encode_cursor(rows[-1]) if more else None)


def row_page_statement(filters: WorkListFilter, *, after: bool, scope: PageScope, dialect: str) -> AnySelect:
    """The statement of a page of :func:`list_item_rows` of this shape (which filters are given, how many kinds, a
    cursor or not, the scope's form, the dialect), built once and run with each page's values
    (:func:`row_page_values` and the scope's), because building and cache-keying it afresh took longer than
    running it.

    On PostgreSQL a page of some kinds of item is one index range per kind (migration 0014), merged: with the
    kinds as one ``IN`` list the gestore's queue was walked and every item of another kind skipped (2.6 ms of SQL
    against 0.7 ms for a page of all kinds at a million residents). The statement's constants are written in its
    text (:func:`_constants_inline`)."""
    shape = (dialect, filters.shape, after, scope.form)
    known = _ROW_PAGES.get(shape)
    if known is not None:
        return known
    merged = dialect == "postgresql" and bool(filters.kinds)
    page = _page_statement(select(*LISTED_COLUMNS), filters, after, dialect, kinds=not merged)
    page = page.where(scope.condition(WorkItem.patient_id))
    statement = _constants_inline(_merged_kinds(page, len(filters.kinds)) if merged else page)
    if len(_ROW_PAGES) >= MAX_SHAPES:
        _ROW_PAGES.clear()
    _ROW_PAGES[shape] = statement
    return statement


def row_page_values(
    filters: WorkListFilter, at: datetime, limit: int, after: str | None, dialect: str
) -> dict[str, Any]:
    """The values of :func:`row_page_statement` but the scope's: :func:`_page_values`, the kinds one by one where
    they are merged ranges."""
    values = _page_values(filters, at, limit, after, dialect)
    if dialect == "postgresql" and "kinds" in values:
        values.update({f"page_kind_{number}": kind for number, kind in enumerate(values.pop("kinds"))})
    return values


def _merged_kinds(statement: AnySelect, kinds: int) -> AnySelect:
    """``statement`` (a page, in the list's order, with its LIMIT) for each of ``kinds`` kinds of item - bind
    parameters ``page_kind_0``, ``page_kind_1``... - merged into one page in the same order."""
    ranges = union_all(*(statement.where(WorkItem.kind == bindparam(f"page_kind_{n}")) for n in range(kinds)))
    merged = ranges.subquery("by_kind")
    return select(merged).order_by(*list_order(merged.c)).limit(_limit())


def list_order(columns: Any) -> list[ColumnElement[Any]]:
    """The work list's order over ``columns`` (the items', or a subquery's of them): the highest priority score
    first, then the earliest due, then the oldest item."""
    return [columns.priority_score.desc(), columns.due_on, columns.id]


def _limit() -> BindParameter[int]:
    """A page's LIMIT, written in the statement's text when it runs (one text per page size: a handful)."""
    return bindparam("limit", type_=Integer, literal_execute=True)


def _constants_inline(statement: AnySelect) -> AnySelect:
    """``statement`` with its constants (an item's states and kinds, a pact's, a probe's ``LIMIT 1``) written in
    its text rather than sent as parameters. PostgreSQL then plans the prepared statement once for all, a generic
    plan that walks the queue index: with its constants as parameters it could not know that the partial index
    (``status <> 'closed'``) applies, chose a full scan for the generic plan and so planned every execution
    afresh, 0.3-0.5 ms of each page's SQL."""

    def inline(element: ExternallyTraversible, **_: Any) -> ExternallyTraversible | None:
        if isinstance(element, BindParameter) and element.unique and element.value is not None:
            constant = element._clone()
            constant.literal_execute = True
            return constant
        return None

    inlined = replacement_traverse(cast_type(ExternallyTraversible, statement), {}, inline)
    return cast_type(AnySelect, inlined)  # a statement gives a statement of its kind


def work_list_query(
    session: Session,
    filters: WorkListFilter,
    *,
    at: datetime,
    limit: int = DEFAULT_PAGE,
    after: str | None = None,
    scope: Sequence[ColumnElement[bool]] = (),
) -> Select[WorkItem, str, int, str | None]:
    """The SELECT of one page of :func:`list_items`, its values bound (one row more than ``limit``, to know whether
    more follow)."""
    dialect = session.get_bind().dialect.name
    selected = select(WorkItem, Patient.resident_id, Patient.level, Patient.gp_id)
    query = _page_statement(selected, filters, after is not None, dialect).where(*scope)
    return query.params(_page_values(filters, at, limit, after, dialect))


_S = TypeVar("_S", bound="Select[*tuple[Any, ...]]")


def _page_statement(selected: _S, filters: WorkListFilter, after: bool, dialect: str, *, kinds: bool = True) -> _S:
    """``selected`` (columns of work items and their patients) from one page of the list: the items' order, what
    is shown, the filters given and the cursor, every value a bind parameter named as in :func:`_page_values`.
    What it builds depends on :func:`_given` ``(filters)``, ``after`` and ``dialect`` only; without ``kinds`` the
    kinds are left to the caller."""
    w = WorkItem
    at: BindParameter[datetime] = bindparam("at")  # typed by the columns it is compared with
    query = (
        selected.select_from(w)
        .join(Patient, Patient.id == w.patient_id)
        .where(~_revoked(w.patient_id))
        .order_by(*list_order(w))
        .limit(_limit())
    )
    shown: ColumnElement[bool] = or_(
        w.status == ItemStatus.OPEN, and_(w.status == ItemStatus.SNOOZED, w.snoozed_until <= at)
    )
    if filters.include_snoozed:
        shown = w.status != ItemStatus.CLOSED
    query = query.where(shown, or_(w.kind != ItemKind.CALL_BACK, w.due_at <= at))
    query = query.where(*_conditions(filters, dialect, kinds=kinds))
    if after:
        score: BindParameter[int] = bindparam("after_score")
        day: BindParameter[date] = bindparam("after_day")
        item_id: BindParameter[int] = bindparam("after_id")
        query = query.where(
            w.priority_score <= score,  # redundant, but it lets the index start at the cursor
            or_(
                w.priority_score < score,
                and_(w.priority_score == score, w.due_on > day),
                and_(w.priority_score == score, w.due_on == day, w.id > item_id),
            ),
        )
    return query


def _given(filters: WorkListFilter) -> tuple[str, ...]:
    """The filters that are set, by name: with the cursor and the dialect, what decides a page's statement. Unset is
    None, False or no kinds - by identity, so that a 0 (a level, an id) is a value, not "unset"."""
    return tuple(f.name for f in fields(filters) if not _unset(getattr(filters, f.name)))


def _unset(value: object) -> bool:
    return value is None or value is False or value == ()


def _page_values(filters: WorkListFilter, at: datetime, limit: int, after: str | None, dialect: str) -> dict[str, Any]:
    """The bind parameters of :func:`_page_statement`: the filters given, by their names, and the page's own."""
    if not 1 <= limit <= MAX_PAGE:
        raise CareError(f"a page holds 1 to {MAX_PAGE} items, not {limit}")
    values: dict[str, Any] = {name: getattr(filters, name) for name in _given(filters)}
    values.pop("unassigned", None)  # conditions without a value
    values.pop("include_snoozed", None)
    if "kinds" in values:
        values["kinds"] = list(filters.kinds)
    if "pathology" in values and dialect == "postgresql":
        values["pathology"] = [filters.pathology]  # JSONB containment: the list holds it
    values["at"], values["limit"] = at, limit + 1
    if after is not None:
        values["after_score"], values["after_day"], values["after_id"] = decode_cursor(after)
    return values


def _conditions(f: WorkListFilter, dialect: str, *, kinds: bool = True) -> list[ColumnElement[bool]]:
    w = WorkItem
    conditions: list[ColumnElement[bool]] = []
    if f.gestore_id is not None:
        conditions.append(w.gestore_id == bindparam("gestore_id"))
    if f.ats_code is not None:
        conditions.append(w.ats_code == bindparam("ats_code"))
    if f.owner_id is not None:
        conditions.append(w.owner_id == bindparam("owner_id"))
    if f.unassigned:
        conditions.append(w.owner_id.is_(None))
    if f.gp_id is not None:
        conditions.append(Patient.gp_id == bindparam("gp_id"))
    if f.level is not None:
        conditions.append(Patient.level == bindparam("level"))
    if f.pathology is not None:
        conditions.append(_has_pathology(dialect))
    if f.kinds and kinds:
        conditions.append(w.kind.in_(bindparam("kinds", expanding=True)))
    if f.priority is not None:
        conditions.append(w.priority == bindparam("priority"))
    if f.due_from is not None:
        conditions.append(w.due_on >= bindparam("due_from"))
    if f.due_until is not None:
        conditions.append(w.due_on <= bindparam("due_until"))
    return conditions


def _has_pathology(dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return type_coerce(Patient.pathologies, JSONB).contains(bindparam("pathology", type_=JSONB))
    each = func.json_each(Patient.pathologies).table_valued("value")
    return exists(select(each.c.value).where(each.c.value == bindparam("pathology")))


_REVOKED, _NEWER = aliased(CarePact, name="revoked_pact"), aliased(CarePact, name="newer_pact")  # made once: costly


def _revoked(patient_id: QueryableAttribute[int] | ColumnElement[int]) -> ColumnElement[bool]:
    """The patient's latest pact decision is a revocation (no newer version signed since).

    A probe of the row's own patient (a boolean scalar subquery with a LIMIT, as ``presa.web.access.visible``),
    evaluated only for the rows a page reaches: as ``EXISTS`` it was planned as an anti-join with every revoked
    pact of the region, read in full on each request (a scan of ``care_pacts``, most of the page's 1 ms at 20,000
    residents)."""
    revoked, newer = _REVOKED, _NEWER
    probe = (
        select(true())
        .where(
            revoked.patient_id == patient_id,
            revoked.status == PactStatus.REVOKED,
            ~exists().where(
                newer.episode_id == revoked.episode_id,
                newer.version > revoked.version,
                newer.status == PactStatus.SIGNED,
            ),
        )
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(probe, false())


def items_of(session: Session, patient_id: int) -> Sequence[WorkItem]:
    return session.scalars(select(WorkItem).where(WorkItem.patient_id == patient_id).order_by(WorkItem.id)).all()
