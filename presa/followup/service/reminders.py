"""Reminders: whom to tell, through which channel, when; the outbox the worker sends from.

**Who.** The patient's contact points (e-mail addresses, mobile numbers) and a caregiver's, each channel only with
the pact's consent - ``reminders_email`` for e-mail, ``reminders_sms`` for SMS - and a caregiver only when the pact
also gives ``caregiver_reminders`` (telling a third person about appointments is a purpose of its own, not the
``data_sharing`` with the gestore's network). A contact point the patient opted out of (per channel,
:func:`opt_out`) gets nothing.

**When.** A booking writes its reminders to the outbox in the booking's own transaction (the outbox pattern: a
reminder exists exactly when the booking committed): ``reminders.booking_lead_days`` days before (7 and 1), at
``reminders.send_at`` (10:00), moved out of the quiet hours (20:00-08:00). Rescheduling or cancelling cancels the
pending ones. :func:`enqueue_todo_reminders` reminds patients of the things they do themselves (a GP visit, with
no provider slot) ``todo_lead_days`` ahead.

**Sending** is the worker's (``presa.followup.worker``): :func:`claim` takes due rows with ``SELECT ... FOR UPDATE
SKIP LOCKED`` inside one ``UPDATE ... RETURNING`` (on SQLite the single UPDATE statement holds the write lock, which
is the same guarantee), giving each a lease; :func:`check_deliverable` asks again, at send time, whether consent
and opt-outs still allow it; :func:`mark_sent` records the send only if the row is still the worker's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from presa.care.pact import ConsentScope, ProcessingDecision
from presa.care.service.common import CareError, get, now, require_text
from presa.care.service.episodes import open_episode
from presa.care.service.pacts import can_process
from presa.care.store.audit import record
from presa.care.store.models import (
    CarePlanRecord,
    Gestore,
    Patient,
    PlanCalendarActivity,
    PlanStatus,
    PlanVersion,
    Provider,
)
from presa.followup.config import FollowupConfig, default_config
from presa.followup.messages import render
from presa.followup.rules import ITALY
from presa.followup.service.scope import processable
from presa.followup.store import (
    ActivityOutcome,
    Booking,
    BookingStatus,
    Channel,
    ContactPoint,
    OutboxMessage,
    OutboxStatus,
    RecipientRole,
    Schedule,
    Slot,
)

SCOPE_OF: dict[Channel, ConsentScope] = {
    Channel.EMAIL: ConsentScope.REMINDERS_EMAIL,
    Channel.SMS: ConsentScope.REMINDERS_SMS,
}
DEFAULT_PHONE = "il numero del suo centro servizi"


# --- contact points ------------------------------------------------------------------------------------------


def add_contact_point(
    session: Session,
    patient_id: int,
    *,
    channel: Channel | str,
    address: str,
    author: str,
    role: RecipientRole | str = RecipientRole.PATIENT,
    name: str | None = None,
    at: datetime | None = None,
) -> ContactPoint:
    at = at or now()
    try:
        parsed, who = Channel(channel), RecipientRole(role)
    except ValueError:
        raise CareError(f"channel '{channel}' / role '{role}': give email or sms, patient or caregiver") from None
    value = require_text(address, "the address")
    if parsed is Channel.EMAIL and "@" not in value:
        raise CareError(f"'{value}' is not an e-mail address")
    if parsed is Channel.SMS and not value.lstrip("+").replace(" ", "").isdigit():
        raise CareError(f"'{value}' is not a phone number")
    patient = get(session, Patient, patient_id, "patient")
    point = ContactPoint(
        patient_id=patient.id, channel=parsed, address=value, role=who, name=name, created_at=at, created_by=author
    )
    session.add(point)
    session.flush()
    record(
        session,
        actor=author,
        action="add_contact_point",
        entity="contact_point",
        entity_id=point.id,
        patient_id=patient_id,
        detail={"channel": parsed.value, "role": who.value},
        at=at,
    )
    return point


def opt_out(
    session: Session, patient_id: int, channel: Channel | str, *, author: str, at: datetime | None = None
) -> int:
    """The patient wants no more reminders through ``channel``: every contact point of it stops, and what is
    pending for it is cancelled. How many pending messages were cancelled."""
    at = at or now()
    parsed = Channel(channel)
    for point in session.scalars(
        select(ContactPoint).where(ContactPoint.patient_id == patient_id, ContactPoint.channel == parsed)
    ):
        point.opted_out_at = point.opted_out_at or at
    cancelled = _cancel(
        session,
        and_(OutboxMessage.patient_id == patient_id, OutboxMessage.channel == parsed),
        f"opted out of {parsed.value}",
        at,
    )
    record(
        session,
        actor=author,
        action="opt_out",
        entity="contact_point",
        patient_id=patient_id,
        detail={"channel": parsed.value},
        at=at,
    )
    return cancelled


def recipients(session: Session, patient_id: int, decision: ProcessingDecision | None = None) -> list[ContactPoint]:
    """The contact points a reminder may go to now: consent per channel, caregivers with their own scope, no opt-out."""
    decision = decision or can_process(session, patient_id)
    if not decision.allowed:
        return []
    points = session.scalars(
        select(ContactPoint)
        .where(ContactPoint.patient_id == patient_id, ContactPoint.opted_out_at.is_(None))
        .order_by(ContactPoint.id)
    )
    return [p for p in points if _allowed(p.channel, p.role, decision)]


def _allowed(channel: Channel, role: RecipientRole, decision: ProcessingDecision) -> bool:
    if not decision.allows(SCOPE_OF[channel]):
        return False
    return role is RecipientRole.PATIENT or decision.allows(ConsentScope.CAREGIVER_REMINDERS)


# --- enqueueing ----------------------------------------------------------------------------------------------


def enqueue_booking_reminders(
    session: Session, booking: Booking, *, at: datetime | None = None, config: FollowupConfig | None = None
) -> list[OutboxMessage]:
    """The reminders of one booking, for every recipient allowed, at each lead time still ahead."""
    at = at or now()
    settings = config or default_config()
    slot = get(session, Slot, booking.slot_id, "slot")
    schedule = get(session, Schedule, slot.schedule_id, "schedule")
    provider = get(session, Provider, schedule.provider_id, "provider")
    service = _description(session, booking.plan_id, booking.activity_id)
    gestore_name, phone = _gestore_of(session, booking.patient_id)
    quiet = settings.quiet_hours.hours()
    times = []
    for lead in sorted(set(settings.reminders.booking_lead_days), reverse=True):
        planned = datetime.combine(slot.day - timedelta(days=lead), settings.reminders.send_at, ITALY)
        send_at = quiet.next_allowed(planned)
        if at <= send_at < slot.starts_at:
            times.append((str(lead), send_at))
    if not times and slot.starts_at > at:
        times.append(("now", quiet.next_allowed(at)))
    out = []
    for point in recipients(session, booking.patient_id):
        text = render(
            "booking_reminder",
            name=point.name,
            service=service,
            day=slot.day,
            at=slot.starts_at,
            place=provider.name,
            gestore=gestore_name,
            phone=phone,
        )
        for label, send_at in times:
            out.append(
                enqueue(
                    session,
                    key=f"booking:{booking.id}:{label}:{point.id}",
                    point=point,
                    template="booking_reminder",
                    subject=text.subject,
                    body=text.email if point.channel is Channel.EMAIL else text.sms,
                    not_before=send_at,
                    at=at,
                    booking_id=booking.id,
                )
            )
    session.flush()
    return out


def cancel_booking_reminders(session: Session, booking_id: int, *, at: datetime | None = None) -> int:
    return _cancel(session, OutboxMessage.booking_id == booking_id, "booking ended", at or now())


def enqueue_todo_reminders(
    session: Session, *, today: date, at: datetime | None = None, config: FollowupConfig | None = None
) -> int:
    """Remind patients of the activities they arrange themselves (no service code: GP visits, education) due in
    ``todo_lead_days`` days and not done; once per activity, recipient and channel. How many were enqueued."""
    at = at or now()
    settings = config or default_config()
    due = today + timedelta(days=settings.reminders.todo_lead_days)
    done = select(ActivityOutcome.id).where(
        ActivityOutcome.plan_id == CarePlanRecord.id,
        ActivityOutcome.activity_id == PlanCalendarActivity.activity_id,
        ActivityOutcome.outcome != "missed",
    )
    rows = session.execute(
        select(
            CarePlanRecord.patient_id,
            CarePlanRecord.id,
            PlanCalendarActivity.activity_id,
            PlanCalendarActivity.day,
            PlanCalendarActivity.description_it,
        )
        .join(
            PlanVersion,
            and_(PlanVersion.plan_id == CarePlanRecord.id, PlanVersion.version == CarePlanRecord.current_version),
        )
        .join(PlanCalendarActivity, PlanCalendarActivity.calendar_id == PlanVersion.calendar_id)
        .where(
            CarePlanRecord.status == PlanStatus.ACTIVE,
            processable(CarePlanRecord.patient_id),
            PlanCalendarActivity.code.is_(None),
            PlanCalendarActivity.day > today,
            PlanCalendarActivity.day <= due,
            ~done.exists(),
        )
    ).all()
    quiet = settings.quiet_hours.hours()
    send_at = quiet.next_allowed(max(at, datetime.combine(today, settings.reminders.send_at, ITALY)))
    count = 0
    for patient_id, plan_id, activity_id, day, description in rows:
        gestore_name, phone = _gestore_of(session, patient_id)
        for point in recipients(session, patient_id):
            text = render(
                "activity_todo",
                name=point.name,
                service=description,
                day=day,
                at=None,
                place="",
                gestore=gestore_name,
                phone=phone,
            )
            key = f"todo:{plan_id}:{activity_id}:{point.id}"
            if session.scalars(select(OutboxMessage.id).where(OutboxMessage.key == key)).first() is None:
                enqueue(
                    session,
                    key=key,
                    point=point,
                    template="activity_todo",
                    subject=text.subject,
                    body=text.email if point.channel is Channel.EMAIL else text.sms,
                    not_before=send_at,
                    at=at,
                )
                count += 1
    session.flush()
    return count


def enqueue(
    session: Session,
    *,
    key: str,
    point: ContactPoint,
    template: str,
    subject: str,
    body: str,
    not_before: datetime,
    at: datetime,
    booking_id: int | None = None,
) -> OutboxMessage:
    """Write one message to the outbox for a contact point (once per key: the same key again returns the first)."""
    existing = session.scalars(select(OutboxMessage).where(OutboxMessage.key == key)).first()
    if existing is not None:
        return existing
    message = OutboxMessage(
        key=key,
        patient_id=point.patient_id,
        booking_id=booking_id,
        template=template,
        channel=point.channel,
        role=point.role,
        recipient=point.address,
        subject=subject if point.channel is Channel.EMAIL else None,
        body=body,
        not_before=not_before,
        status=OutboxStatus.PENDING,
        attempts=0,
        created_at=at,
    )
    session.add(message)
    return message


def _cancel(session: Session, condition: object, reason: str, at: datetime) -> int:
    result = session.execute(
        update(OutboxMessage)
        .where(condition, OutboxMessage.status == OutboxStatus.PENDING)  # type: ignore[arg-type]
        .values(status=OutboxStatus.CANCELLED, last_error=reason),
        execution_options={"synchronize_session": "fetch"},
    )
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def _description(session: Session, plan_id: int, activity_id: str) -> str:
    plan = get(session, CarePlanRecord, plan_id, "care plan")
    text = session.scalar(
        select(PlanCalendarActivity.description_it)
        .join(PlanVersion, PlanVersion.calendar_id == PlanCalendarActivity.calendar_id)
        .where(PlanVersion.plan_id == plan.id, PlanCalendarActivity.activity_id == activity_id)
        .order_by(PlanVersion.version.desc())
        .limit(1)
    )
    return text or activity_id


def _gestore_of(session: Session, patient_id: int) -> tuple[str, str]:
    episode = open_episode(session, patient_id)
    gestore = session.get(Gestore, episode.gestore_id) if episode and episode.gestore_id else None
    if gestore is None:
        return "Il suo centro servizi", DEFAULT_PHONE
    return gestore.name, gestore.phone or DEFAULT_PHONE


# --- the worker's side ---------------------------------------------------------------------------------------


def claimable(at: datetime) -> ColumnElement[bool]:
    """Due pending rows, and rows whose sender's lease ran out (the worker died or hung mid-send)."""
    return or_(
        and_(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.not_before <= at),
        and_(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.lease_until < at),
    )


def claim(
    session: Session,
    worker: str,
    *,
    at: datetime,
    limit: int,
    lease: timedelta,
    channels: tuple[Channel, ...] = (Channel.EMAIL, Channel.SMS),
) -> list[int]:
    """Take up to ``limit`` due rows for ``worker`` until ``at + lease``; their ids, oldest first.

    One statement: ``WITH due AS (SELECT ... FOR UPDATE SKIP LOCKED) UPDATE ... FROM due RETURNING id``, so on
    PostgreSQL concurrent workers skip each other's rows instead of waiting; SQLite has no row locks, but its
    UPDATE holds the database's write lock for the whole statement, so two workers cannot take the same row either.
    """
    due = (
        select(OutboxMessage.id)
        .where(claimable(at), OutboxMessage.channel.in_(channels))
        .order_by(OutboxMessage.not_before, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")  # a CTE runs once; a subquery in IN (...) may run per row and lock more than ``limit`` rows
    )
    taken = session.scalars(
        update(OutboxMessage)
        .where(OutboxMessage.id == due.c.id, claimable(at))
        .values(
            status=OutboxStatus.SENDING,
            claimed_by=worker,
            lease_until=at + lease,
            attempts=OutboxMessage.attempts + 1,
        )
        .returning(OutboxMessage.id),
        execution_options={"synchronize_session": False},
    ).all()
    return sorted(taken)


def check_deliverable(session: Session, message: OutboxMessage, *, at: datetime) -> str | None:
    """Why the message must not be sent now (None: send it): consent, opt-out or the booking changed since, or
    the appointment it reminds of has already begun."""
    decision = can_process(session, message.patient_id)
    if not decision.allowed:
        return decision.reason
    if not _allowed(message.channel, message.role, decision):
        return f"the care pact gives no consent to {message.channel.value} reminders for a {message.role.value}"
    point = session.scalars(
        select(ContactPoint).where(
            ContactPoint.patient_id == message.patient_id,
            ContactPoint.channel == message.channel,
            ContactPoint.address == message.recipient,
        )
    ).first()
    if point is None or point.opted_out_at is not None:
        return f"{message.channel.value} contact opted out or removed"
    if message.booking_id is not None:
        booking = session.get(Booking, message.booking_id)
        if booking is None or booking.status is not BookingStatus.BOOKED:
            return "booking ended"
        slot = session.get(Slot, booking.slot_id)
        if slot is None or slot.starts_at <= at:
            return "the appointment has already begun"
    return None


def mark_sent(session: Session, message_id: int, worker: str, *, gateway_id: str, at: datetime) -> bool:
    """Record the send; False if the row is no longer this worker's (its lease ran out and another took it)."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.status == OutboxStatus.SENDING,
            OutboxMessage.claimed_by == worker,
        )
        .values(status=OutboxStatus.SENT, sent_at=at, gateway_id=gateway_id, lease_until=None, last_error=None),
        execution_options={"synchronize_session": False},
    )
    return isinstance(result, CursorResult) and result.rowcount == 1


def give_up(session: Session, message_id: int, worker: str, *, status: OutboxStatus, reason: str) -> None:
    """Cancel (not allowed any more) or fail (the transport refused it for good) a claimed row."""
    session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.claimed_by == worker,
            OutboxMessage.status == OutboxStatus.SENDING,
        )
        .values(status=status, lease_until=None, last_error=reason),
        execution_options={"synchronize_session": False},
    )


def retry_later(session: Session, message_id: int, worker: str, *, error: str, not_before: datetime) -> None:
    session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.claimed_by == worker,
            OutboxMessage.status == OutboxStatus.SENDING,
        )
        .values(status=OutboxStatus.PENDING, lease_until=None, not_before=not_before, last_error=error),
        execution_options={"synchronize_session": False},
    )


def outbox_of(session: Session, patient_id: int) -> Sequence[OutboxMessage]:
    return session.scalars(
        select(OutboxMessage).where(OutboxMessage.patient_id == patient_id).order_by(OutboxMessage.id)
    ).all()
