"""A patient's follow-up on one page, in date order: every activity of their PAIs with what became of it (planned,
booked, done on time, done late, missed, or overdue while the flows are still to come), each booking made and
ended, the services the flows say were delivered, calls, discharges and ER visits; above them, the open items of
the work list and a count of the activities by outcome; the form to log a call.

The patient is reached through ``Ctx.patient`` (404 outside the scope) and the read is audited like the API's
timeline (``read``, ``timeline``). When the patient may not be processed (no signed pact, or it was revoked) the
history stays readable - it is the record of what was done - but the open items, the booking links and the call
form are not shown, as the work list hides them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.service.common import now, today_in_italy
from presa.care.service.pacts import can_process
from presa.care.service.plans import plans_of
from presa.care.store.models import CarePlanRecord, PlanCalendarActivity, PlanStatus, PlanVersion, Provider
from presa.followup.rules import activity_window
from presa.followup.store import (
    ActivityOutcome,
    Booking,
    BookingStatus,
    CareTransition,
    Contact,
    ContactDirection,
    ContactOutcome,
    Execution,
    ItemStatus,
    Schedule,
    Slot,
    WorkItem,
)
from presa.web.access import Permission
from presa.web.pages import i18n
from presa.web.pages.core import Page, allowed
from presa.web.pages.i18n import ITALY
from presa.web.pages.patients import Ref, staff_only
from presa.web.pages.worklist import action_href, activity_names, desk_hours, local_input

router = APIRouter(include_in_schema=False)
FOLLOWED = (PlanStatus.ACTIVE, PlanStatus.COMPLETED)
STATUSES = ("planned", "overdue", "booked", "done_on_time", "done_late", "missed")


@dataclass(frozen=True)
class SlotInfo:
    starts_at: datetime
    provider: str


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: ``kind`` is activity, booking, execution, contact, transition or today."""

    day: date
    at: datetime | None
    kind: str
    text: str = ""
    status: str = ""
    detail: str = ""
    href: str | None = None
    link: str = ""

    @property
    def order(self) -> tuple[date, datetime, int]:
        moment = self.at or datetime.combine(self.day, time(23, 59) if self.kind == "activity" else time(0), ITALY)
        return self.day, moment, 0 if self.kind == "today" else 1


@router.get("/patients/{ref}/timeline")
def timeline_page(page: Annotated[Page, allowed(Permission.READ_TIMELINE)], ref: Ref) -> Response:
    staff_only(page)
    patient, _ = page.ctx.patient(ref)
    db, today = page.db, today_in_italy()
    decision = can_process(db, patient.id)
    acting = decision.allowed and page.may(Permission.BOOK)
    bookings = db.scalars(select(Booking).where(Booking.patient_id == patient.id).order_by(Booking.id)).all()
    slots = slot_infos(db, [b.slot_id for b in bookings])
    plans = [p for p in plans_of(db, patient.id) if p.status in FOLLOWED]
    activities = plan_activities(db, [p.id for p in plans])
    names = {(a.plan_id, a.activity_id): a.description(page.lang) for a in activities}
    entries = [
        *activity_entries(page, activities, outcomes_of(db, patient.id), bookings, slots, today, acting),
        *booking_entries(page, bookings, slots, names),
        *execution_entries(page, db.scalars(select(Execution).where(Execution.patient_id == patient.id)).all()),
        *contact_entries(page, db.scalars(select(Contact).where(Contact.patient_id == patient.id)).all()),
        *transition_entries(page, db.scalars(select(CareTransition).where(CareTransition.patient_id == patient.id))),
        Entry(today, datetime.combine(today, time(0), ITALY), "today"),
    ]
    entries.sort(key=lambda e: e.order)
    alerts = open_items(page, patient.id) if decision.allowed else []
    page.ctx.audit("read", "timeline", patient.id, patient_id=patient.id)
    return page.render(
        "timeline.html",
        patient=patient,
        decision=decision,
        entries=entries,
        counts=Counter(e.status for e in entries if e.kind == "activity"),
        statuses=STATUSES,
        alerts=alerts,
        alert_names=activity_names(page, alerts),
        action_href=action_href,
        plans=[p for p in plans if p.status is PlanStatus.ACTIVE] if acting else [],
        may_call=decision.allowed and page.may(Permission.LOG_CONTACTS),
        directions=list(ContactDirection),
        outcomes=list(ContactOutcome),
        call_back_default=local_input(desk_hours().next_open(now())),
    )


# --- reading ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activity:
    plan_id: int
    activity_id: str
    day: date
    code: str | None
    kind: str
    description_it: str
    description_en: str
    times_per_year: float

    def description(self, lang: str) -> str:
        return self.description_it if lang == "it" else self.description_en


def plan_activities(db: Session, plan_ids: Sequence[int]) -> list[Activity]:
    """The activities of the plans' current versions, in one query."""
    if not plan_ids:
        return []
    a = PlanCalendarActivity
    rows = db.execute(
        select(CarePlanRecord.id, a.activity_id, a.day, a.code, a.kind, a.description_it, a.description_en,
               a.times_per_year)
        .join(PlanVersion, PlanVersion.plan_id == CarePlanRecord.id)
        .join(a, a.calendar_id == PlanVersion.calendar_id)
        .where(CarePlanRecord.id.in_(plan_ids), PlanVersion.version == CarePlanRecord.current_version)
        .order_by(a.day, a.activity_id)
    )  # fmt: skip
    return [Activity(*row) for row in rows]


def outcomes_of(db: Session, patient_id: int) -> dict[tuple[int, str], ActivityOutcome]:
    rows = db.scalars(select(ActivityOutcome).where(ActivityOutcome.patient_id == patient_id))
    return {(o.plan_id, o.activity_id): o for o in rows}


def slot_infos(db: Session, slot_ids: Iterable[int]) -> dict[int, SlotInfo]:
    ids = sorted(set(slot_ids))
    if not ids:
        return {}
    rows = db.execute(
        select(Slot.id, Slot.starts_at, Provider.name)
        .join(Schedule, Schedule.id == Slot.schedule_id)
        .join(Provider, Provider.id == Schedule.provider_id)
        .where(Slot.id.in_(ids))
    )
    return {slot_id: SlotInfo(starts_at, name) for slot_id, starts_at, name in rows}


def open_items(page: Page, patient_id: int) -> list[WorkItem]:
    return list(
        page.db.scalars(
            select(WorkItem)
            .where(
                WorkItem.patient_id == patient_id,
                WorkItem.gestore_id == page.me.gestore_id,
                WorkItem.status != ItemStatus.CLOSED,
            )
            .order_by(WorkItem.priority_score.desc(), WorkItem.due_on, WorkItem.id)
        )
    )


# --- entries ------------------------------------------------------------------------------------------------------


def activity_entries(
    page: Page,
    activities: Sequence[Activity],
    outcomes: dict[tuple[int, str], ActivityOutcome],
    bookings: Sequence[Booking],
    slots: dict[int, SlotInfo],
    today: date,
    acting: bool,
) -> list[Entry]:
    live = {(b.plan_id, b.activity_id): b for b in bookings if b.status is BookingStatus.BOOKED}
    out = []
    for a in activities:
        key = (a.plan_id, a.activity_id)
        window = activity_window(a.day, a.times_per_year)
        detail = page.t("timeline.window", opens=page_day(page, window.opens), closes=page_day(page, window.closes))
        outcome, booking = outcomes.get(key), live.get(key)
        day, at, status = a.day, None, "overdue" if a.day < today else "planned"
        if outcome is not None:
            status = outcome.outcome.value
            if outcome.done_on is not None:
                detail = page.t("timeline.done_on", day=page_day(page, outcome.done_on)) + (
                    f" · {page.t('timeline.manual')}: {outcome.note}" if outcome.note else ""
                )
        elif booking is not None:
            slot = slots[booking.slot_id]
            status, day, at = "booked", slot.starts_at.astimezone(ITALY).date(), slot.starts_at
            detail = page.t("timeline.booked_at", at=page_instant(page, slot.starts_at), provider=slot.provider)
        href, link = None, ""
        if acting and a.code is not None and outcome is None:
            href = f"/plans/{a.plan_id}/activities/{a.activity_id}/book"
            link = "timeline.move" if booking is not None else "timeline.book"
        text = f"{a.description(page.lang)} ({page.t('kind.' + a.kind)})"
        out.append(Entry(day, at, "activity", text, status, detail, href, link))
    return out


def booking_entries(
    page: Page, bookings: Sequence[Booking], slots: dict[int, SlotInfo], names: dict[tuple[int, str], str]
) -> list[Entry]:
    out = []
    for b in bookings:
        slot = slots[b.slot_id]
        what = names.get((b.plan_id, b.activity_id), b.activity_id)
        made = page.t("timeline.booking_made", what=what, at=page_instant(page, slot.starts_at), provider=slot.provider)
        out.append(Entry(b.booked_at.astimezone(ITALY).date(), b.booked_at, "booking", made, detail=b.booked_by))
        if b.ended_at is not None:
            ended = page.t(f"timeline.booking_{b.status.value}", what=what, at=page_instant(page, slot.starts_at))
            detail = f"{b.end_reason or ''} · {b.ended_by or ''}"
            out.append(Entry(b.ended_at.astimezone(ITALY).date(), b.ended_at, "booking", ended, detail=detail))
    return out


def execution_entries(page: Page, executions: Sequence[Execution]) -> list[Entry]:
    return [
        Entry(
            e.day,
            None,
            "execution",
            page.t(f"execution.{e.source.value}", code=e.code),
            detail=page.t("timeline.provider_code", code=e.provider_code),
        )
        for e in executions
    ]


def contact_entries(page: Page, contacts: Sequence[Contact]) -> list[Entry]:
    out = []
    for c in contacts:
        text = f"{page.t('direction.' + c.direction.value)}: {page.t('contact_outcome.' + c.outcome.value)}"
        if c.call_back_at is not None:
            text += " · " + page.t("timeline.call_back", at=page_instant(page, c.call_back_at))
        detail = " · ".join(part for part in (c.note, c.operator) if part)
        out.append(Entry(c.at.astimezone(ITALY).date(), c.at, "contact", text, detail=detail))
    return out


def transition_entries(page: Page, transitions: Iterable[CareTransition]) -> list[Entry]:
    out = []
    for t in transitions:
        origin = page.t("origin.flows" if t.source == "flows" else "origin.api")
        out.append(Entry(t.event_on, None, "transition", page.t(f"transition.{t.kind.value}"), detail=origin))
    return out


def page_day(page: Page, value: date) -> str:
    return i18n.day(page.lang, value)


def page_instant(page: Page, value: datetime) -> str:
    return i18n.instant(page.lang, value)
