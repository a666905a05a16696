"""The follow-up tables, on the care store's metadata (same ``Base``, same Alembic migrations: ``r0003``).

Groups, with their FHIR R4 counterparts:

- reconciliation: :class:`FlowLoad` (one validated flow store of later months read in), :class:`Execution` (a
  service the flows say was delivered to a patient), :class:`ActivityOutcome` (what became of one planned PAI
  activity: done on time, done late, missed; from the flows or typed by a person) - ``Procedure`` /
  ``Encounter`` and the ``ServiceRequest.status`` of the plan's activities; :class:`ReconciledPlan` (which
  version of each plan the outcomes were computed on);
- work lists: :class:`WorkItem` - ``Task`` (status, owner, priority, due date, focus);
- booking: :class:`Schedule` of a provider for one service, its weekly :class:`Availability`, its
  :class:`ScheduleException` rows (closures), the :class:`Slot` rows published from them and the
  :class:`Booking` of a slot for a PAI activity - ``Schedule``, ``Slot``, ``Appointment``;
- reminders: the patient's :class:`ContactPoint` rows (with per-channel opt-out) and the persistent
  :class:`OutboxMessage` queue the worker sends from - ``CommunicationRequest`` → ``Communication``;
- contacts: :class:`Contact`, a call in or out with its outcome - ``Communication``;
- transitions of care: :class:`CareTransition`, a discharge or ER visit of an enrolled patient and the tasks it
  opened - ``Encounter`` + ``Task``.

Two partial unique indexes carry the no-double-booking rule: one live booking per slot, one live booking per
planned activity.
"""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from presa.care.store.models import Base
from presa.care.store.types import BigId, JsonList, str_enum


class Outcome(StrEnum):
    DONE_ON_TIME = "done_on_time"
    DONE_LATE = "done_late"
    MISSED = "missed"


class OutcomeSource(StrEnum):
    FLOWS = "flows"
    MANUAL = "manual"


class ExecutionSource(StrEnum):
    OUTPATIENT = "outpatient"
    DISCHARGE = "discharge"
    ER_VISIT = "er_visit"


class ItemKind(StrEnum):
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    NOT_BOOKED = "not_booked"
    INVITED_NO_ANSWER = "invited_no_answer"
    PLAN_RENEWAL = "plan_renewal"
    PACT_RENEWAL = "pact_renewal"
    POST_DISCHARGE = "post_discharge"
    PAI_REVIEW = "pai_review"
    CALL_BACK = "call_back"


class ItemStatus(StrEnum):
    OPEN = "open"
    SNOOZED = "snoozed"
    CLOSED = "closed"


class Priority(StrEnum):
    """FHIR ``Task.priority`` codes, lowest first (``stat`` is not used: nothing here is an emergency)."""

    ROUTINE = "routine"
    URGENT = "urgent"
    ASAP = "asap"


class BookingStatus(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class RecipientRole(StrEnum):
    PATIENT = "patient"
    CAREGIVER = "caregiver"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ContactDirection(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class ContactOutcome(StrEnum):
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"
    REFUSED = "refused"
    CALL_BACK = "call_back"


class TransitionKind(StrEnum):
    DISCHARGE = "discharge"
    ER_VISIT = "er_visit"


# --- reconciliation ------------------------------------------------------------------------------------------


class FlowLoad(Base):
    """One validated flow store of later months read into the follow-up, with what it changed."""

    __tablename__ = "followup_flow_loads"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True, comment="SHA-256 of the store's accepted rows")
    source: Mapped[str] = mapped_column(Text)
    covered_until: Mapped[date | None] = mapped_column(comment="the last day the flows cover")
    loaded_at: Mapped[datetime]
    loaded_by: Mapped[str] = mapped_column(String(100))
    counts: Mapped[dict[str, Any]] = mapped_column(JsonList, comment="read / accepted / rejected per table")
    rejected: Mapped[int]
    executions: Mapped[int] = mapped_column(comment="new executed services stored")
    outcome_changes: Mapped[int]
    transitions: Mapped[int]


class Execution(Base):
    """A service the flows say a patient received: an outpatient service, a hospital discharge or an ER visit."""

    __tablename__ = "followup_executions"
    __table_args__ = (
        UniqueConstraint("patient_id", "source", "day", "code", "provider_code"),  # also the index by patient
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # patients.id and followup_flow_loads.id, without foreign keys: checked row by row they were most of storing a
    # region's month; reconciliation, the only writer, joins each service to its patient and sets the load it
    # inserts in the same transaction (migration 0011).
    patient_id: Mapped[int] = mapped_column()
    source: Mapped[ExecutionSource] = mapped_column(str_enum(ExecutionSource, "source"))
    day: Mapped[date] = mapped_column(comment="service, discharge or visit date")
    started_on: Mapped[date | None] = mapped_column(comment="admission date of a discharge")
    code: Mapped[str] = mapped_column(String(16), comment="service code; main diagnosis of a discharge; '' for ER")
    stem: Mapped[str] = mapped_column(String(16), comment="the code's DM 1996 stem (rules.code_stem): its family")
    discipline: Mapped[str] = mapped_column(String(8))
    provider_code: Mapped[str] = mapped_column(String(32))
    load_id: Mapped[int] = mapped_column()
    source_file: Mapped[str] = mapped_column(String(200))
    source_line: Mapped[int] = mapped_column(BigInteger)


class ActivityOutcome(Base):
    """What became of one planned activity of a PAI (absent: still planned)."""

    __tablename__ = "followup_activity_outcomes"
    __table_args__ = (
        UniqueConstraint("plan_id", "activity_id"),
        CheckConstraint("outcome = 'missed' OR done_on IS NOT NULL", name="done_has_date"),
        CheckConstraint("source <> 'manual' OR note IS NOT NULL", name="manual_has_note"),
        CheckConstraint("window_until >= window_from", name="window_ordered"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("care_plans.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    activity_id: Mapped[str] = mapped_column(String(96))
    outcome: Mapped[Outcome] = mapped_column(str_enum(Outcome, "outcome"))
    due_on: Mapped[date]
    window_from: Mapped[date]
    window_until: Mapped[date]
    done_on: Mapped[date | None]
    execution_id: Mapped[int | None] = mapped_column(ForeignKey("followup_executions.id"))
    source: Mapped[OutcomeSource] = mapped_column(str_enum(OutcomeSource, "source"))
    note: Mapped[str | None] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime]


class ReconciledPlan(Base):
    """The version and status of a plan when its outcomes were last computed: the next reconciliation recomputes
    in full the plans that changed since (or were never reconciled), and otherwise only what new flows touch."""

    __tablename__ = "followup_reconciled_plans"

    plan_id: Mapped[int] = mapped_column(ForeignKey("care_plans.id"), primary_key=True, autoincrement=False)
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    reconciled_at: Mapped[datetime]


# --- work lists ----------------------------------------------------------------------------------------------


class WorkItem(Base):
    """One thing a case manager or an operator has to do about one patient (FHIR ``Task``)."""

    __tablename__ = "followup_work_items"
    __table_args__ = (
        CheckConstraint(
            "status <> 'snoozed' OR (snoozed_until IS NOT NULL AND snooze_reason IS NOT NULL)", name="snooze_explained"
        ),
        CheckConstraint(
            "status <> 'closed' OR (closed_at IS NOT NULL AND closed_by IS NOT NULL AND outcome IS NOT NULL)",
            name="closure_recorded",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True, comment="what the item is about: one item per key")
    kind: Mapped[ItemKind] = mapped_column(str_enum(ItemKind, "kind"))
    status: Mapped[ItemStatus] = mapped_column(str_enum(ItemStatus, "status"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    gestore_id: Mapped[int | None] = mapped_column(ForeignKey("gestori.id"))
    ats_code: Mapped[str] = mapped_column(ForeignKey("ats.code"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioners.id"))
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("care_plans.id"))
    activity_id: Mapped[str | None] = mapped_column(String(96))
    activity_kind: Mapped[str | None] = mapped_column(String(16), comment="gp_visit, lab, ... of the activity")
    due_on: Mapped[date] = mapped_column(comment="the Italian day it is due")
    due_at: Mapped[datetime | None] = mapped_column(comment="the instant, for call-backs")
    priority_score: Mapped[int]
    priority: Mapped[Priority] = mapped_column(str_enum(Priority, "priority"))
    title: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(16), comment="refresh, transition or contact")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime]
    snoozed_until: Mapped[datetime | None]
    snooze_reason: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str | None] = mapped_column(Text)


# The work lists' order, for the items not closed: a page is the first rows of one index range, per gestore (staff),
# per ATS (analysts) or per owner (a case manager's own items), whatever the number of items. (Migration 0013 also
# gives PostgreSQL extended statistics on owner and gestore, which SQLAlchemy's metadata cannot declare.)
for _scope in ("gestore_id", "ats_code", "owner_id"):
    Index(
        f"ix_followup_work_items_{_scope.split('_')[0]}_queue",
        getattr(WorkItem, _scope),
        WorkItem.priority_score.desc(),
        WorkItem.due_on,
        WorkItem.id,
        postgresql_where=text("status <> 'closed'"),
        sqlite_where=text("status <> 'closed'"),
    )
# A page of some kinds of item of a gestore: one range per kind (migration 0014).
Index(
    "ix_followup_work_items_gestore_kind_queue",
    WorkItem.gestore_id,
    WorkItem.kind,
    WorkItem.priority_score.desc(),
    WorkItem.due_on,
    WorkItem.id,
    postgresql_where=text("status <> 'closed'"),
    sqlite_where=text("status <> 'closed'"),
)


# --- booking -------------------------------------------------------------------------------------------------


class Schedule(Base):
    """A provider's agenda for one service (a nomenclator code), published as slots of a fixed length."""

    __tablename__ = "followup_schedules"
    __table_args__ = (
        UniqueConstraint("provider_id", "service_code"),
        CheckConstraint("slot_minutes BETWEEN 5 AND 480", name="slot_length"),
        CheckConstraint("valid_until IS NULL OR valid_until >= valid_from", name="validity_ordered"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    service_code: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(200))
    slot_minutes: Mapped[int] = mapped_column(SmallInteger)
    valid_from: Mapped[date]
    valid_until: Mapped[date | None]
    closed_on_holidays: Mapped[bool] = mapped_column(comment="no slot on Italian national holidays")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))


class Availability(Base):
    """A recurring weekly opening of a schedule: a weekday (0 = Monday) and a span of Italian local time."""

    __tablename__ = "followup_availability"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("ends > starts", name="span_ordered"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("followup_schedules.id", ondelete="CASCADE"), index=True)
    weekday: Mapped[int] = mapped_column(SmallInteger)
    starts: Mapped[time]
    ends: Mapped[time]


class ScheduleException(Base):
    """A closure: a whole day (no times) or a span of one, for one schedule or (no schedule) all of a provider's."""

    __tablename__ = "followup_schedule_exceptions"
    __table_args__ = (
        CheckConstraint("(starts IS NULL) = (ends IS NULL)", name="span_complete"),
        CheckConstraint("starts IS NULL OR ends > starts", name="span_ordered"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("followup_schedules.id", ondelete="CASCADE"))
    day: Mapped[date]
    starts: Mapped[time | None]
    ends: Mapped[time | None]
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))


class Slot(Base):
    """A bookable interval of a schedule; withdrawn when a closure added later covers it."""

    __tablename__ = "followup_slots"
    __table_args__ = (
        UniqueConstraint("schedule_id", "starts_at"),
        CheckConstraint("ends_at > starts_at", name="span_ordered"),
        Index("ix_followup_slots_schedule_day", "schedule_id", "day"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("followup_schedules.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(comment="the Italian day of starts_at")
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    withdrawn: Mapped[bool]


class Booking(Base):
    """A planned activity booked into a slot. At most one live booking per slot and per activity, by index."""

    __tablename__ = "followup_bookings"
    __table_args__ = (
        Index(
            "uq_followup_bookings_live_slot",
            "slot_id",
            unique=True,
            postgresql_where=text("status = 'booked'"),
            sqlite_where=text("status = 'booked'"),
        ),
        Index(
            "uq_followup_bookings_live_activity",
            "plan_id",
            "activity_id",
            unique=True,
            postgresql_where=text("status = 'booked'"),
            sqlite_where=text("status = 'booked'"),
        ),
        CheckConstraint(
            "status = 'booked' OR (ended_at IS NOT NULL AND ended_by IS NOT NULL AND end_reason IS NOT NULL)",
            name="end_recorded",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("followup_slots.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("care_plans.id"))
    activity_id: Mapped[str] = mapped_column(String(96))
    status: Mapped[BookingStatus] = mapped_column(str_enum(BookingStatus, "status"))
    booked_at: Mapped[datetime]
    booked_by: Mapped[str] = mapped_column(String(100))
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(100))
    end_reason: Mapped[str | None] = mapped_column(Text)
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("followup_bookings.id"))


# --- reminders -----------------------------------------------------------------------------------------------


class ContactPoint(Base):
    """An e-mail address or mobile number of the patient or of a caregiver; opting out is per channel."""

    __tablename__ = "followup_contact_points"
    __table_args__ = (UniqueConstraint("patient_id", "channel", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    address: Mapped[str] = mapped_column(String(200))
    role: Mapped[RecipientRole] = mapped_column(str_enum(RecipientRole, "role"))
    name: Mapped[str | None] = mapped_column(String(200))
    opted_out_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))


class OutboxMessage(Base):
    """One message to send: written in the transaction that decided it, sent by ``presa worker``, never twice."""

    __tablename__ = "followup_outbox"
    __table_args__ = (
        CheckConstraint("status <> 'sent' OR sent_at IS NOT NULL", name="sent_has_time"),
        CheckConstraint("status <> 'sending' OR (claimed_by IS NOT NULL AND lease_until IS NOT NULL)", name="claim"),
        Index("ix_followup_outbox_due", "status", "not_before"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True, comment="what the message is: enqueued once")
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    booking_id: Mapped[int | None] = mapped_column(ForeignKey("followup_bookings.id"))
    template: Mapped[str] = mapped_column(String(32))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    role: Mapped[RecipientRole] = mapped_column(str_enum(RecipientRole, "role"))
    recipient: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime]
    status: Mapped[OutboxStatus] = mapped_column(str_enum(OutboxStatus, "status"))
    attempts: Mapped[int]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    gateway_id: Mapped[str | None] = mapped_column(String(200), comment="the transport's id of the message")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


# --- contacts and transitions --------------------------------------------------------------------------------


class Contact(Base):
    """A call in or out, with its outcome; a call-back opens a work-list item at the time asked for."""

    __tablename__ = "followup_contacts"
    __table_args__ = (
        CheckConstraint("(outcome = 'call_back') = (call_back_at IS NOT NULL)", name="call_back_has_time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    direction: Mapped[ContactDirection] = mapped_column(str_enum(ContactDirection, "direction"))
    at: Mapped[datetime]
    operator: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[ContactOutcome] = mapped_column(str_enum(ContactOutcome, "outcome"))
    call_back_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("followup_work_items.id"), comment="the item it answered")
    call_back_item_id: Mapped[int | None] = mapped_column(ForeignKey("followup_work_items.id"))


class CareTransition(Base):
    """A hospital discharge or ER visit of an enrolled patient, and the two tasks it opened."""

    __tablename__ = "followup_care_transitions"
    __table_args__ = (UniqueConstraint("patient_id", "kind", "event_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    kind: Mapped[TransitionKind] = mapped_column(str_enum(TransitionKind, "kind"))
    event_on: Mapped[date]
    source: Mapped[str] = mapped_column(String(16), comment="flows or api")
    follow_up_item_id: Mapped[int] = mapped_column(ForeignKey("followup_work_items.id"))
    review_item_id: Mapped[int] = mapped_column(ForeignKey("followup_work_items.id"))
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(100))
