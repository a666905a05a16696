"""The PAI in the store: generate it from the pure core, personalise it version by version, activate it.

Building a plan stays pure (``presa.care.calendar.draft_care_plan``, previewable without a database); this module
saves it and its later versions. Every operation first asks ``can_process``: without a signed pact in force - or
after its revocation - no plan is generated, no version added, nothing activated.

Storage: one ``care_plans`` row per patient and plan year (what it was built from: level, age, sex, pathologies,
pathways, the templates' digest), one ``care_plan_versions`` row per version (author, time, and for versions after
the first the change: add, drop or move, with its reason), and each version's full set of dated activities, with
the pathways that asked for each, as its calendar: stored once and shared by every version with the same activities
(``presa.care.store.calendars``), in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.calendar import draft_care_plan, year_after
from presa.care.enrolment import EpisodeState
from presa.care.pdta import Sex, TemplateSet, default_templates
from presa.care.plan import (
    KIND_RANK,
    Action,
    CarePlan,
    MergedPlan,
    PlanActivity,
    PlanChange,
    PlanChangeError,
    PlannedActivity,
    add_activity,
    drop_activity,
    merge_pathways,
    move_activity,
)
from presa.care.service.common import CareError, get, now, today_in_italy
from presa.care.service.episodes import apply_transition, episode_for_update, open_episode
from presa.care.service.pacts import require_processing
from presa.care.store.audit import record
from presa.care.store.calendars import store_calendar
from presa.care.store.models import (
    CarePlanRecord,
    Episode,
    Patient,
    PlanCalendarActivity,
    PlanStatus,
    PlanVersion,
)

PLANNABLE: frozenset[EpisodeState] = frozenset(
    {EpisodeState.PACT_SIGNED, EpisodeState.PAI_ACTIVE, EpisodeState.SUSPENDED}
)


def generate_plan(
    session: Session,
    patient_id: int,
    *,
    start: date,
    author: str,
    at: datetime | None = None,
    templates: TemplateSet | None = None,
) -> CarePlanRecord:
    """Merge the patient's pathways, lay the 12 months from ``start`` and save it as version 1 of a draft plan."""
    at = at or now()
    decision = require_processing(session, patient_id)
    patient = get(session, Patient, patient_id, "patient")
    episode = _plannable_episode(session, patient)
    end = _check_no_overlap(session, episode, start)
    template_set = templates or default_templates()
    try:
        plan = draft_care_plan(
            patient.pathologies,
            level=patient.level,
            age=patient.age_on(start),
            sex=_sex(patient.sex),
            start=start,
            municipality=patient.municipality,
            templates=template_set,
        )
    except ValueError as exc:
        raise CareError(f"no plan can be built for patient {patient.resident_id}: {exc}") from None
    if decision.pact_id is None or plan.end != end:  # pragma: no cover - an allowed decision names its pact
        raise CareError(f"no pact in force for patient {patient.resident_id}")
    record_ = CarePlanRecord(
        episode_id=episode.id,
        patient_id=patient.id,
        pact_id=decision.pact_id,
        start_on=plan.start,
        end_on=plan.end,
        municipality=plan.municipality,
        status=PlanStatus.DRAFT,
        current_version=1,
        level=plan.merged.level,
        age=plan.merged.age,
        sex=plan.merged.sex,
        pathologies=list(plan.merged.pathologies),
        pathways=list(plan.merged.pathways),
        generic_follow_up=list(plan.merged.generic_follow_up),
        templates_digest=template_set.digest,
        created_at=at,
        created_by=author,
    )
    session.add(record_)
    session.flush()
    calendar_id = store_calendar(session.connection(), plan.activities)
    session.add(PlanVersion(plan_id=record_.id, calendar_id=calendar_id, version=1, author=author, created_at=at))
    session.flush()
    record(
        session,
        actor=author,
        action="generate",
        entity="care_plan",
        entity_id=record_.id,
        patient_id=patient.id,
        detail={"start": start.isoformat(), "activities": len(plan.activities), "pathways": list(plan.merged.pathways)},
        at=at,
    )
    return record_


def load_plan(session: Session, plan_id: int, version: int | None = None) -> CarePlan:
    """A stored plan as the pure core's :class:`CarePlan` (its latest version unless ``version`` is given)."""
    stored = get(session, CarePlanRecord, plan_id, "care plan")
    wanted = version or stored.current_version
    versions = session.scalars(
        select(PlanVersion)
        .where(PlanVersion.plan_id == plan_id, PlanVersion.version <= wanted)
        .order_by(PlanVersion.version)
    ).all()
    if not versions or versions[-1].version != wanted:
        raise CareError(f"care plan {plan_id} has no version {wanted} (its latest is {stored.current_version})")
    rows = session.scalars(
        select(PlanCalendarActivity)
        .where(PlanCalendarActivity.calendar_id == versions[-1].calendar_id)
        .order_by(PlanCalendarActivity.position)
    ).all()
    shared: dict[tuple[Any, ...], PlanActivity] = {}
    planned = tuple(PlannedActivity(r.activity_id, r.day, _activity(r, shared), _origin(r.origin)) for r in rows)
    by_key: dict[str, PlanActivity] = {}
    for p in planned:
        by_key.setdefault(p.activity.key, p.activity)
    merged = MergedPlan(
        pathologies=tuple(stored.pathologies),
        level=stored.level,
        age=stored.age,
        sex=_sex(stored.sex),
        pathways=tuple(stored.pathways),
        activities=tuple(sorted(by_key.values(), key=lambda a: (KIND_RANK[a.kind], a.key))),
        suggestions=(),
        generic_follow_up=tuple(stored.generic_follow_up),
    )
    changes = tuple(
        PlanChange(
            v.version,
            _action(v.action),
            v.activity_id or "",
            v.reason or "",
            v.author,
            v.created_at,
            v.from_day,
            v.to_day,
        )
        for v in versions[1:]
    )
    return CarePlan(merged, stored.municipality, stored.start_on, stored.end_on, planned, wanted, changes)


def plan_versions(session: Session, plan_id: int) -> Sequence[PlanVersion]:
    get(session, CarePlanRecord, plan_id, "care plan")
    return session.scalars(
        select(PlanVersion).where(PlanVersion.plan_id == plan_id).order_by(PlanVersion.version)
    ).all()


def offered_activities(session: Session, plan_id: int, templates: TemplateSet | None = None) -> dict[str, PlanActivity]:
    """What the clinician may add, by key: the plan's own activities and the suggestions of its pathways."""
    stored = get(session, CarePlanRecord, plan_id, "care plan")
    current = load_plan(session, plan_id)
    merged = merge_pathways(
        stored.pathologies, level=stored.level, age=stored.age, sex=_sex(stored.sex), templates=templates
    )
    offered = {a.key: a for a in merged.suggestions}
    offered.update({a.key: a for a in merged.activities})
    offered.update({p.activity.key: p.activity for p in current.activities})
    return offered


def add_to_plan(
    session: Session,
    plan_id: int,
    *,
    activity_key: str,
    day: date,
    reason: str,
    author: str,
    at: datetime | None = None,
    templates: TemplateSet | None = None,
) -> CarePlanRecord:
    """A new version with one more occurrence of an activity of the plan or of its pathways' suggestions."""
    at = at or now()
    stored, current = _editable(session, plan_id)
    offered = offered_activities(session, plan_id, templates)
    if activity_key not in offered:
        raise CareError(
            f"'{activity_key}' is neither in care plan {plan_id} nor among its pathways' suggestions; "
            f"the activities offered are: {', '.join(sorted(offered))}"
        )
    return _save_version(
        session,
        stored,
        _personalise(add_activity, current, offered[activity_key], day, reason=reason, author=author, at=at),
    )


def drop_from_plan(
    session: Session, plan_id: int, *, activity_id: str, reason: str, author: str, at: datetime | None = None
) -> CarePlanRecord:
    """A new version without one dated activity."""
    at = at or now()
    stored, current = _editable(session, plan_id)
    return _save_version(
        session, stored, _personalise(drop_activity, current, activity_id, reason=reason, author=author, at=at)
    )


def move_in_plan(
    session: Session,
    plan_id: int,
    *,
    activity_id: str,
    day: date,
    reason: str,
    author: str,
    at: datetime | None = None,
) -> CarePlanRecord:
    """A new version with one dated activity on another day."""
    at = at or now()
    stored, current = _editable(session, plan_id)
    return _save_version(
        session, stored, _personalise(move_activity, current, activity_id, day, reason=reason, author=author, at=at)
    )


def activate_plan(
    session: Session,
    plan_id: int,
    *,
    author: str,
    at: datetime | None = None,
    today: date | None = None,
) -> CarePlanRecord:
    """Make a draft plan the patient's active PAI; the first activation moves the episode to ``pai_active``.

    An earlier active plan of the episode (last year's, at renewal) is completed.
    """
    at = at or now()
    today = today or today_in_italy(at)
    stored = get(session, CarePlanRecord, plan_id, "care plan")
    require_processing(session, stored.patient_id)
    if stored.status is not PlanStatus.DRAFT:
        raise CareError(f"care plan {plan_id} is {stored.status}: only a draft can be activated")
    episode = episode_for_update(session, stored.episode_id)
    if episode.state is EpisodeState.SUSPENDED:
        raise CareError(f"episode {episode.id} is suspended: resume it before activating a plan")
    for earlier in session.scalars(
        select(CarePlanRecord).where(
            CarePlanRecord.episode_id == episode.id, CarePlanRecord.status == PlanStatus.ACTIVE
        )
    ):
        earlier.status = PlanStatus.COMPLETED
    stored.status, stored.activated_at, stored.activated_by = PlanStatus.ACTIVE, at, author
    if episode.state is EpisodeState.PACT_SIGNED:
        apply_transition(
            session,
            episode,
            EpisodeState.PAI_ACTIVE,
            reason=f"care plan {stored.id} v{stored.current_version} activated",
            author=author,
            at=at,
            today=today,
        )
    session.flush()
    record(
        session,
        actor=author,
        action="activate",
        entity="care_plan",
        entity_id=stored.id,
        patient_id=stored.patient_id,
        detail={"version": stored.current_version},
        at=at,
    )
    return stored


def plans_of(session: Session, patient_id: int) -> Sequence[CarePlanRecord]:
    query = select(CarePlanRecord).where(CarePlanRecord.patient_id == patient_id).order_by(CarePlanRecord.start_on)
    return session.scalars(query).all()


# --- helpers -------------------------------------------------------------------------------------------------


def _plannable_episode(session: Session, patient: Patient) -> Episode:
    episode = open_episode(session, patient.id)
    if episode is None or episode.state not in PLANNABLE:
        state = episode.state if episode else "no open episode"
        raise CareError(
            f"patient {patient.resident_id} is at '{state}': a plan is generated once the care pact is signed "
            f"(states {', '.join(sorted(PLANNABLE))})"
        )
    return episode


def _check_no_overlap(session: Session, episode: Episode, start: date) -> date:
    end = year_after(start)
    clash = session.scalars(
        select(CarePlanRecord).where(
            CarePlanRecord.episode_id == episode.id,
            CarePlanRecord.status.in_((PlanStatus.DRAFT, PlanStatus.ACTIVE)),
            CarePlanRecord.start_on < end,
            CarePlanRecord.end_on > start,
        )
    ).first()
    if clash is not None:
        raise CareError(
            f"care plan {clash.id} ({clash.status}, {clash.start_on.isoformat()} to {clash.end_on.isoformat()}) "
            f"already covers part of the year from {start.isoformat()}"
        )
    return end


def _editable(session: Session, plan_id: int) -> tuple[CarePlanRecord, CarePlan]:
    stored = get(session, CarePlanRecord, plan_id, "care plan")
    require_processing(session, stored.patient_id)
    if stored.status is PlanStatus.COMPLETED:
        raise CareError(f"care plan {plan_id} is completed: personalise the current year's plan")
    return stored, load_plan(session, plan_id)


def _personalise(change: Any, plan: CarePlan, *args: Any, **kwargs: Any) -> CarePlan:
    try:
        result: CarePlan = change(plan, *args, **kwargs)
    except PlanChangeError as exc:
        raise CareError(str(exc)) from None
    return result


def _save_version(session: Session, stored: CarePlanRecord, plan: CarePlan) -> CarePlanRecord:
    change = plan.changes[-1]
    version = PlanVersion(
        plan_id=stored.id,
        calendar_id=store_calendar(session.connection(), plan.activities),
        version=plan.version,
        author=change.author,
        created_at=change.at,
        action=change.action,
        activity_id=change.activity_id,
        reason=change.reason,
        from_day=change.from_day,
        to_day=change.to_day,
    )
    session.add(version)
    session.flush()
    stored.current_version = plan.version
    session.flush()
    record(
        session,
        actor=change.author,
        action=f"personalise_{change.action}",
        entity="care_plan",
        entity_id=stored.id,
        patient_id=stored.patient_id,
        detail={"version": plan.version, "activity_id": change.activity_id, "reason": change.reason},
        at=change.at,
    )
    return stored


def _activity(row: PlanCalendarActivity, shared: dict[tuple[Any, ...], PlanActivity]) -> PlanActivity:
    fields = (
        row.key,
        row.code,
        row.kind,
        row.discipline,
        row.provider,
        row.description_it,
        row.description_en,
        row.times_per_year,
        row.precedes_visit,
        tuple(row.pathways),
        tuple(row.conditions),
    )
    if fields not in shared:
        shared[fields] = PlanActivity(*fields)  # type: ignore[arg-type]
    return shared[fields]


def _origin(value: str) -> Literal["pathway", "personalised"]:
    if value == "pathway":
        return "pathway"
    if value == "personalised":
        return "personalised"
    raise CareError(f"stored activity origin '{value}' is unknown")


def _action(value: str | None) -> Action:
    if value == "add":
        return "add"
    if value == "drop":
        return "drop"
    if value == "move":
        return "move"
    raise CareError(f"stored plan change '{value}' is unknown")


def _sex(value: str) -> Sex:
    if value == "M":
        return "M"
    if value == "F":
        return "F"
    raise CareError(f"sex '{value}' is neither M nor F")
