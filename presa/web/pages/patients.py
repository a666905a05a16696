"""The staff's patients: the list (filtered by level, pathology, enrolment state and what needs the user's action)
and one patient's page - why this level, the enrolment history, the care pact (draft, sign, print, revoke) and the
PAI (preview, generate; the plan itself is ``presa.web.pages.plans``).

Every list starts from ``presa.web.access.patients_query`` (the scope; through ``scope.scoped_patients``, which
only tells the database where to start) and every patient goes through ``Ctx.patient`` (404 outside the scope);
every list and page of patient data writes its audit rows, like the API. Lists page by patient id (keyset).
ATS analysts see patients only in aggregate here (the ATS pages): the pages name patients by internal id, which
analysts never see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy import ColumnElement, Select, String, and_, case, cast, exists, func, or_, select
from sqlalchemy import Row as DbRow
from sqlalchemy.orm import aliased

from presa.auth.models import Role
from presa.care.enrolment import TAKEN_IN_CHARGE, EpisodeState, TransitionError
from presa.care.pact import PATIENT_SIDE, ConsentScope, PactError, PactStatus, SignerRole, missing_signatures
from presa.care.plan import PlanChangeError
from presa.care.service.common import CareError, today_in_italy
from presa.care.service.episodes import assign_case_manager, episodes_of
from presa.care.service.evidence import stratification_summary
from presa.care.service.letters import pact_document
from presa.care.service.pacts import can_process, draft_pact, pacts_of, revoke_pact, sign_pact
from presa.care.service.plans import plans_of
from presa.care.store.models import (
    CarePact,
    CarePlanRecord,
    Episode,
    EpisodeEvent,
    Gestore,
    Patient,
    PlanStatus,
    Practitioner,
    PractitionerRole,
    RoleKind,
)
from presa.web.access import Permission
from presa.web.api.invitations import _pdf
from presa.web.api.pacts import visible_pact
from presa.web.errors import ApiError
from presa.web.pages.core import Page, PostedForm, allowed, allowed_post, form_int, form_text, parse_instant
from presa.web.pages.i18n import ITALY
from presa.web.pages.scope import is_large, scoped_patients

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
RENEW_WITHIN = timedelta(days=60)
"""A plan is 'to renew' when it ends within this many days and no draft for the next year exists."""
ACTIONS = ("any", "pact", "plan", "renew")
Ref = Annotated[str, Path(min_length=1, max_length=12, pattern=r"^[0-9]+$")]
PactId = Annotated[int, Path(ge=1, le=2**31 - 1)]
REFUSED = (CareError, PactError, TransitionError, PlanChangeError)


# --- what needs the user's action ----------------------------------------------------------------------------------


def pact_to_sign() -> ColumnElement[bool]:
    """The latest episode has a pact version still waiting for signatures."""
    return exists().where(CarePact.episode_id == Episode.id, CarePact.status == PactStatus.DRAFT)


def plan_to_activate() -> ColumnElement[bool]:
    """A signed pact and no active plan yet, or a draft plan waiting to be activated."""
    return or_(
        Episode.state == EpisodeState.PACT_SIGNED,
        exists().where(CarePlanRecord.episode_id == Episode.id, CarePlanRecord.status == PlanStatus.DRAFT),
    )


_DRAFT = aliased(CarePlanRecord, name="next_draft")


def plan_to_renew(today: date) -> ColumnElement[bool]:
    """The active plan ends within :data:`RENEW_WITHIN` and next year's is not drafted yet."""
    draft = _DRAFT
    return and_(
        exists().where(
            CarePlanRecord.episode_id == Episode.id,
            CarePlanRecord.status == PlanStatus.ACTIVE,
            CarePlanRecord.end_on <= today + RENEW_WITHIN,
        ),
        ~exists().where(draft.episode_id == Episode.id, draft.status == PlanStatus.DRAFT),
    )


def needs_action(action: str, today: date) -> ColumnElement[bool]:
    named = conditions(today)
    return or_(*named.values()) if action == "any" else named[action]


@dataclass(frozen=True)
class Row:
    patient: Patient
    episode: Episode | None
    gestore: str | None
    manager: str | None
    actions: tuple[str, ...]


def conditions(today: date) -> dict[str, ColumnElement[bool]]:
    return {"pact": pact_to_sign(), "plan": plan_to_activate(), "renew": plan_to_renew(today)}


def action_tags(page: Page, episodes: Sequence[Episode]) -> dict[int, tuple[str, ...]]:
    """Per episode id, what it waits for: ``pact``, ``plan``, ``renew`` (one query over the page shown)."""
    ids = [e.id for e in episodes]
    if not ids:
        return {}
    named = conditions(today_in_italy())
    query = select(Episode.id, *(case((c, 1), else_=0).label(n) for n, c in named.items())).where(Episode.id.in_(ids))
    return {row.id: tuple(n for n in named if row._mapping[n]) for row in page.db.execute(query)}


def names_of(page: Page, episodes: Sequence[Episode]) -> tuple[dict[int, str], dict[int, str]]:
    gestori = {e.gestore_id for e in episodes if e.gestore_id is not None}
    people = {e.clinical_manager_id for e in episodes if e.clinical_manager_id is not None} | {
        e.case_manager_id for e in episodes if e.case_manager_id is not None
    }
    g = dict(page.db.execute(select(Gestore.id, Gestore.name).where(Gestore.id.in_(gestori))).all())
    m = {p.id: p.display_name for p in page.db.scalars(select(Practitioner).where(Practitioner.id.in_(people)))}
    return g, m


def staff_only(page: Page) -> None:
    """The patient pages name patients by internal id: not for analysts (pseudonyms only) nor patients."""
    if not page.me.staff:
        raise ApiError(403, f"the {page.me.role} role sees no patient list here")


# --- the list ------------------------------------------------------------------------------------------------------


@router.get("/patients")
def patient_list(
    page: Annotated[Page, allowed(Permission.READ_PATIENTS)],
    level: Annotated[list[int] | None, Query(max_length=5)] = None,
    pathology: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9_]*$")] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    action: Annotated[str | None, Query(max_length=10)] = None,
    q: Annotated[str | None, Query(max_length=32)] = None,
    mine: Annotated[bool, Query()] = False,
    after: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    staff_only(page)
    actor = page.me
    large = is_large(page.db, actor)
    base = scoped_patients(actor, large=large)
    query = base
    levels = sorted({lv for lv in level or () if 1 <= lv <= 5})
    if levels:
        query = query.where(Patient.level.in_(levels))
    if pathology:
        escaped = pathology.replace("_", "\\_")
        query = query.where(cast(Patient.pathologies, String).like(f'%"{escaped}"%', escape="\\"))
    states = {s.value for s in EpisodeState}
    if state in states:
        query = query.where(Episode.state == state)
    if action in ACTIONS:
        query = query.where(needs_action(action, today_in_italy()))
    search = (q or "").strip()
    if search:
        query = query.where(Patient.resident_id.startswith(search, autoescape=True))
    if mine and actor.practitioner_id is not None:
        column = Episode.case_manager_id if actor.role is Role.CASE_MANAGER else Episode.clinical_manager_id
        query = query.where(column == actor.practitioner_id)
    # Keyset pages, by patient id: the next page starts after the last id shown, the previous ends before the first
    # (an offset would make the database walk every earlier patient of the scope again).
    found: list[DbRow[Patient, Episode]]
    if before is not None:
        backwards = query.where(Patient.id < before).order_by(Patient.id.desc()).limit(PAGE_SIZE + 1)
        found = list(reversed(page.db.execute(backwards).all()))
        earlier, later = len(found) > PAGE_SIZE, True
        found = found[-PAGE_SIZE:]
    else:
        if after is not None:
            query = query.where(Patient.id > after)
        found = list(page.db.execute(query.order_by(Patient.id).limit(PAGE_SIZE + 1)).all())
        earlier, later = after is not None, len(found) > PAGE_SIZE
        found = found[:PAGE_SIZE]
    episodes = [e for _, e in found if e is not None]
    gestori, people = names_of(page, episodes)
    tags = action_tags(page, episodes)
    rows = [
        Row(
            p,
            e,
            gestori.get(e.gestore_id) if e and e.gestore_id else None,
            people.get(e.clinical_manager_id) if e and e.clinical_manager_id else None,
            tags.get(e.id, ()) if e else (),
        )
        for p, e in found
    ]
    page.ctx.audit_patients("list", "patient", [r.patient.id for r in rows])
    counts = _action_counts(page, base) if actor.role is Role.CLINICIAN and not large else None
    filters = {
        "level": levels,
        "pathology": pathology or "",
        "state": state if state in states else "",
        "action": action if action in ACTIONS else "",
        "q": search,
        "mine": mine,
    }
    return page.render(
        "patients.html",
        rows=rows,
        filters=filters,
        earlier=earlier and bool(found),
        later=later and bool(found),
        first_id=found[0][0].id if found else 0,
        last_id=found[-1][0].id if found else 0,
        states=[s.value for s in EpisodeState],
        pathologies=sorted(
            ((pid, page.pathology(pid)) for pid in _known_pathologies()), key=lambda item: item[1].lower()
        ),
        counts=counts,
        query_string=_query_string(filters),
        today=today_in_italy(),
    )


def _known_pathologies() -> list[str]:
    from presa.web.pages.core import pathology_names

    return list(pathology_names())


def _action_counts(page: Page, base: Select[Patient, Episode]) -> dict[str, int]:
    """How many of the clinician's patients wait for each action, in one query (their scope is a GP's list)."""
    named = conditions(today_in_italy())
    query = base.with_only_columns(*(func.count().filter(c).label(n) for n, c in named.items()))
    row = page.db.execute(query).one()
    return {n: int(row._mapping[n] or 0) for n in named}


def _query_string(filters: dict[str, Any]) -> str:
    parts = [f"level={lv}" for lv in filters["level"]]
    parts += [f"{k}={filters[k]}" for k in ("pathology", "state", "action", "q") if filters[k]]
    if filters["mine"]:
        parts.append("mine=true")
    return "&".join(parts)


# --- one patient ---------------------------------------------------------------------------------------------------


@router.get("/patients/{ref}")
def patient_page(page: Annotated[Page, allowed(Permission.READ_PATIENTS)], ref: Ref) -> Response:
    staff_only(page)
    ctx = page.ctx
    patient, latest = ctx.patient(ref)
    episodes = list(episodes_of(page.db, patient.id))
    gestori, people = names_of(page, episodes)
    events: dict[int, list[EpisodeEvent]] = {e.id: [] for e in episodes}
    for event in page.db.scalars(
        select(EpisodeEvent)
        .where(EpisodeEvent.episode_id.in_(events))
        .order_by(EpisodeEvent.episode_id, EpisodeEvent.seq)
    ):
        events[event.episode_id].append(event)
    summary = stratification_summary(page.db, patient)
    pacts = pacts_of(page.db, latest.id) if latest is not None else []
    decision = can_process(page.db, patient.id)
    plans = list(plans_of(page.db, patient.id))
    ctx.audit("read", "patient", patient.id, patient_id=patient.id)
    today = today_in_italy()
    return page.render(
        "patient.html",
        patient=patient,
        age=patient.age_on(today),
        latest=latest,
        episodes=list(reversed(episodes)),
        events=events,
        gestori=gestori,
        people=people,
        summary=summary,
        criteria=_criteria_by_pathology(summary.criteria),
        pacts=list(reversed(pacts)),
        draft=next((p for p in pacts if p.status is PactStatus.DRAFT), None),
        in_force=next((p for p in pacts if p.status is PactStatus.SIGNED), None),
        missing=_missing(pacts),
        decision=decision,
        plans=list(reversed(plans)),
        scopes=[s.value for s in ConsentScope],
        signer_roles=[r.value for r in SignerRole],
        case_managers=_case_managers(page, latest, today) if page.may(Permission.MANAGE_GESTORE) else [],
        now_local=datetime.now(ITALY).strftime("%Y-%m-%dT%H:%M"),
        today=today,
        open_episode=latest is not None and latest.closed_on is None,
        taken=latest is not None and latest.state in TAKEN_IN_CHARGE,
    )


def _criteria_by_pathology(criteria: Sequence[Any] | None) -> list[tuple[str, list[Any]]]:
    if criteria is None:
        return []
    grouped: dict[str, list[Any]] = {}
    for c in criteria:
        grouped.setdefault(c.pathology_id, []).append(c)
    return sorted(grouped.items(), key=lambda item: (not any(c.assigned for c in item[1]), item[0]))


def _missing(pacts: Sequence[CarePact]) -> list[str]:
    draft = next((p for p in pacts if p.status is PactStatus.DRAFT), None)
    if draft is None:
        return []
    signed = {s.signer_role for s in draft.signatures}
    roles = [SignerRole.CLINICAL_MANAGER] if "clinical_manager" in missing_signatures(signed) else []
    if not signed & PATIENT_SIDE:
        roles = [SignerRole.PATIENT, SignerRole.LEGAL_REPRESENTATIVE, *roles]
    return [r.value for r in roles]


def _case_managers(page: Page, episode: Episode | None, today: date) -> list[Practitioner]:
    if episode is None or episode.gestore_id is None or episode.gestore_id != page.me.gestore_id:
        return []
    return list(
        page.db.scalars(
            select(Practitioner)
            .join(PractitionerRole, PractitionerRole.practitioner_id == Practitioner.id)
            .where(
                PractitionerRole.gestore_id == episode.gestore_id,
                PractitionerRole.role == RoleKind.CASE_MANAGER,
                PractitionerRole.start_on <= today,
                or_(PractitionerRole.end_on.is_(None), PractitionerRole.end_on >= today),
            )
            .order_by(Practitioner.family_name, Practitioner.given_name)
            .distinct()
        )
    )


# --- changes -------------------------------------------------------------------------------------------------------


def attempt(page: Page, back: str, done: str, change: Callable[[], object]) -> Response:
    """Run one change in a savepoint; a refusal of the care domain comes back as a message on the same page."""
    try:
        with page.db.begin_nested():
            change()
    except REFUSED as exc:
        return page.redirect(back, page.t("flash.refused", reason=str(exc)), kind="error")
    return page.redirect(back, done)


@router.post("/patients/{ref}/pacts")
def draft(form: PostedForm, page: Annotated[Page, allowed_post(Permission.DRAFT_PACTS)], ref: Ref) -> Response:
    patient, episode = page.ctx.patient(ref)
    back = f"/patients/{patient.id}#pact"
    if episode is None or episode.closed_on is not None:
        return page.redirect(back, page.t("flash.no_open_episode"), kind="error")
    scopes = [s for s in form.getlist("scopes") if isinstance(s, str)][:5]
    opened = episode
    return attempt(
        page,
        back,
        page.t("flash.pact_drafted"),
        lambda: draft_pact(page.db, opened.id, scopes=scopes, author=page.me.username),
    )


@router.post("/pacts/{pact_id}/sign")
def sign(form: PostedForm, page: Annotated[Page, allowed_post(Permission.SIGN_PACTS)], pact_id: PactId) -> Response:
    pact = visible_pact(page.ctx, pact_id)
    back = f"/patients/{pact.patient_id}#pact"
    role, signer = form_text(form, "role", 40), form_text(form, "signer", 200)
    now = datetime.now(UTC)
    signed_at = parse_instant(form_text(form, "signed_at", 40)) or now
    if signed_at <= pact.drafted_at < signed_at + timedelta(minutes=1):
        signed_at = min(pact.drafted_at, now)  # the form gives minutes: the minute the pact was drafted in
    if page.me.role is Role.PATIENT and role not in PATIENT_SIDE:
        raise ApiError(403, "a patient account signs on the patient's side")
    return attempt(
        page,
        back,
        page.t("flash.pact_signed"),
        lambda: sign_pact(
            page.db,
            pact.id,
            role=role,
            signer=signer,
            signed_at=min(signed_at, now),
            author=page.me.username,
        ),
    )


@router.post("/pacts/{pact_id}/revoke")
def revoke(form: PostedForm, page: Annotated[Page, allowed_post(Permission.REVOKE_PACTS)], pact_id: PactId) -> Response:
    pact = visible_pact(page.ctx, pact_id)
    reason = form_text(form, "reason")
    return attempt(
        page,
        f"/patients/{pact.patient_id}#pact",
        page.t("flash.pact_revoked"),
        lambda: revoke_pact(page.db, pact.id, reason=reason, author=page.me.username),
    )


@router.get("/pacts/{pact_id}/pdf")
def pact_pdf(page: Annotated[Page, allowed(Permission.READ_PACTS)], pact_id: PactId) -> Response:
    pact = visible_pact(page.ctx, pact_id)
    page.ctx.audit("print", "care_pact", pact.id, patient_id=pact.patient_id)
    return _pdf(pact_document(page.db, pact), f"patto-di-cura-v{pact.version}.pdf")


@router.post("/patients/{ref}/case-manager")
def case_manager(
    form: PostedForm, page: Annotated[Page, allowed_post(Permission.MANAGE_GESTORE)], ref: Ref
) -> Response:
    patient, episode = page.ctx.patient(ref)
    back = f"/patients/{patient.id}#enrolment"
    if episode is None or episode.closed_on is not None:
        return page.redirect(back, page.t("flash.no_open_episode"), kind="error")
    chosen = form_int(form, "practitioner_id")
    opened = episode
    return attempt(
        page,
        back,
        page.t("flash.case_manager_set"),
        lambda: assign_case_manager(page.db, opened.id, chosen, author=page.me.username),
    )
