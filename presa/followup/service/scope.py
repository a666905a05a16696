"""Which patients the follow-up may process: an open episode whose care pact in force is signed.

``presa.care.service.pacts.can_process`` decides for one patient; :func:`processable` says the same thing as SQL,
for the set-based steps (reconciliation, work-list refresh, the list itself). A pact is ``signed`` only while it is
the version in force: signing a newer one supersedes it and revoking it makes it ``revoked``, so "the open episode
has a signed pact" is exactly "processing is allowed" (the ``care`` scope is in every pact by construction).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import QueryableAttribute

from presa.care.enrolment import TAKEN_IN_CHARGE
from presa.care.pact import PactStatus
from presa.care.store.models import CarePact, Episode


def processable(patient_id: QueryableAttribute[int] | ColumnElement[int]) -> ColumnElement[bool]:
    """True for a patient with an open, taken-in-charge episode whose care pact in force is signed."""
    return exists(
        select(Episode.id)
        .join(CarePact, and_(CarePact.episode_id == Episode.id, CarePact.status == PactStatus.SIGNED))
        .where(Episode.patient_id == patient_id, Episode.closed_on.is_(None), Episode.state.in_(TAKEN_IN_CHARGE))
    )
