"""Invitation batches: the letters of one ATS, prepared together and recorded so nobody is invited twice.

:func:`invite` picks the open ``eligible`` episodes of an ATS's patients (level 1 first), records one batch and one
invitation per episode (unique per episode: a second batch cannot invite the same episode again), and moves every
episode to ``invited`` on the letter date, with its history row and an audit row per patient, all in bulk. The
letters themselves (PDF, in Italian, listing the gestori of the area) are produced from the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from presa.care.enrolment import EpisodeState, check_transition
from presa.care.service.common import CareError, now, today_in_italy
from presa.care.service.episodes import record_transitions
from presa.care.service.organisations import gestori_serving
from presa.care.store.audit import origin
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import AuditEvent, Episode, Gestore, Invitation, InvitationBatch, Patient

REASON = "invitation letter, batch {batch}"


@dataclass(frozen=True, slots=True)
class InvitedBatch:
    batch: InvitationBatch
    patient_ids: tuple[int, ...]
    gestori: tuple[Gestore, ...]
    """The gestori the letters list: accredited on the letter date and serving the ATS."""


def invite(
    session: Session,
    ats_code: str,
    *,
    author: str,
    letter_date: date | None = None,
    limit: int | None = None,
    at: datetime | None = None,
    today: date | None = None,
) -> InvitedBatch:
    """Invite the eligible, not yet invited patients of an ATS (at most ``limit``) in one batch."""
    at = at or now()
    today = today or today_in_italy(at)
    day = letter_date or today
    check_transition(
        EpisodeState.ELIGIBLE,
        date.min,
        EpisodeState.INVITED,
        effective_on=day,
        today=today,
        reason=REASON,
        author=author,
    )
    if limit is not None and limit < 1:
        raise CareError(f"limit must be at least 1, not {limit}")
    gestori = tuple(gestori_serving(session, ats_code, day))
    if not gestori:
        raise CareError(f"no accredited gestore serves ATS {ats_code} on {day.isoformat()}: the letter would list none")
    query = (
        select(Episode.id, Episode.patient_id)
        .join(Patient, Patient.id == Episode.patient_id)
        .where(
            Patient.ats_code == ats_code,
            Episode.state == EpisodeState.ELIGIBLE,
            Episode.closed_on.is_(None),
            Episode.state_since <= day,
            ~exists().where(Invitation.episode_id == Episode.id),
        )
        .order_by(Patient.level, Patient.id)
        .limit(limit)
    )
    chosen = session.execute(query).all()
    if not chosen:
        raise CareError(f"no eligible patient of ATS {ats_code} is left to invite")
    batch = InvitationBatch(ats_code=ats_code, letter_date=day, size=len(chosen), created_at=at, created_by=author)
    session.add(batch)
    session.flush()
    connection = session.connection()
    bulk_insert(
        connection,
        table_of(Invitation),
        ("batch_id", "episode_id", "patient_id"),
        ((batch.id, episode_id, patient_id) for episode_id, patient_id in chosen),
    )
    where = origin(session)
    in_batch = exists().where(Invitation.episode_id == Episode.id, Invitation.batch_id == batch.id)
    reason = REASON.format(batch=batch.id)
    record_transitions(session, in_batch, EpisodeState.INVITED, reason=reason, author=author, at=at, effective_on=day)
    session.execute(update(Episode).where(in_batch).values(state=EpisodeState.INVITED, state_since=day))
    bulk_insert(
        connection,
        table_of(AuditEvent),
        ("at", "actor", "action", "entity", "entity_id", "patient_id", "remote_addr"),
        ((at, author, "invite", "invitation_batch", str(batch.id), patient_id, where) for _, patient_id in chosen),
    )
    session.expire_all()  # the bulk statements changed episodes the session may hold
    return InvitedBatch(batch, tuple(patient_id for _, patient_id in chosen), gestori)


def invitations_of(session: Session, batch_id: int) -> Sequence[Invitation]:
    return session.scalars(select(Invitation).where(Invitation.batch_id == batch_id).order_by(Invitation.id)).all()
