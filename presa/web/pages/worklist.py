"""The work list of the service centre and the case managers: the items of ``presa.followup`` (due soon, overdue,
not booked, invitations not answered, renewals, post-discharge follow-ups, call-backs, PAI reviews), most urgent
first, with the API's filters and keyset pages; on each item its next action, and the forms to assign, snooze,
close it and log a call about it.

The list is ``presa.followup.service.worklist.list_items`` with the API's scope (the gestore's items of the patients
within the account's scope, ``access.visible``): it hides the items of a patient whose pact was revoked and shows a
call-back only from its time, which logging the call moved to the desk's next opening (``desk`` in the follow-up's
configuration). Every write goes through the API's ``visible_item`` (404 outside) and the consent check; every
list writes one audit row per patient shown. ATS analysts read the work list pseudonymised, through the API only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy import and_, or_, select

from presa.care.service.common import CareError, now, today_in_italy
from presa.care.service.pacts import require_processing
from presa.care.store.models import (
    CarePlanRecord,
    Patient,
    PlanCalendarActivity,
    PlanVersion,
    Practitioner,
    PractitionerRole,
)
from presa.followup.config import default_config
from presa.followup.rules import DeskHours
from presa.followup.service.contacts import log_contact
from presa.followup.service.worklist import (
    WorkListFilter,
    WorkRow,
    assign,
    close,
    decode_cursor,
    list_items,
    snooze,
)
from presa.followup.store import ContactDirection, ContactOutcome, ItemKind, Priority, WorkItem
from presa.web.access import Permission, visible
from presa.web.api.followup import visible_item
from presa.web.errors import ApiError, not_found
from presa.web.pages import i18n
from presa.web.pages.core import Page, PostedForm, allowed, allowed_post, form_int, form_text, parse_instant, safe_next
from presa.web.pages.i18n import ITALY
from presa.web.pages.patients import Ref, attempt, staff_only

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]
MAX_AHEAD = timedelta(days=366)
HOME = "/work-list"
ACTIVITY_KINDS = frozenset({ItemKind.DUE_SOON, ItemKind.OVERDUE, ItemKind.NOT_BOOKED})
BOOKABLE_KINDS = frozenset({ItemKind.NOT_BOOKED, ItemKind.OVERDUE})


@dataclass(frozen=True)
class Line:
    """One row of the list as the page shows it."""

    item: WorkItem
    resident_id: str
    level: int
    what: str | None
    owner: str | None
    action_href: str


@dataclass(frozen=True)
class Filters:
    owner: str
    gp: str
    level: int | None
    pathology: str
    kinds: tuple[ItemKind, ...]
    priority: Priority | None
    due_from: date | None
    due_until: date | None
    snoozed: bool
    limit: int

    def query(self) -> list[tuple[str, str]]:
        """The filters as query parameters, for the next-page link and the forms' way back."""
        pairs = [("owner", self.owner), ("gp", self.gp), ("pathology", self.pathology)]
        pairs += [("level", str(self.level) if self.level else "")]
        pairs += [("kind", k.value) for k in self.kinds]
        pairs += [("priority", self.priority.value if self.priority else "")]
        pairs += [("due_from", self.due_from.isoformat() if self.due_from else "")]
        pairs += [("due_until", self.due_until.isoformat() if self.due_until else "")]
        pairs += [("snoozed", "true" if self.snoozed else "")]
        pairs += [("limit", str(self.limit) if self.limit != PAGE_SIZE else "")]
        return [(k, v) for k, v in pairs if v]


# --- shared with the timeline --------------------------------------------------------------------------------


def desk_hours() -> DeskHours:
    return default_config().desk.hours()


def activity_names(page: Page, items: Sequence[WorkItem]) -> dict[tuple[int, str], str]:
    """The description (in the page's language) of each item's planned activity, in one query."""
    plans = {i.plan_id for i in items if i.plan_id is not None}
    ids = {i.activity_id for i in items if i.activity_id is not None}
    if not plans or not ids:
        return {}
    rows = page.db.execute(
        select(CarePlanRecord.id, PlanCalendarActivity.activity_id, PlanCalendarActivity.description_it,
               PlanCalendarActivity.description_en)
        .join(PlanVersion, and_(PlanVersion.plan_id == CarePlanRecord.id,
                                PlanVersion.version == CarePlanRecord.current_version))
        .join(PlanCalendarActivity, PlanCalendarActivity.calendar_id == PlanVersion.calendar_id)
        .where(CarePlanRecord.id.in_(plans), PlanCalendarActivity.activity_id.in_(ids))
    )  # fmt: skip
    return {(plan, activity): it if page.lang == "it" else en for plan, activity, it, en in rows}


def gestore_staff(page: Page) -> list[Practitioner]:
    """The practitioners holding a role in the account's gestore today: who an item may be assigned to."""
    if page.me.gestore_id is None:
        return []
    today = today_in_italy()
    return list(
        page.db.scalars(
            select(Practitioner)
            .join(PractitionerRole, PractitionerRole.practitioner_id == Practitioner.id)
            .where(
                PractitionerRole.gestore_id == page.me.gestore_id,
                PractitionerRole.start_on <= today,
                or_(PractitionerRole.end_on.is_(None), PractitionerRole.end_on >= today),
            )
            .order_by(Practitioner.family_name, Practitioner.given_name, Practitioner.id)
            .distinct()
        )
    )


def action_href(item: WorkItem) -> str:
    """Where a person takes the item's next action: the booking page, the timeline's call form, the plan, the pact."""
    patient = f"/patients/{item.patient_id}"
    if item.kind in BOOKABLE_KINDS and item.plan_id is not None and item.activity_id is not None:
        return f"/plans/{item.plan_id}/activities/{item.activity_id}/book"
    return {
        ItemKind.DUE_SOON: f"{patient}/timeline",
        ItemKind.CALL_BACK: f"{patient}/timeline#call",
        ItemKind.POST_DISCHARGE: f"{patient}/timeline#call",
        ItemKind.INVITED_NO_ANSWER: f"{patient}/timeline#call",
        ItemKind.PAI_REVIEW: f"{patient}#pai",
        ItemKind.PLAN_RENEWAL: f"{patient}#pai",
        ItemKind.PACT_RENEWAL: f"{patient}#pact",
    }.get(item.kind, patient)


def local_input(value: datetime) -> str:
    """An instant as a ``datetime-local`` value in Italian time."""
    return value.astimezone(ITALY).strftime("%Y-%m-%dT%H:%M")


# --- the list ------------------------------------------------------------------------------------------------


@router.get("/work-list")
def work_list(
    page: Annotated[Page, allowed(Permission.READ_WORKLIST)],
    owner: Annotated[str, Query(max_length=12, pattern=r"^(|mine|none|[0-9]+)$")] = "",
    gp: Annotated[str, Query(max_length=16, pattern=r"^[A-Za-z0-9._-]*$")] = "",
    level: Annotated[int | None, Query(ge=1, le=5)] = None,
    pathology: Annotated[str, Query(max_length=64, pattern=r"^[a-z0-9_]*$")] = "",
    kind: Annotated[list[ItemKind] | None, Query(max_length=9)] = None,
    priority: Annotated[Priority | None, Query()] = None,
    due_from: Annotated[date | None, Query()] = None,
    due_until: Annotated[date | None, Query()] = None,
    snoozed: Annotated[bool, Query()] = False,
    after: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> Response:
    staff_only(page)
    actor = page.me
    if actor.gestore_id is None:  # pragma: no cover - staff accounts always have their gestore
        raise ApiError(403, "your account works for no gestore")
    filters = Filters(owner, gp, level, pathology, tuple(dict.fromkeys(kind or ())), priority, due_from, due_until,
                      snoozed, limit)  # fmt: skip
    owner_id: int | None = None
    if owner == "mine":
        owner_id = actor.practitioner_id if actor.practitioner_id is not None else -1
    elif owner.isdigit():
        owner_id = int(owner)
    if after is not None:
        try:
            decode_cursor(after)
        except CareError:
            raise ApiError(422, "invalid request: query.after: not a page of this list") from None
    found = list_items(
        page.db,
        WorkListFilter(
            gestore_id=actor.gestore_id,
            owner_id=owner_id,
            unassigned=owner == "none",
            gp_id=gp or None,
            level=level,
            pathology=pathology or None,
            kinds=filters.kinds,
            priority=priority,
            due_from=due_from,
            due_until=due_until,
            include_snoozed=snoozed,
        ),
        limit=limit,
        after=after,
        scope=[visible(actor, WorkItem.patient_id)],
    )
    page.ctx.audit_patients("list", "work_item", dict.fromkeys(r.item.patient_id for r in found.rows))
    staff = gestore_staff(page)
    lines = _lines(page, found.rows, {p.id: p.display_name for p in staff})
    query = filters.query()
    here = HOME + ("?" + urlencode(query + ([("after", after)] if after else [])) if query or after else "")
    current = now()
    desk = desk_hours()
    return page.render(
        "worklist.html",
        lines=lines,
        filters=filters,
        kinds=list(ItemKind),
        priorities=list(Priority),
        staff=staff,
        pathologies=_pathologies(page),
        next_href=HOME + "?" + urlencode([*query, ("after", found.next_cursor)]) if found.next_cursor else None,
        first_href=(HOME + ("?" + urlencode(query) if query else "")) if after else None,
        here=here,
        desk=desk,
        desk_open=desk.is_open(current),
        snooze_default=local_input(_tomorrow_morning(current)),
        call_back_default=local_input(desk.next_open(current + timedelta(hours=2))),
        outcomes=list(ContactOutcome),
        directions=list(ContactDirection),
    )


def _lines(page: Page, rows: Sequence[WorkRow], owners: dict[int, str]) -> list[Line]:
    names = activity_names(page, [r.item for r in rows])
    out = []
    for r in rows:
        item = r.item
        what = names.get((item.plan_id, item.activity_id)) if item.plan_id and item.activity_id else None
        owner = owners.get(item.owner_id) if item.owner_id is not None else None
        out.append(Line(item, r.resident_id, r.level, what, owner, action_href(item)))
    return out


def _pathologies(page: Page) -> list[tuple[str, str]]:
    from presa.web.pages.core import pathology_names

    return sorted(((pid, page.pathology(pid)) for pid in pathology_names()), key=lambda item: item[1].lower())


def _tomorrow_morning(current: datetime) -> datetime:
    local = current.astimezone(ITALY)
    return datetime.combine(local.date() + timedelta(days=1), desk_hours().opens, ITALY)


# --- acting on an item ---------------------------------------------------------------------------------------


def _back(form: Any) -> str:
    target = safe_next(form_text(form, "next", 500), HOME)
    return target if target.startswith(("/work-list", "/patients/")) else HOME


@router.post("/work-items/{item_id}/assign")
def assign_item(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.WORK_ITEMS)], item_id: ItemId
) -> Response:
    item, patient = visible_item(page.ctx, item_id)
    back, owner_id = _back(form), form_int(form, "owner_id")
    if owner_id is None:
        return page.redirect(back, page.t("worklist.owner_needed"), kind="error")

    def change() -> None:
        require_processing(page.db, patient.id)
        assign(page.db, item.id, owner_id, author=page.me.username)

    return attempt(page, back, page.t("worklist.assigned"), change)


@router.post("/work-items/{item_id}/snooze")
def snooze_item(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.WORK_ITEMS)], item_id: ItemId
) -> Response:
    item, patient = visible_item(page.ctx, item_id)
    back = _back(form)
    until, reason = parse_instant(form_text(form, "until", 40)), form_text(form, "reason")
    if until is None or not now() < until <= now() + MAX_AHEAD:
        return page.redirect(back, page.t("worklist.until_needed"), kind="error")
    if not reason:
        return page.redirect(back, page.t("worklist.reason_needed"), kind="error")
    moment = until

    def change() -> None:
        require_processing(page.db, patient.id)
        snooze(page.db, item.id, until=moment, reason=reason, author=page.me.username)

    return attempt(page, back, page.t("worklist.snoozed", until=i18n.instant(page.lang, moment)), change)


@router.post("/work-items/{item_id}/close")
def close_item(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.WORK_ITEMS)], item_id: ItemId
) -> Response:
    item, patient = visible_item(page.ctx, item_id)
    back, outcome = _back(form), form_text(form, "outcome")
    if not outcome:
        return page.redirect(back, page.t("worklist.outcome_needed"), kind="error")

    def change() -> None:
        require_processing(page.db, patient.id)
        close(page.db, item.id, outcome=outcome, author=page.me.username)

    return attempt(page, back, page.t("worklist.closed"), change)


@router.post("/patients/{ref}/contacts")
def new_contact(form: PostedForm, page: Annotated[Page, allowed_post(Permission.LOG_CONTACTS)], ref: Ref) -> Response:
    """Log a call made now; a call-back becomes an item at the time asked for, or the desk's next opening."""
    patient, _ = page.ctx.patient(ref)
    back = _back(form) if form_text(form, "next", 500) else f"/patients/{patient.id}/timeline#call"
    problem, call = _contact_form(page, form, patient)
    if problem is not None:
        return page.redirect(back, problem, kind="error")
    assert call is not None
    direction, outcome, call_back_at, note, item_id = call
    done = page.t("contact.logged")
    if call_back_at is not None:
        done = page.t("contact.call_back_set", at=i18n.instant(page.lang, desk_hours().next_open(call_back_at)))
    return attempt(
        page,
        back,
        done,
        lambda: log_contact(page.db, patient.id, direction=direction, outcome=outcome, operator=page.me.username,
                            call_back_at=call_back_at, note=note, item_id=item_id),
    )  # fmt: skip


Call = tuple[ContactDirection, ContactOutcome, datetime | None, str | None, int | None]


def _contact_form(page: Page, form: Any, patient: Patient) -> tuple[str | None, Call | None]:
    """The call the form describes, or what is wrong with it (in the page's language)."""
    try:
        direction = ContactDirection(form_text(form, "direction", 20))
        outcome = ContactOutcome(form_text(form, "outcome", 20))
    except ValueError:
        return page.t("contact.outcome_needed"), None
    raw = form_text(form, "call_back_at", 40)
    call_back_at = parse_instant(raw) if raw else None
    current = datetime.now(UTC)
    if outcome is ContactOutcome.CALL_BACK:
        if call_back_at is None or not current < call_back_at <= current + MAX_AHEAD:
            return page.t("contact.when_needed"), None
    else:
        call_back_at = None
    item_id = form_int(form, "item_id")
    if item_id is not None:
        item, _ = visible_item(page.ctx, item_id)
        if item.patient_id != patient.id:
            raise not_found(f"work item {item_id}")
    return None, (direction, outcome, call_back_at, form_text(form, "note") or None, item_id)
