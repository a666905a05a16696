"""Care pacts: drafting a version, signing it, revoking it, and whether the patient's plan may be processed.

The rules are ``presa.care.pact`` (pure). :func:`can_process` is what every processing step consults - plan
generation and personalisation here, reminders and work lists later: after a revocation it answers no, with the
reason, until a new version is signed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from presa.care.enrolment import TAKEN_IN_CHARGE, EpisodeState
from presa.care.pact import (
    PactFacts,
    PactStatus,
    ProcessingDecision,
    check_revocation,
    check_scopes,
    check_signature,
    missing_signatures,
    processing_decision,
)
from presa.care.service.common import CareError, get, now, today_in_italy
from presa.care.service.episodes import apply_transition, check_clinical_manager, episode_for_update, open_episode
from presa.care.store.audit import record
from presa.care.store.models import CarePact, Episode, Gestore, PactScope, PactSignature, Patient


class ProcessingRefusedError(CareError):
    """The patient's plan may not be processed: no signed pact, or the pact was revoked."""

    def __init__(self, decision: ProcessingDecision) -> None:
        self.decision = decision
        super().__init__(decision.reason)


def draft_pact(
    session: Session,
    episode_id: int,
    *,
    scopes: Iterable[str],
    author: str,
    clinical_manager_id: int | None = None,
    at: datetime | None = None,
) -> CarePact:
    """A new draft version of the episode's pact, with the consent scopes the patient gives."""
    at = at or now()
    episode = episode_for_update(session, episode_id)
    if episode.state not in TAKEN_IN_CHARGE or episode.gestore_id is None:
        raise CareError(f"episode {episode.id} is '{episode.state}': a care pact is drafted once a gestore is chosen")
    given = check_scopes(scopes)
    gestore = get(session, Gestore, episode.gestore_id, "gestore")
    manager = clinical_manager_id or episode.clinical_manager_id
    if manager is None:
        raise CareError(f"episode {episode.id} has no clinical manager: name one to draft the pact")
    check_clinical_manager(session, manager, gestore, today_in_italy(at))
    pending = session.scalars(
        select(CarePact).where(CarePact.episode_id == episode.id, CarePact.status == PactStatus.DRAFT)
    ).first()
    if pending is not None:
        raise CareError(f"care pact v{pending.version} of episode {episode.id} is still a draft: sign it first")
    version = (
        session.scalar(select(func.coalesce(func.max(CarePact.version), 0)).where(CarePact.episode_id == episode.id))
        or 0
    ) + 1
    pact = CarePact(
        episode_id=episode.id,
        patient_id=episode.patient_id,
        gestore_id=gestore.id,
        clinical_manager_id=manager,
        version=version,
        status=PactStatus.DRAFT,
        drafted_at=at,
        drafted_by=author,
        scope_rows=[PactScope(scope=s) for s in sorted(given)],
    )
    episode.clinical_manager_id = manager
    session.add(pact)
    session.flush()
    record(
        session,
        actor=author,
        action="draft",
        entity="care_pact",
        entity_id=pact.id,
        patient_id=episode.patient_id,
        detail={"version": version, "scopes": sorted(given)},
        at=at,
    )
    return pact


def sign_pact(
    session: Session,
    pact_id: int,
    *,
    role: str,
    signer: str,
    signed_at: datetime,
    author: str,
    at: datetime | None = None,
    today: date | None = None,
) -> CarePact:
    """Record one signature; the last one needed makes the version the pact in force.

    The previous signed version is then superseded, and an episode still at ``gestore_chosen`` moves to
    ``pact_signed`` on the day of the last signature.
    """
    at = at or now()
    pact = get(session, CarePact, pact_id, "care pact")
    signed_role = check_signature(
        status=pact.status,
        version=pact.version,
        role=role,
        signer=signer,
        already_signed=[s.signer_role for s in pact.signatures],
        signed_at=signed_at,
        drafted_at=pact.drafted_at,
        now=at,
    )
    pact.signatures.append(
        PactSignature(
            signer_role=signed_role, signer_name=signer.strip(), signed_at=signed_at, recorded_at=at, recorded_by=author
        )
    )
    session.flush()
    record(
        session,
        actor=author,
        action="sign",
        entity="care_pact",
        entity_id=pact.id,
        patient_id=pact.patient_id,
        detail={"version": pact.version, "role": signed_role.value, "signed_at": signed_at.isoformat()},
        at=at,
    )
    if missing_signatures(s.signer_role for s in pact.signatures):
        return pact
    completed = max(s.signed_at for s in pact.signatures)
    episode = episode_for_update(session, pact.episode_id)
    for older in session.scalars(
        select(CarePact).where(CarePact.episode_id == pact.episode_id, CarePact.status == PactStatus.SIGNED)
    ):
        older.status, older.superseded_at = PactStatus.SUPERSEDED, at
    pact.status, pact.signed_at = PactStatus.SIGNED, completed
    if episode.state is EpisodeState.GESTORE_CHOSEN:
        apply_transition(
            session,
            episode,
            EpisodeState.PACT_SIGNED,
            reason=f"care pact v{pact.version} signed",
            author=author,
            effective_on=today_in_italy(completed),
            at=at,
            today=today,
        )
    session.flush()
    return pact


def revoke_pact(session: Session, pact_id: int, *, reason: str, author: str, at: datetime | None = None) -> CarePact:
    """Revoke the pact in force: from now on nothing processes the patient's plan until a new version is signed."""
    at = at or now()
    pact = get(session, CarePact, pact_id, "care pact")
    check_revocation(status=pact.status, version=pact.version, reason=reason)
    pact.status = PactStatus.REVOKED
    pact.revoked_at, pact.revoked_by, pact.revocation_reason = at, author, reason.strip()
    session.flush()
    record(
        session,
        actor=author,
        action="revoke",
        entity="care_pact",
        entity_id=pact.id,
        patient_id=pact.patient_id,
        detail={"version": pact.version, "reason": reason.strip()},
        at=at,
    )
    return pact


def can_process(session: Session, patient_id: int) -> ProcessingDecision:
    """Whether the patient's plan may be processed, from the open episode and its pact versions."""
    patient = get(session, Patient, patient_id, "patient")
    episode = open_episode(session, patient.id)
    if episode is None:
        last = session.scalars(
            select(Episode).where(Episode.patient_id == patient.id).order_by(Episode.id.desc())
        ).first()
        return processing_decision(patient.resident_id, last.state if last else None, ())
    pacts = session.scalars(select(CarePact).where(CarePact.episode_id == episode.id)).all()
    facts = [
        PactFacts(p.id, p.version, p.status, p.scopes, p.signed_at, p.revoked_at, p.revoked_by, p.revocation_reason)
        for p in pacts
    ]
    return processing_decision(patient.resident_id, episode.state, facts)


def require_processing(session: Session, patient_id: int) -> ProcessingDecision:
    """:func:`can_process`, raising :class:`ProcessingRefusedError` when the answer is no."""
    decision = can_process(session, patient_id)
    if not decision.allowed:
        raise ProcessingRefusedError(decision)
    return decision


def pacts_of(session: Session, episode_id: int) -> list[CarePact]:
    return list(session.scalars(select(CarePact).where(CarePact.episode_id == episode_id).order_by(CarePact.version)))
