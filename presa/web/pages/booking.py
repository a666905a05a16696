"""Booking pages: the providers (erogatori) of the gestore's network and each one's week of slots, free or booked
(never by whom); one PAI activity booked into a free slot in its window, moved to another, or cancelled; a whole
plan-year booked in one go after seeing which activities have no slot in their window.

The rules are the API's and the services': ``presa.followup.service.booking`` checks the pact, the plan, the
window, the service family and the network again on every booking (a refusal comes back as a message);
the plan is reached through ``visible_plan`` and the booking through its patient (404 outside the scope). A provider
outside the gestore's network today answers 404. Reading an activity's slots or a plan-year's proposals is audited
with its patient; a provider's week shows no patient and is audited once, as the provider's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy import exists, select

from presa.care.service.common import CareError, now, today_in_italy
from presa.care.service.organisations import network
from presa.care.service.pacts import require_processing
from presa.care.store.models import CarePlanRecord, PlanStatus, Provider
from presa.followup.rules import same_family
from presa.followup.service.booking import (
    PlanBooking,
    PlannedActivity,
    book,
    book_plan,
    cancel,
    free_slots,
    planned_activity,
    preview_plan_booking,
    reschedule,
)
from presa.followup.store import Booking, BookingStatus, Schedule, Slot
from presa.web.access import Permission
from presa.web.api.followup import visible_booking
from presa.web.api.plans import visible_plan
from presa.web.errors import ApiError, not_found
from presa.web.pages.core import Page, PostedForm, allowed, allowed_post, form_int, form_text, safe_next
from presa.web.pages.patients import REFUSED, attempt, staff_only
from presa.web.pages.timeline import plan_activities, slot_infos

router = APIRouter(include_in_schema=False)
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Activity = Annotated[str, Path(min_length=1, max_length=96, pattern=r"^[A-Za-z0-9_.:-]+$")]
FREE_SHOWN = 20
MAX_WEEKS_AWAY = 60


@dataclass(frozen=True)
class SlotView:
    slot: Slot
    service_code: str
    booked: bool
    eligible: bool
    """free, in the future, and fit for the activity being booked (its family, inside its window)"""


@dataclass(frozen=True)
class DayView:
    day: date
    slots: list[SlotView]


@dataclass(frozen=True)
class Context:
    """The activity being booked from a calendar, and its live booking if it has one (then slots move it)."""

    plan: CarePlanRecord
    activity: PlannedActivity
    description: str
    booking: Booking | None


# --- the providers and their weeks -------------------------------------------------------------------------------


def network_providers(page: Page) -> list[Provider]:
    if page.me.gestore_id is None:  # pragma: no cover - staff accounts always have their gestore
        raise ApiError(403, "your account works for no gestore")
    return list(network(page.db, page.me.gestore_id, today_in_italy()))


def network_provider(page: Page, provider_id: int) -> Provider:
    """The provider if it is in the gestore's network today; 404 otherwise, as one that does not exist."""
    found = next((p for p in network_providers(page) if p.id == provider_id), None)
    if found is None:
        raise not_found(f"provider {provider_id}")
    return found


@router.get("/calendar")
def providers_page(page: Annotated[Page, allowed(Permission.READ_SCHEDULES)]) -> Response:
    staff_only(page)
    providers = network_providers(page)
    schedules: dict[int, list[Schedule]] = {p.id: [] for p in providers}
    for s in page.db.scalars(
        select(Schedule).where(Schedule.provider_id.in_(schedules)).order_by(Schedule.service_code, Schedule.id)
    ):
        schedules[s.provider_id].append(s)
    return page.render("calendar_index.html", providers=providers, schedules=schedules)


def monday_of(value: date) -> date:
    return value - timedelta(days=value.weekday())


@router.get("/providers/{provider_id}/calendar")
def provider_week(
    page: Annotated[Page, allowed(Permission.READ_SCHEDULES)],
    provider_id: RowId,
    week: Annotated[date | None, Query()] = None,
    schedule: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    plan: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    activity: Annotated[str | None, Query(max_length=96, pattern=r"^[A-Za-z0-9_.:-]+$")] = None,
) -> Response:
    staff_only(page)
    provider = network_provider(page, provider_id)
    context = booking_context(page, plan, activity) if plan is not None and activity is not None else None
    today = today_in_italy()
    first = monday_of(week or (context.activity.day if context else today))
    if abs((first - today).days) > MAX_WEEKS_AWAY * 7:
        raise ApiError(422, f"invalid request: query.week: within {MAX_WEEKS_AWAY} weeks of today")
    schedules = list(
        page.db.scalars(select(Schedule).where(Schedule.provider_id == provider.id).order_by(Schedule.service_code))
    )
    shown = [s for s in schedules if schedule is None or s.id == schedule]
    days = week_slots(page, shown, first, context)
    if context is not None:
        page.ctx.audit("read_slots", "plan_activity", f"{context.plan.id}:{context.activity.activity_id}",
                       patient_id=context.plan.patient_id)  # fmt: skip
    else:
        page.ctx.audit("read", "provider_calendar", provider.id, detail={"week": first.isoformat()})
    keep = [("schedule", str(schedule))] if schedule else []
    if context is not None:
        keep += [("plan", str(context.plan.id)), ("activity", context.activity.activity_id)]
    return page.render(
        "calendar.html",
        provider=provider,
        schedules=schedules,
        chosen=schedule,
        days=days,
        week=first,
        previous=first - timedelta(days=7),
        following=first + timedelta(days=7),
        keep="".join(f"&{k}={v}" for k, v in keep),
        context=context,
        may_book=page.may(Permission.BOOK),
        here=f"/providers/{provider.id}/calendar?week={first.isoformat()}" + "".join(f"&{k}={v}" for k, v in keep),
    )


def week_slots(page: Page, schedules: Sequence[Schedule], monday: date, context: Context | None) -> list[DayView]:
    """The seven days from ``monday`` with their slots, in one query; whether each is booked and, when an activity
    is being booked, whether it fits it."""
    codes = {s.id: s.service_code for s in schedules}
    taken = exists().where(Booking.slot_id == Slot.id, Booking.status == BookingStatus.BOOKED)
    rows = page.db.execute(
        select(Slot, taken)
        .where(Slot.schedule_id.in_(codes), Slot.day >= monday, Slot.day < monday + timedelta(days=7))
        .order_by(Slot.starts_at, Slot.id)
    ).all()
    current = now()
    by_day: dict[date, list[SlotView]] = {monday + timedelta(days=n): [] for n in range(7)}
    for slot, booked in rows:
        code = codes[slot.schedule_id]
        free = not booked and not slot.withdrawn and slot.starts_at > current
        fits = context is not None and fits_activity(context.activity, code, slot.day)
        by_day[slot.day].append(SlotView(slot, code, bool(booked), free and fits))
    return [DayView(d, s) for d, s in by_day.items()]


def fits_activity(activity: PlannedActivity, service_code: str, day: date) -> bool:
    return activity.code is not None and same_family(activity.code, service_code) and activity.window.holds(day)


def booking_context(page: Page, plan_id: int, activity_id: str) -> Context:
    """The activity of a plan the account may see, for booking (the patient's consent in force; else 409)."""
    plan = visible_plan(page.ctx, plan_id)
    try:
        activity = planned_activity(page.db, plan.id, activity_id)
    except CareError:
        raise not_found(f"activity {activity_id[:40]} in care plan {plan.id}") from None
    require_processing(page.db, plan.patient_id)
    names = {a.activity_id: a.description(page.lang) for a in plan_activities(page.db, [plan.id])}
    live = page.db.scalars(
        select(Booking).where(
            Booking.plan_id == plan.id, Booking.activity_id == activity_id, Booking.status == BookingStatus.BOOKED
        )
    ).first()
    return Context(plan, activity, names.get(activity_id, activity.description), live)


# --- one activity ------------------------------------------------------------------------------------------------


@router.get("/plans/{plan_id}/activities/{activity_id}/book")
def activity_page(page: Annotated[Page, allowed(Permission.BOOK)], plan_id: RowId, activity_id: Activity) -> Response:
    context = booking_context(page, plan_id, activity_id)
    found = free_slots(page.db, context.activity, not_before=now(), limit=FREE_SHOWN)
    infos = slot_infos(page.db, [s.id for s in found] + ([context.booking.slot_id] if context.booking else []))
    providers = providers_for(page, context.activity)
    page.ctx.audit("read_slots", "plan_activity", f"{plan_id}:{activity_id}", patient_id=context.plan.patient_id)
    return page.render(
        "book_activity.html",
        context=context,
        window=context.activity.window,
        slots=[(s, infos[s.id]) for s in found],
        current=infos.get(context.booking.slot_id) if context.booking else None,
        providers=providers,
        week=monday_of(found[0].day if found else max(context.activity.day, today_in_italy())),
        here=f"/plans/{plan_id}/activities/{activity_id}/book",
    )


def providers_for(page: Page, activity: PlannedActivity) -> list[Provider]:
    """The network's providers with a schedule of the activity's service family."""
    if activity.code is None:
        return []
    providers = {p.id: p for p in network_providers(page)}
    codes = page.db.execute(
        select(Schedule.provider_id, Schedule.service_code).where(Schedule.provider_id.in_(providers))
    ).all()
    fit = {pid for pid, code in codes if activity.code is not None and same_family(activity.code, code)}
    return [p for pid, p in providers.items() if pid in fit]


def _back(form: Any, default: str) -> str:
    target = safe_next(form_text(form, "next", 500), default)
    return target if target.startswith(("/plans/", "/providers/", "/patients/")) else default


@router.post("/plans/{plan_id}/activities/{activity_id}/booking")
def book_activity(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.BOOK)], plan_id: RowId, activity_id: Activity
) -> Response:
    plan = visible_plan(page.ctx, plan_id)
    back = _back(form, f"/plans/{plan.id}/activities/{activity_id}/book")
    slot_id = form_int(form, "slot_id")
    if slot_id is None:
        return page.redirect(back, page.t("booking.slot_needed"), kind="error")
    chosen = slot_id
    refusal = refused(page, lambda: book(page.db, plan.id, activity_id, chosen, author=page.me.username))
    if refusal is not None:
        return page.redirect(back, refusal, kind="error")
    return page.redirect(f"/patients/{plan.patient_id}/timeline", page.t("booking.booked"))


def refused(page: Page, change: Callable[[], object]) -> str | None:
    """Run one change in a savepoint; the care domain's refusal as the page's message, or None once done."""
    try:
        with page.db.begin_nested():
            change()
    except REFUSED as exc:
        return page.t("flash.refused", reason=str(exc))
    return None


@router.post("/bookings/{booking_id}/reschedule")
def reschedule_booking(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.BOOK)], booking_id: RowId
) -> Response:
    booking = visible_booking(page.ctx, booking_id)
    back = f"/patients/{booking.patient_id}/timeline"
    slot_id, reason = form_int(form, "slot_id"), form_text(form, "reason")
    if slot_id is None or not reason:
        return page.redirect(_back(form, back), page.t("booking.reason_needed"), kind="error")
    chosen = slot_id

    def change() -> None:
        require_processing(page.db, booking.patient_id)
        reschedule(page.db, booking.id, chosen, reason=reason, author=page.me.username)

    return attempt(page, back, page.t("booking.moved"), change)


@router.post("/bookings/{booking_id}/cancel")
def cancel_booking(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.BOOK)], booking_id: RowId
) -> Response:
    booking = visible_booking(page.ctx, booking_id)
    back = f"/patients/{booking.patient_id}/timeline"
    reason = form_text(form, "reason")
    if not reason:
        return page.redirect(_back(form, back), page.t("booking.reason_needed"), kind="error")

    def change() -> None:
        require_processing(page.db, booking.patient_id)
        cancel(page.db, booking.id, reason=reason, author=page.me.username)

    return attempt(page, back, page.t("booking.cancelled"), change)


# --- a whole plan-year -------------------------------------------------------------------------------------------


@router.get("/plans/{plan_id}/bookings")
def year_page(page: Annotated[Page, allowed(Permission.BOOK)], plan_id: RowId) -> Response:
    plan = visible_plan(page.ctx, plan_id)
    proposals = preview_plan_booking(page.db, plan.id)
    names = {a.activity_id: a.description(page.lang) for a in plan_activities(page.db, [plan.id])}
    infos = slot_infos(page.db, [p.slot.id for p in proposals if p.slot is not None])
    page.ctx.audit("preview_booking", "care_plan", plan.id, patient_id=plan.patient_id)
    return page.render(
        "book_year.html",
        plan=plan,
        active=plan.status is PlanStatus.ACTIVE,
        without=[p.activity for p in proposals if p.slot is None],
        proposed=[(p.activity, infos[p.slot.id]) for p in proposals if p.slot is not None],
        names=names,
    )


@router.post("/plans/{plan_id}/bookings")
def book_year(page: Annotated[Page, allowed_post(Permission.BOOK)], plan_id: RowId) -> Response:
    plan = visible_plan(page.ctx, plan_id)
    back = f"/patients/{plan.patient_id}/timeline"
    if plan.status is not PlanStatus.ACTIVE:
        return page.redirect(back, page.t("booking.not_active"), kind="error")
    done: list[PlanBooking] = []
    refusal = refused(page, lambda: done.append(book_plan(page.db, plan.id, author=page.me.username)))
    if refusal is not None:
        return page.redirect(back, refusal, kind="error")
    result = done[0]
    counts = {"booked": len(result.booked), "without": len(result.without_slot), "taken": len(result.taken_meanwhile)}
    return page.redirect(back, page.t("booking.year_done", **counts))
