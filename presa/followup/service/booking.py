"""Booking: providers' schedules and slots, and PAI activities booked into them - never two bookings of a slot.

A provider of the gestore's network publishes a :class:`~presa.followup.store.Schedule` per service (nomenclator
code) with recurring weekly openings (:func:`create_schedule`) and closures (:func:`add_closure`: a holiday, a
strike, a broken machine; national holidays are closed by default); :func:`publish_slots` cuts the openings into
slots (``presa.followup.availability``), idempotently.

:func:`book` puts one planned activity into a free slot of the same service family, inside the activity's window
(``presa.followup.rules.activity_window``), at a provider in the gestore's network on that day.
:func:`reschedule` and :func:`cancel` end a booking with a reason. :func:`preview_plan_booking` proposes a slot for
every bookable activity of a plan still to be done, and says which have none; :func:`book_plan` books the
proposals in one go.

**No double booking.** Two partial unique indexes (``status = 'booked'``: one per slot, one per activity) make the
database refuse a second live booking whatever the application does; each booking is inserted inside a savepoint,
so a refusal (a concurrent transaction booked the slot first: PostgreSQL makes the second insert wait for the first
to commit, then fails it) becomes :class:`SlotTakenError` and the caller's transaction goes on. Every booking also
writes its reminders to the outbox in the same transaction (``reminders``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Select, and_, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from presa.care.service.common import CareError, get, now, require_text
from presa.care.service.organisations import network
from presa.care.service.pacts import require_processing
from presa.care.store.audit import record
from presa.care.store.bulk import table_of
from presa.care.store.models import CarePlanRecord, Episode, PlanCalendarActivity, PlanStatus, PlanVersion, Provider
from presa.followup.availability import Closure, Opening, expand
from presa.followup.rules import ITALY, Window, activity_window, code_stem, italian_day, same_family
from presa.followup.service import reminders, worklist
from presa.followup.store import (
    ActivityOutcome,
    Availability,
    Booking,
    BookingStatus,
    Outcome,
    Schedule,
    ScheduleException,
    Slot,
)


class SlotTakenError(CareError):
    """The slot, or the activity, has a live booking already."""


# --- schedules, closures, slots ------------------------------------------------------------------------------


def create_schedule(
    session: Session,
    provider_id: int,
    *,
    service_code: str,
    name: str,
    slot_minutes: int,
    openings: Iterable[tuple[int, time, time]],
    valid_from: date,
    author: str,
    valid_until: date | None = None,
    closed_on_holidays: bool = True,
    at: datetime | None = None,
) -> Schedule:
    """A provider's agenda for a service it offers, open each week on ``openings`` (weekday, from, to)."""
    provider = get(session, Provider, provider_id, "provider")
    offered = {s.service_code for s in provider.services}
    if service_code not in offered:
        raise CareError(f"provider {provider.code} does not offer service {service_code}")
    spans = sorted(openings)
    if not spans:
        raise CareError("a schedule needs at least one weekly opening")
    for weekday, starts, ends in spans:
        if weekday not in range(7) or ends <= starts:
            raise CareError(
                f"opening {weekday} {starts}-{ends}: give a weekday 0-6 and a span that ends after it starts"
            )
    schedule = Schedule(
        provider_id=provider.id,
        service_code=service_code,
        name=require_text(name, "the schedule's name"),
        slot_minutes=slot_minutes,
        valid_from=valid_from,
        valid_until=valid_until,
        closed_on_holidays=closed_on_holidays,
        created_at=at or now(),
        created_by=author,
    )
    session.add(schedule)
    session.flush()
    session.add_all(Availability(schedule_id=schedule.id, weekday=w, starts=s, ends=e) for w, s, e in spans)
    session.flush()
    record(
        session,
        actor=author,
        action="create",
        entity="schedule",
        entity_id=schedule.id,
        detail={"provider_id": provider.id, "service_code": service_code},
    )
    return schedule


def add_closure(
    session: Session,
    provider_id: int,
    *,
    day: date,
    reason: str,
    author: str,
    schedule_id: int | None = None,
    starts: time | None = None,
    ends: time | None = None,
    at: datetime | None = None,
) -> list[Booking]:
    """Close a provider (or one schedule) for a day or part of it; published slots in it are withdrawn and their
    bookings cancelled (returned, so that someone rebooks them: the work list shows them as not booked again)."""
    at = at or now()
    get(session, Provider, provider_id, "provider")
    if (starts is None) != (ends is None) or (starts is not None and ends is not None and ends <= starts):
        raise CareError("a closure is a whole day (no times) or a span that ends after it starts")
    session.add(
        ScheduleException(
            provider_id=provider_id,
            schedule_id=schedule_id,
            day=day,
            starts=starts,
            ends=ends,
            reason=require_text(reason, "the closure's reason"),
            created_at=at,
            created_by=author,
        )
    )
    schedules = select(Schedule.id).where(Schedule.provider_id == provider_id)
    if schedule_id is not None:
        schedules = schedules.where(Schedule.id == schedule_id)
    affected = session.scalars(select(Slot).where(Slot.schedule_id.in_(schedules), Slot.day == day, ~Slot.withdrawn))
    cancelled = []
    for slot in affected:
        local_start, local_end = slot.starts_at.astimezone(ITALY).time(), slot.ends_at.astimezone(ITALY).time()
        if starts is not None and ends is not None and not (local_start < ends and starts < local_end):
            continue
        slot.withdrawn = True
        for booking in session.scalars(
            select(Booking).where(Booking.slot_id == slot.id, Booking.status == BookingStatus.BOOKED)
        ):
            _end(session, booking, BookingStatus.CANCELLED, f"provider closed: {reason}", author, at)
            cancelled.append(booking)
    session.flush()
    return cancelled


def publish_slots(session: Session, schedule_id: int, *, start: date, end: date) -> int:
    """Cut the schedule's openings from ``start`` to ``end`` (excluded) into slots; how many new ones."""
    schedule = get(session, Schedule, schedule_id, "schedule")
    first = max(start, schedule.valid_from)
    last = min(end, schedule.valid_until + timedelta(days=1)) if schedule.valid_until else end
    if first >= last:
        return 0
    openings = [
        Opening(a.weekday, a.starts, a.ends)
        for a in session.scalars(select(Availability).where(Availability.schedule_id == schedule.id))
    ]
    closures = [
        Closure(c.day, c.starts, c.ends)
        for c in session.scalars(
            select(ScheduleException).where(
                ScheduleException.provider_id == schedule.provider_id,
                or_(ScheduleException.schedule_id.is_(None), ScheduleException.schedule_id == schedule.id),
                ScheduleException.day >= first,
                ScheduleException.day < last,
            )
        )
    ]
    spans = expand(
        openings,
        closures,
        slot_minutes=schedule.slot_minutes,
        start=first,
        end=last,
        closed_on_holidays=schedule.closed_on_holidays,
    )
    if not spans:
        return 0
    before = _count_slots(session, schedule.id)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(table_of(Slot)).on_conflict_do_nothing(index_elements=["schedule_id", "starts_at"])
    session.execute(
        statement,
        [
            {
                "schedule_id": schedule.id,
                "day": s.day,
                "starts_at": s.starts_at,
                "ends_at": s.ends_at,
                "withdrawn": False,
            }
            for s in spans
        ],
    )
    return _count_slots(session, schedule.id) - before


def _count_slots(session: Session, schedule_id: int) -> int:
    return len(session.scalars(select(Slot.id).where(Slot.schedule_id == schedule_id)).all())


# --- finding free slots --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedActivity:
    plan_id: int
    patient_id: int
    gestore_id: int | None
    activity_id: str
    code: str | None
    day: date
    times_per_year: float
    description: str

    @property
    def window(self) -> Window:
        return activity_window(self.day, self.times_per_year)


def planned_activity(session: Session, plan_id: int, activity_id: str) -> PlannedActivity:
    """An activity of the plan's current version, with what booking needs to know of it."""
    row = session.execute(
        _activities_query().where(CarePlanRecord.id == plan_id, PlanCalendarActivity.activity_id == activity_id)
    ).first()
    if row is None:
        raise CareError(f"care plan {plan_id} has no activity '{activity_id}' in its current version")
    return PlannedActivity(*row)


def _activities_query() -> Select[int, int, int | None, str, str | None, date, float, str]:
    return (
        select(
            CarePlanRecord.id,
            CarePlanRecord.patient_id,
            Episode.gestore_id,
            PlanCalendarActivity.activity_id,
            PlanCalendarActivity.code,
            PlanCalendarActivity.day,
            PlanCalendarActivity.times_per_year,
            PlanCalendarActivity.description_it,
        )
        .join(
            PlanVersion,
            and_(PlanVersion.plan_id == CarePlanRecord.id, PlanVersion.version == CarePlanRecord.current_version),
        )
        .join(PlanCalendarActivity, PlanCalendarActivity.calendar_id == PlanVersion.calendar_id)
        .join(Episode, Episode.id == CarePlanRecord.episode_id)
    )


def free_slots(session: Session, activity: PlannedActivity, *, not_before: datetime, limit: int = 20) -> Sequence[Slot]:
    """Free, published slots for the activity's service family in its window, at providers of the gestore's
    network, nearest the planned day first."""
    if activity.code is None or activity.gestore_id is None:
        return []
    window = activity.window
    providers = [p.id for p in network(session, activity.gestore_id, max(window.opens, italian_day(not_before)))]
    if not providers:
        return []
    stem = code_stem(activity.code)
    schedules = [
        s.id
        for s in session.scalars(
            select(Schedule).where(Schedule.provider_id.in_(providers), Schedule.service_code.like(f"{stem}%"))
        )
        if same_family(activity.code, s.service_code)
    ]
    if not schedules:
        return []
    taken = exists().where(Booking.slot_id == Slot.id, Booking.status == BookingStatus.BOOKED)
    candidates = session.scalars(
        select(Slot)
        .where(
            Slot.schedule_id.in_(schedules),
            Slot.day >= window.opens,
            Slot.day <= window.closes,
            Slot.starts_at >= not_before,
            ~Slot.withdrawn,
            ~taken,
        )
        .order_by(Slot.starts_at)
    ).all()
    return sorted(candidates, key=lambda s: (abs((s.day - activity.day).days), s.starts_at))[:limit]


# --- booking -------------------------------------------------------------------------------------------------


def book(
    session: Session,
    plan_id: int,
    activity_id: str,
    slot_id: int,
    *,
    author: str,
    at: datetime | None = None,
    replaces: Booking | None = None,
) -> Booking:
    """Book one planned activity into a slot; :class:`SlotTakenError` if the slot or the activity is taken."""
    at = at or now()
    _lock_slot(session, slot_id)
    plan = get(session, CarePlanRecord, plan_id, "care plan")
    require_processing(session, plan.patient_id)
    if plan.status is not PlanStatus.ACTIVE:
        raise CareError(f"care plan {plan.id} is {plan.status}: bookings are made on the active PAI")
    activity = planned_activity(session, plan_id, activity_id)
    slot = get(session, Slot, slot_id, "slot")
    _check_slot(session, activity, slot, at)
    done = session.scalars(
        select(ActivityOutcome).where(
            ActivityOutcome.plan_id == plan.id,
            ActivityOutcome.activity_id == activity_id,
            ActivityOutcome.outcome != Outcome.MISSED,
        )
    ).first()
    if done is not None:
        raise CareError(f"activity '{activity_id}' was done on {done.done_on}: nothing to book")
    holder = session.scalars(
        select(Booking).where(
            or_(Booking.slot_id == slot.id, and_(Booking.plan_id == plan.id, Booking.activity_id == activity_id)),
            Booking.status == BookingStatus.BOOKED,
        )
    ).first()
    if holder is not None:
        raise SlotTakenError(f"slot {slot.id} or activity '{activity_id}' is already booked (booking {holder.id})")
    booking = Booking(
        slot_id=slot.id,
        patient_id=plan.patient_id,
        plan_id=plan.id,
        activity_id=activity_id,
        status=BookingStatus.BOOKED,
        booked_at=at,
        booked_by=author,
        replaces_id=replaces.id if replaces else None,
    )
    try:
        with session.begin_nested():
            session.add(booking)
            session.flush()
    except IntegrityError:
        raise SlotTakenError(
            f"slot {slot.id} ({slot.starts_at.astimezone(ITALY):%d/%m/%Y %H:%M}) or activity '{activity_id}' "
            "is already booked"
        ) from None
    record(
        session,
        actor=author,
        action="book",
        entity="booking",
        entity_id=booking.id,
        patient_id=plan.patient_id,
        detail={"plan_id": plan.id, "activity_id": activity_id, "slot_id": slot.id},
        at=at,
    )
    reminders.enqueue_booking_reminders(session, booking, at=at)
    worklist.settle_booked(session, plan.id, activity_id, author=author, at=at)
    return booking


def _lock_slot(session: Session, slot_id: int) -> None:
    """Take the slot before anything else: a row lock on PostgreSQL, the write lock on SQLite (whose deferred
    transactions could otherwise not upgrade to writing once another booking committed). Bookers of one slot then
    go one after the other and the later ones see the earlier booking; the unique index stays the guarantee."""
    session.execute(
        update(Slot).where(Slot.id == slot_id).values(withdrawn=Slot.withdrawn),
        execution_options={"synchronize_session": False},
    )


def _check_slot(session: Session, activity: PlannedActivity, slot: Slot, at: datetime) -> None:
    if activity.code is None:
        raise CareError(f"activity '{activity.activity_id}' has no service code: it is not booked with a provider")
    schedule = get(session, Schedule, slot.schedule_id, "schedule")
    if slot.withdrawn:
        raise CareError(f"slot {slot.id} was withdrawn (the provider closed)")
    if slot.starts_at <= at:
        raise CareError(f"slot {slot.id} is in the past")
    if not same_family(activity.code, schedule.service_code):
        raise CareError(f"slot {slot.id} is for service {schedule.service_code}, not {activity.code}")
    window = activity.window
    if not window.holds(slot.day):
        raise CareError(
            f"slot {slot.id} is on {slot.day.isoformat()}, outside the window of '{activity.activity_id}' "
            f"({window.opens.isoformat()} to {window.closes.isoformat()})"
        )
    if activity.gestore_id is None or schedule.provider_id not in {
        p.id for p in network(session, activity.gestore_id, slot.day)
    }:
        raise CareError(f"the provider of slot {slot.id} is not in the gestore's network on {slot.day.isoformat()}")


def reschedule(
    session: Session, booking_id: int, slot_id: int, *, reason: str, author: str, at: datetime | None = None
) -> Booking:
    """Move a live booking to another slot: the old one ends as rescheduled, the new one replaces it; if the new
    slot is taken, nothing changes."""
    at = at or now()
    old = _live_booking(session, booking_id)
    text = require_text(reason, "the reason")
    with session.begin_nested():
        _end(session, old, BookingStatus.RESCHEDULED, text, author, at)
        session.flush()
        return book(session, old.plan_id, old.activity_id, slot_id, author=author, at=at, replaces=old)


def cancel(session: Session, booking_id: int, *, reason: str, author: str, at: datetime | None = None) -> Booking:
    at = at or now()
    booking = _live_booking(session, booking_id)
    _end(session, booking, BookingStatus.CANCELLED, require_text(reason, "the reason"), author, at)
    session.flush()
    return booking


def _live_booking(session: Session, booking_id: int) -> Booking:
    booking = get(session, Booking, booking_id, "booking")
    if booking.status is not BookingStatus.BOOKED:
        raise CareError(f"booking {booking.id} is {booking.status}")
    return booking


def _end(session: Session, booking: Booking, status: BookingStatus, reason: str, author: str, at: datetime) -> None:
    booking.status, booking.ended_at, booking.ended_by, booking.end_reason = status, at, author, reason
    reminders.cancel_booking_reminders(session, booking.id, at=at)
    record(
        session,
        actor=author,
        action=status.value,
        entity="booking",
        entity_id=booking.id,
        patient_id=booking.patient_id,
        detail={"reason": reason},
        at=at,
    )


# --- a whole plan-year ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposal:
    activity: PlannedActivity
    slot: Slot | None


@dataclass(frozen=True, slots=True)
class PlanBooking:
    booked: list[Booking]
    without_slot: list[PlannedActivity]
    taken_meanwhile: list[PlannedActivity]


def preview_plan_booking(session: Session, plan_id: int, *, at: datetime | None = None) -> list[Proposal]:
    """A slot for every bookable activity of the plan not yet done nor booked, whose window is still open; None
    where there is none. Nothing is written: show it, then :func:`book_plan`."""
    at = at or now()
    plan = get(session, CarePlanRecord, plan_id, "care plan")
    require_processing(session, plan.patient_id)
    today = italian_day(at)
    booked = exists().where(
        Booking.plan_id == CarePlanRecord.id,
        Booking.activity_id == PlanCalendarActivity.activity_id,
        Booking.status == BookingStatus.BOOKED,
    )
    done = exists().where(
        ActivityOutcome.plan_id == CarePlanRecord.id,
        ActivityOutcome.activity_id == PlanCalendarActivity.activity_id,
        ActivityOutcome.outcome != Outcome.MISSED,
    )
    rows = session.execute(
        _activities_query()
        .where(CarePlanRecord.id == plan.id, PlanCalendarActivity.code.is_not(None), ~booked, ~done)
        .order_by(PlanCalendarActivity.day, PlanCalendarActivity.activity_id)
    ).all()
    used: set[int] = set()
    used_days: set[date] = set()
    proposals = []
    for row in rows:
        activity = PlannedActivity(*row)
        if activity.window.closes < today:
            continue
        choice = None
        for slot in free_slots(session, activity, not_before=at, limit=200):
            if slot.id not in used and slot.day not in used_days:
                choice = slot
                break
        if choice is not None:
            used.add(choice.id)
            used_days.add(choice.day)
        proposals.append(Proposal(activity, choice))
    return proposals


def book_plan(session: Session, plan_id: int, *, author: str, at: datetime | None = None) -> PlanBooking:
    """Book the whole plan-year as :func:`preview_plan_booking` proposes; report what had no slot and what was
    taken by someone else in between (a free slot is looked for again once for those)."""
    at = at or now()
    booked, without, taken = [], [], []
    for proposal in preview_plan_booking(session, plan_id, at=at):
        if proposal.slot is None:
            without.append(proposal.activity)
            continue
        try:
            booked.append(book(session, plan_id, proposal.activity.activity_id, proposal.slot.id, author=author, at=at))
        except SlotTakenError:
            retry = [s for s in free_slots(session, proposal.activity, not_before=at) if s.id != proposal.slot.id]
            try:
                if not retry:
                    raise SlotTakenError("no other slot")
                booked.append(book(session, plan_id, proposal.activity.activity_id, retry[0].id, author=author, at=at))
            except SlotTakenError:
                taken.append(proposal.activity)
    return PlanBooking(booked, without, taken)


def bookings_of(session: Session, patient_id: int) -> Sequence[Booking]:
    return session.scalars(select(Booking).where(Booking.patient_id == patient_id).order_by(Booking.id)).all()
