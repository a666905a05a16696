"""Enrolment episodes: moving them through the state machine, choosing the gestore, reading the history.

The rules are ``presa.care.enrolment`` (pure); this module loads the episode, applies them, and writes the new
state, one history row and one audit row. Transitions that need more than a reason have their own operation:
``gestore_chosen`` is :func:`choose_gestore`, ``pact_signed`` comes from signing the pact
(``presa.care.service.pacts.sign_pact``), and the first ``pai_active`` from activating the plan
(``presa.care.service.plans.activate_plan``); resuming a suspended episode is an ordinary transition.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import ColumnElement, func, insert, literal, null, select
from sqlalchemy.orm import Session, aliased

from presa.care.enrolment import (
    FINAL_STATES,
    TAKEN_IN_CHARGE,
    EpisodeState,
    Transition,
    check_transition,
)
from presa.care.service.common import CareError, get, now, today_in_italy
from presa.care.service.organisations import active_role
from presa.care.store.audit import record
from presa.care.store.models import Episode, EpisodeEvent, Gestore, Patient, RoleKind

S = EpisodeState
OWN_OPERATION: dict[EpisodeState, str] = {
    S.GESTORE_CHOSEN: "choose_gestore",
    S.PACT_SIGNED: "sign_pact (the episode moves when the pact is fully signed)",
}


def open_episode(session: Session, patient_id: int) -> Episode | None:
    """The patient's open episode, if any (there is at most one)."""
    query = select(Episode).where(Episode.patient_id == patient_id, Episode.closed_on.is_(None))
    return session.scalars(query).first()


def episode_for_update(session: Session, episode_id: int) -> Episode:
    """The episode, locked against concurrent transitions until the transaction ends (PostgreSQL)."""
    episode = session.scalars(select(Episode).where(Episode.id == episode_id).with_for_update()).first()
    if episode is None:
        raise CareError(f"no enrolment episode {episode_id}")
    return episode


def transition(
    session: Session,
    episode_id: int,
    to_state: EpisodeState | str,
    *,
    reason: str,
    author: str,
    effective_on: date | None = None,
    at: datetime | None = None,
    today: date | None = None,
) -> EpisodeEvent:
    """Move an episode to ``to_state`` (invited, suspended, resumed pai_active, withdrawn, deceased, ended)."""
    episode = episode_for_update(session, episode_id)
    try:
        target: EpisodeState | None = S(to_state)
    except ValueError:
        target = None  # check_transition names the unknown state and the allowed ones
    if target in OWN_OPERATION:
        raise CareError(f"'{target}' is reached through {OWN_OPERATION[target]}, not a plain transition")
    if target is S.PAI_ACTIVE and episode.state is S.PACT_SIGNED:
        raise CareError("'pai_active' is reached by activating the patient's plan (activate_plan)")
    return apply_transition(
        session,
        episode,
        to_state,
        reason=reason,
        author=author,
        effective_on=effective_on,
        at=at,
        today=today,
    )


def apply_transition(
    session: Session,
    episode: Episode,
    to_state: EpisodeState | str,
    *,
    reason: str,
    author: str,
    effective_on: date | None = None,
    at: datetime | None = None,
    today: date | None = None,
) -> EpisodeEvent:
    """Check and record one transition of an episode already loaded (for the services that own a transition)."""
    at = at or now()
    today = today or today_in_italy(at)
    checked = check_transition(
        episode.state,
        episode.state_since,
        to_state,
        effective_on=effective_on or today,
        today=today,
        reason=reason,
        author=author,
    )
    return _record(session, episode, checked, at)


def _record(session: Session, episode: Episode, checked: Transition, at: datetime) -> EpisodeEvent:
    seq = session.scalar(
        select(func.coalesce(func.max(EpisodeEvent.seq), 0)).where(EpisodeEvent.episode_id == episode.id)
    )
    event = EpisodeEvent(
        episode_id=episode.id,
        seq=(seq or 0) + 1,
        from_state=checked.from_state,
        to_state=checked.to_state,
        effective_on=checked.effective_on,
        recorded_at=at,
        author=checked.author,
        reason=checked.reason,
    )
    episode.state = checked.to_state
    episode.state_since = checked.effective_on
    if checked.to_state in FINAL_STATES:
        episode.closed_on = checked.effective_on
    session.add(event)
    session.flush()
    record(
        session,
        actor=checked.author,
        action="transition",
        entity="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
        detail={
            "from": checked.from_state.value,
            "to": checked.to_state.value,
            "effective_on": checked.effective_on.isoformat(),
        },
        at=at,
    )
    return event


def record_transitions(
    session: Session,
    episodes: ColumnElement[bool],
    to_state: EpisodeState,
    *,
    reason: str,
    author: str,
    at: datetime,
    effective_on: date,
    first: bool = False,
) -> None:
    """Bulk history: one row per episode matching ``episodes``, from its current state to ``to_state``.

    Set-based, for the bulk paths (a run's load, an invitation batch); the caller has checked the transition
    and updates the episodes' state afterwards. ``first`` writes the opening row of new episodes.
    """
    previous = aliased(EpisodeEvent)
    next_seq = (
        literal(1)
        if first
        else select(func.coalesce(func.max(previous.seq), 0) + 1)
        .where(previous.episode_id == Episode.id)
        .scalar_subquery()
    )
    session.execute(
        insert(EpisodeEvent).from_select(
            ["episode_id", "seq", "from_state", "to_state", "effective_on", "recorded_at", "author", "reason"],
            select(
                Episode.id,
                next_seq,
                null() if first else Episode.state,
                literal(to_state, EpisodeEvent.to_state.type),
                literal(effective_on, EpisodeEvent.effective_on.type),
                literal(at, EpisodeEvent.recorded_at.type),
                literal(author),
                literal(reason),
            ).where(episodes),
        )
    )


def choose_gestore(
    session: Session,
    episode_id: int,
    gestore_id: int,
    *,
    author: str,
    reason: str = "the patient's choice",
    clinical_manager_id: int | None = None,
    effective_on: date | None = None,
    at: datetime | None = None,
    today: date | None = None,
) -> EpisodeEvent:
    """Record the patient's gestore (and, if already known, the clinical manager) and move to gestore_chosen.

    The gestore must serve the patient's ATS, be accredited on the effective date and have room; the clinical
    manager must hold that role within the gestore on that date.
    """
    at = at or now()
    today = today or today_in_italy(at)
    day = effective_on or today
    episode = episode_for_update(session, episode_id)
    patient = get(session, Patient, episode.patient_id, "patient")
    gestore = get(session, Gestore, gestore_id, "gestore")
    if patient.ats_code not in gestore.ats_codes:
        served = ", ".join(gestore.ats_codes)
        raise CareError(
            f"gestore {gestore.code} does not take patients of ATS {patient.ats_code} in charge (it serves {served})"
        )
    if not gestore.accredited_on(day):
        raise CareError(f"gestore {gestore.code} is not accredited on {day.isoformat()}")
    taken = session.scalar(
        select(func.count())
        .select_from(Episode)
        .where(Episode.gestore_id == gestore.id, Episode.state.in_(TAKEN_IN_CHARGE))
    )
    if (taken or 0) >= gestore.capacity:
        raise CareError(
            f"gestore {gestore.code} is full: {taken} patients taken in charge, capacity {gestore.capacity}"
        )
    if clinical_manager_id is not None:
        check_clinical_manager(session, clinical_manager_id, gestore, day)
    event = apply_transition(
        session, episode, S.GESTORE_CHOSEN, reason=reason, author=author, effective_on=day, at=at, today=today
    )
    episode.gestore_id = gestore.id
    episode.clinical_manager_id = clinical_manager_id
    session.flush()
    return event


def assign_clinical_manager(
    session: Session, episode_id: int, practitioner_id: int, *, author: str, on: date | None = None
) -> Episode:
    """Name (or change) the clinical manager of an episode that has a gestore."""
    episode = episode_for_update(session, episode_id)
    if episode.gestore_id is None or episode.state not in TAKEN_IN_CHARGE:
        raise CareError(
            f"episode {episode.id} is '{episode.state}': a clinical manager is named once a gestore is chosen"
        )
    gestore = get(session, Gestore, episode.gestore_id, "gestore")
    check_clinical_manager(session, practitioner_id, gestore, on or today_in_italy())
    previous = episode.clinical_manager_id
    episode.clinical_manager_id = practitioner_id
    session.flush()
    record(
        session,
        actor=author,
        action="assign_clinical_manager",
        entity="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
        detail={"from": previous, "to": practitioner_id},
    )
    return episode


def assign_case_manager(
    session: Session, episode_id: int, practitioner_id: int | None, *, author: str, on: date | None = None
) -> Episode:
    """Name (or change, or with ``None`` remove) the case manager of an episode that has a gestore: a practitioner
    holding the case-manager role within that gestore on the day."""
    episode = episode_for_update(session, episode_id)
    if episode.gestore_id is None or episode.state not in TAKEN_IN_CHARGE:
        raise CareError(f"episode {episode.id} is '{episode.state}': a case manager is named once a gestore is chosen")
    gestore = get(session, Gestore, episode.gestore_id, "gestore")
    day = on or today_in_italy()
    if (
        practitioner_id is not None
        and active_role(session, practitioner_id, gestore.id, RoleKind.CASE_MANAGER, day) is None
    ):
        raise CareError(
            f"practitioner {practitioner_id} is not a case manager of gestore {gestore.code} on {day.isoformat()}"
        )
    previous = episode.case_manager_id
    episode.case_manager_id = practitioner_id
    session.flush()
    record(
        session,
        actor=author,
        action="assign_case_manager",
        entity="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
        detail={"from": previous, "to": practitioner_id},
    )
    return episode


def check_clinical_manager(session: Session, practitioner_id: int, gestore: Gestore, on: date) -> None:
    if active_role(session, practitioner_id, gestore.id, RoleKind.CLINICAL_MANAGER, on) is None:
        raise CareError(
            f"practitioner {practitioner_id} is not a clinical manager of gestore {gestore.code} on {on.isoformat()}"
        )


def history(session: Session, episode_id: int) -> Sequence[EpisodeEvent]:
    """The episode's transitions in the order they happened."""
    get(session, Episode, episode_id, "enrolment episode")
    return session.scalars(
        select(EpisodeEvent).where(EpisodeEvent.episode_id == episode_id).order_by(EpisodeEvent.seq)
    ).all()


def episodes_of(session: Session, patient_id: int) -> Sequence[Episode]:
    """All the patient's episodes, oldest first."""
    return session.scalars(select(Episode).where(Episode.patient_id == patient_id).order_by(Episode.id)).all()
