"""Patients: the list (filtered, paginated) and one patient's record - stratification, evidence, enrolment history.

Staff and patients see :class:`PatientOut`; ATS analysts see :class:`PseudonymousPatientOut`: a keyed pseudonym
instead of id and resident id, the birth year instead of the birth date, and the enrolment history without the
names and free text of its authors and reasons. Every patient shown leaves an audit row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy import String, cast, select

from presa.care.enrolment import EpisodeState
from presa.care.service.episodes import episodes_of
from presa.care.service.evidence import stratification_summary
from presa.care.service.letters import pathology_names
from presa.care.service.pacts import can_process
from presa.care.store.models import Episode, EpisodeEvent, Gestore, Patient, Practitioner
from presa.web.access import Permission, patients_query
from presa.web.deps import Ctx, requires
from presa.web.errors import ApiError
from presa.web.schemas import PathologyId, QueryId

router = APIRouter(tags=["patients"])
PatientRef = Annotated[
    str, Path(min_length=1, max_length=40, description="the patient's id; for ATS analysts, the pseudonym")
]
LEVELS_IT = {
    1: "fragilità clinica",
    2: "cronicità polipatologica",
    3: "cronicità in fase iniziale",
    4: "utente occasionale",
    5: "non utente",
}


class EpisodeOut(BaseModel):
    id: int
    state: EpisodeState
    state_since: date
    gestore_id: int | None
    gestore_name: str | None
    clinical_manager_id: int | None
    clinical_manager_name: str | None
    level_at_opening: int
    opened_at: datetime
    closed_on: date | None


class EventOut(BaseModel):
    seq: int
    from_state: EpisodeState | None
    to_state: EpisodeState
    effective_on: date
    recorded_at: datetime
    author: str | None
    reason: str | None


class EpisodeHistoryOut(EpisodeOut):
    events: list[EventOut]


class PathologyOut(BaseModel):
    id: str
    name: str


class StratumOut(BaseModel):
    run_id: int
    reference_date: date
    level: int
    pathologies: list[str]
    eligible: bool


class CriterionOut(BaseModel):
    pathology_id: str
    criterion_id: str
    source: str
    n_records: int
    ddd: float | None
    first_date: date | None
    last_date: date | None
    assigned: bool


class StratificationOut(BaseModel):
    run_id: int
    reference_date: date
    level: int
    level_name: str
    pathologies: list[PathologyOut]
    history: list[StratumOut]
    criteria: list[CriterionOut] | None
    note: str | None


class ProcessingOut(BaseModel):
    allowed: bool
    reason: str


class PatientOut(BaseModel):
    id: int
    resident_id: str
    sex: str
    birth_date: date
    municipality: str | None
    ats_code: str
    gp_id: str | None
    level: int
    pathologies: list[str]
    eligible: bool
    episode: EpisodeOut | None


class PseudonymousPatientOut(BaseModel):
    pseudonym: str
    sex: str
    birth_year: int
    municipality: str | None
    ats_code: str
    gp_id: str | None
    level: int
    pathologies: list[str]
    eligible: bool
    episode: EpisodeOut | None


class PatientDetailOut(PatientOut):
    stratification: StratificationOut
    episodes: list[EpisodeHistoryOut]
    processing: ProcessingOut


class PseudonymousPatientDetailOut(PseudonymousPatientOut):
    stratification: StratificationOut
    episodes: list[EpisodeHistoryOut]


class PatientPage(BaseModel):
    items: list[PatientOut] | list[PseudonymousPatientOut]
    limit: int
    offset: int
    next_offset: int | None


@router.get("/patients")
def list_patients(
    ctx: Annotated[Ctx, requires(Permission.READ_PATIENTS)],
    level: Annotated[list[int] | None, Query(description="levels 1 to 5, repeatable", max_length=5)] = None,
    pathology: Annotated[PathologyId | None, Query(description="a catalog pathology id")] = None,
    state: Annotated[EpisodeState | None, Query(description="state of the latest enrolment episode")] = None,
    gestore_id: Annotated[QueryId | None, Query()] = None,
    eligible: Annotated[bool | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> PatientPage:
    """The patients within the caller's scope, by id, with the latest episode of each."""
    if level and any(not 1 <= lv <= 5 for lv in level):
        raise ApiError(422, "invalid request: query.level: levels are 1 to 5")
    query = patients_query(ctx.actor)
    if level:
        query = query.where(Patient.level.in_(level))
    if pathology:
        escaped = pathology.replace("_", "\\_")
        query = query.where(cast(Patient.pathologies, String).like(f'%"{escaped}"%', escape="\\"))
    if state is not None:
        query = query.where(Episode.state == state)
    if gestore_id is not None:
        query = query.where(Episode.gestore_id == gestore_id)
    if eligible is not None:
        query = query.where(Patient.eligible.is_(eligible))
    rows: list[tuple[Patient, Episode | None]] = [
        (p, e) for p, e in ctx.session.execute(query.order_by(Patient.id).limit(limit + 1).offset(offset))
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    names = _names(ctx, [e for _, e in rows if e is not None])
    ctx.audit_patients("list", "patient", [p.id for p, _ in rows])
    items: list[PatientOut] | list[PseudonymousPatientOut]
    if ctx.actor.pseudonymised:
        items = [pseudonymous_out(ctx, p, e, names) for p, e in rows]
    else:
        items = [patient_out(p, e, names) for p, e in rows]
    return PatientPage(items=items, limit=limit, offset=offset, next_offset=offset + limit if more else None)


@router.get("/patients/{ref}")
def get_patient(
    ctx: Annotated[Ctx, requires(Permission.READ_PATIENTS)], ref: PatientRef
) -> PatientDetailOut | PseudonymousPatientDetailOut:
    """One patient: level and pathologies with the evidence that placed them, and every enrolment episode."""
    patient, latest = ctx.patient(ref)
    episodes = list(episodes_of(ctx.session, patient.id))
    names = _names(ctx, episodes)
    strat = _stratification(ctx, patient)
    history = [_history(ctx, e, names) for e in episodes]
    ctx.audit("read", "patient", patient.id, patient_id=patient.id)
    if ctx.actor.pseudonymised:
        out = pseudonymous_out(ctx, patient, latest, names)
        return PseudonymousPatientDetailOut(**out.model_dump(), stratification=strat, episodes=history)
    decision = can_process(ctx.session, patient.id)
    return PatientDetailOut(
        **patient_out(patient, latest, names).model_dump(),
        stratification=strat,
        episodes=history,
        processing=ProcessingOut(allowed=decision.allowed, reason=decision.reason),
    )


# --- views shared with the other routers ------------------------------------------------------------------------


Names = tuple[dict[int, str], dict[int, str]]


def _names(ctx: Ctx, episodes: Sequence[Episode]) -> Names:
    gestori = {e.gestore_id for e in episodes if e.gestore_id is not None}
    managers = {e.clinical_manager_id for e in episodes if e.clinical_manager_id is not None}
    g = {i: n for i, n in ctx.session.execute(select(Gestore.id, Gestore.name).where(Gestore.id.in_(gestori)))}
    m = {p.id: p.display_name for p in ctx.session.scalars(select(Practitioner).where(Practitioner.id.in_(managers)))}
    return g, m


def episode_out(episode: Episode | None, names: Names) -> EpisodeOut | None:
    if episode is None:
        return None
    gestori, managers = names
    return EpisodeOut(
        id=episode.id,
        state=episode.state,
        state_since=episode.state_since,
        gestore_id=episode.gestore_id,
        gestore_name=gestori.get(episode.gestore_id) if episode.gestore_id is not None else None,
        clinical_manager_id=episode.clinical_manager_id,
        clinical_manager_name=(
            managers.get(episode.clinical_manager_id) if episode.clinical_manager_id is not None else None
        ),
        level_at_opening=episode.level_at_opening,
        opened_at=episode.opened_at,
        closed_on=episode.closed_on,
    )


def patient_out(patient: Patient, episode: Episode | None, names: Names) -> PatientOut:
    return PatientOut(
        id=patient.id,
        resident_id=patient.resident_id,
        sex=patient.sex,
        birth_date=patient.birth_date,
        municipality=patient.municipality,
        ats_code=patient.ats_code,
        gp_id=patient.gp_id,
        level=patient.level,
        pathologies=list(patient.pathologies),
        eligible=patient.eligible,
        episode=episode_out(episode, names),
    )


def pseudonymous_out(ctx: Ctx, patient: Patient, episode: Episode | None, names: Names) -> PseudonymousPatientOut:
    return PseudonymousPatientOut(
        pseudonym=ctx.pseudonym(patient),
        sex=patient.sex,
        birth_year=patient.birth_date.year,
        municipality=patient.municipality,
        ats_code=patient.ats_code,
        gp_id=patient.gp_id,
        level=patient.level,
        pathologies=list(patient.pathologies),
        eligible=patient.eligible,
        episode=episode_out(episode, names),
    )


def _history(ctx: Ctx, episode: Episode, names: Names) -> EpisodeHistoryOut:
    summary = episode_out(episode, names)
    assert summary is not None
    events = ctx.session.scalars(
        select(EpisodeEvent).where(EpisodeEvent.episode_id == episode.id).order_by(EpisodeEvent.seq)
    ).all()
    hide = ctx.actor.pseudonymised
    return EpisodeHistoryOut(
        **summary.model_dump(),
        events=[
            EventOut(
                seq=e.seq,
                from_state=e.from_state,
                to_state=e.to_state,
                effective_on=e.effective_on,
                recorded_at=e.recorded_at,
                author=None if hide else e.author,
                reason=None if hide else e.reason,
            )
            for e in events
        ],
    )


def _stratification(ctx: Ctx, patient: Patient) -> StratificationOut:
    summary = stratification_summary(ctx.session, patient)
    known = pathology_names()
    return StratificationOut(
        run_id=summary.run_id,
        reference_date=summary.reference_date,
        level=patient.level,
        level_name=LEVELS_IT.get(patient.level, str(patient.level)),
        pathologies=[PathologyOut(id=p, name=known.get(p, p)) for p in patient.pathologies],
        history=[
            StratumOut(
                run_id=s.run_id,
                reference_date=s.reference_date,
                level=s.level,
                pathologies=list(s.pathologies),
                eligible=s.eligible,
            )
            for s in summary.history
        ],
        criteria=None
        if summary.criteria is None
        else [
            CriterionOut(
                pathology_id=c.pathology_id,
                criterion_id=c.criterion_id,
                source=c.source,
                n_records=c.n_records,
                ddd=c.ddd,
                first_date=c.first_date,
                last_date=c.last_date,
                assigned=c.assigned,
            )
            for c in summary.criteria
        ],
        note=summary.note,
    )
