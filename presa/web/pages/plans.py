"""The PAI pages: preview the merged plan (which pathway asked for each activity), generate it as a draft, read it
as a 12-month calendar with its versions, personalise it (add, drop, move, each with a reason), activate it, and
download it as iCalendar or PDF.

The rules are the API's, through the same functions: ``visible_plan`` (404 outside the scope), the consent check
before every write, preview and staff export (``require_processing``), the care services for every change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from presa.care.calendar import draft_care_plan
from presa.care.ical import to_ical
from presa.care.plan import KIND_RANK, PlannedActivity, by_day
from presa.care.pseudonyms import pseudonym
from presa.care.service.common import CareError, today_in_italy
from presa.care.service.letters import plan_document
from presa.care.service.pacts import can_process
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
)
from presa.care.store.models import PlanStatus
from presa.web.access import Permission
from presa.web.api.invitations import _pdf
from presa.web.api.plans import PLAN_WINDOW, _export_allowed, visible_plan
from presa.web.pages.core import Page, PostedForm, allowed, allowed_post, form_date, form_text
from presa.web.pages.patients import Ref, attempt, staff_only

router = APIRouter(include_in_schema=False)
PlanId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@dataclass(frozen=True)
class Month:
    year: int
    month: int
    days: list[tuple[date, list[PlannedActivity]]]


def months(start: date, activities: Sequence[PlannedActivity]) -> list[Month]:
    """The plan's 12 months from ``start``, each with its days that hold activities, in calendar order."""
    out: list[Month] = []
    year, month = start.year, start.month
    by_month: dict[tuple[int, int], dict[date, list[PlannedActivity]]] = {}
    for planned in by_day(activities):
        by_month.setdefault((planned.day.year, planned.day.month), {}).setdefault(planned.day, []).append(planned)
    last = max((p.day for p in activities), default=start)
    while (year, month) <= (last.year, last.month) or len(out) < 12:
        days = by_month.get((year, month), {})
        out.append(Month(year, month, sorted(days.items())))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        if len(out) >= 13:
            break
    return out


def _start(value: date | None) -> date:
    today = today_in_italy()
    if value is None:
        return today
    if abs(value - today) > PLAN_WINDOW:
        raise CareError(f"a plan starts within a year of today ({today.isoformat()})")
    return value


@router.get("/patients/{ref}/plans/preview")
def preview(
    page: Annotated[Page, allowed(Permission.WRITE_PLANS)],
    ref: Ref,
    start: Annotated[date | None, Query()] = None,
) -> Response:
    """The plan the patient's pathways give, laid on the calendar, not stored."""
    staff_only(page)
    patient, _ = page.ctx.patient(ref)
    day = _start(start)
    decision = can_process(page.db, patient.id)
    if not decision.allowed:
        return page.redirect(
            f"/patients/{patient.id}#pai", page.t("flash.refused", reason=decision.reason), kind="error"
        )
    try:
        plan = draft_care_plan(
            patient.pathologies,
            level=patient.level,
            age=patient.age_on(day),
            sex=_sex(patient.sex),
            start=day,
            municipality=patient.municipality,
        )
    except ValueError as exc:
        raise CareError(f"no plan can be built for patient {patient.id}: {exc}") from None
    page.ctx.audit("preview", "care_plan", None, patient_id=patient.id, detail={"start": day.isoformat()})
    counts: dict[str, int] = {}
    for planned in plan.activities:
        counts[planned.activity.key] = counts.get(planned.activity.key, 0) + 1
    return page.render(
        "plan_preview.html",
        patient=patient,
        plan=plan,
        start=day,
        activities=sorted(plan.merged.activities, key=lambda a: (KIND_RANK[a.kind], a.key)),
        counts=counts,
        months=months(plan.start, plan.activities),
    )


@router.post("/patients/{ref}/plans")
def generate(form: PostedForm, page: Annotated[Page, allowed_post(Permission.WRITE_PLANS)], ref: Ref) -> Response:
    staff_only(page)
    patient, _ = page.ctx.patient(ref)
    created: list[int] = []

    def change() -> None:
        created.append(
            generate_plan(page.db, patient.id, start=_start(form_date(form, "start")), author=page.me.username).id
        )

    response = attempt(page, f"/patients/{patient.id}#pai", page.t("flash.plan_generated"), change)
    if created:
        return page.redirect(f"/plans/{created[0]}", page.t("flash.plan_generated"))
    return response


@router.get("/plans/{plan_id}")
def plan_page(
    page: Annotated[Page, allowed(Permission.READ_PLANS)],
    plan_id: PlanId,
    version: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    staff_only(page)
    stored = visible_plan(page.ctx, plan_id)
    patient, _ = page.ctx.patient_by_id(stored.patient_id, what=f"care plan {plan_id}")
    plan = load_plan(page.db, stored.id, version)
    versions = list(plan_versions(page.db, stored.id))
    editable = (
        page.may(Permission.WRITE_PLANS)
        and stored.status is not PlanStatus.COMPLETED
        and version in (None, len(versions))
    )
    offered = (
        sorted(offered_activities(page.db, stored.id).values(), key=lambda a: (KIND_RANK[a.kind], a.key))
        if editable
        else []
    )
    decision = can_process(page.db, stored.patient_id)
    page.ctx.audit("read", "care_plan", stored.id, patient_id=stored.patient_id, detail={"version": version})
    return page.render(
        "plan.html",
        stored=stored,
        patient=patient,
        plan=plan,
        versions=list(reversed(versions)),
        shown_version=plan.version,
        editable=editable and decision.allowed,
        decision=decision,
        offered=offered,
        activities=by_day(plan.activities),
        months=months(plan.start, plan.activities),
    )


@router.post("/plans/{plan_id}/changes")
def personalise(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.WRITE_PLANS)], plan_id: PlanId
) -> Response:
    stored = visible_plan(page.ctx, plan_id)
    action, reason = form_text(form, "action", 8), form_text(form, "reason")
    day = form_date(form, "day")
    author = page.me.username
    back = f"/plans/{stored.id}"

    def change() -> None:
        if not reason:
            raise CareError(page.t("plan.reason_needed"))
        if action == "add":
            if day is None:
                raise CareError(page.t("plan.day_needed"))
            add_to_plan(
                page.db, stored.id, activity_key=form_text(form, "activity_key", 96), day=day, reason=reason,
                author=author,
            )  # fmt: skip
        elif action == "drop":
            drop_from_plan(
                page.db, stored.id, activity_id=form_text(form, "activity_id", 96), reason=reason, author=author
            )
        elif action == "move":
            if day is None:
                raise CareError(page.t("plan.day_needed"))
            move_in_plan(
                page.db, stored.id, activity_id=form_text(form, "activity_id", 96), day=day, reason=reason,
                author=author,
            )  # fmt: skip
        else:
            raise CareError(page.t("plan.unknown_change"))

    return attempt(page, back, page.t("flash.plan_changed"), change)


@router.post("/plans/{plan_id}/activate")
def activate(page: Annotated[Page, allowed_post(Permission.WRITE_PLANS)], plan_id: PlanId) -> Response:
    stored = visible_plan(page.ctx, plan_id)
    return attempt(
        page,
        f"/plans/{stored.id}",
        page.t("flash.plan_activated"),
        lambda: activate_plan(page.db, stored.id, author=page.me.username),
    )


@router.get("/plans/{plan_id}/calendar.ics")
def calendar(page: Annotated[Page, allowed(Permission.READ_PLANS)], plan_id: PlanId) -> Response:
    stored = visible_plan(page.ctx, plan_id)
    _export_allowed(page.ctx, stored)
    plan = load_plan(page.db, stored.id)
    patient, _ = page.ctx.patient_by_id(stored.patient_id, what=f"care plan {plan_id}")
    text = to_ical(plan, calendar_id=pseudonym(page.state.key, patient.resident_id), stamp=datetime.now(UTC))
    page.ctx.audit("export_ical", "care_plan", stored.id, patient_id=stored.patient_id)
    return Response(
        text.encode("utf-8"),
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="pai-{stored.id}.ics"', "Cache-Control": "no-store"},
    )


@router.get("/plans/{plan_id}/pdf")
def plan_pdf(page: Annotated[Page, allowed(Permission.READ_PLANS)], plan_id: PlanId) -> Response:
    stored = visible_plan(page.ctx, plan_id)
    _export_allowed(page.ctx, stored)
    page.ctx.audit("print", "care_plan", stored.id, patient_id=stored.patient_id)
    return _pdf(plan_document(page.db, stored), f"piano-assistenziale-{stored.id}.pdf")
