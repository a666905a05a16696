"""Finding an account's patients fast: an indexable condition implied by the scope of ``presa.web.access``.

``access.scope_condition`` is written on each patient's *latest* episode, a correlated subquery no index can
drive: on a store of a million residents a GP's list would scan every patient. :func:`narrowed` is a condition
every patient in the scope meets - so ``scope AND narrowed`` is exactly the scope, never less and never more - and
that the database can answer from an index: the patients on the GP's list (``patients.gp_id``) and those of the
episodes they manage, as one ``IN (… UNION ALL …)`` (an ``OR`` of the two would make PostgreSQL scan the table);
the gestore's episodes. Access is still decided by ``access.py`` alone; this only tells the database where to start.
``tests/test_web_pages.py`` checks, for every account of the test world, that the two give the same patients.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, CompoundSelect, Select, func, select, true, union_all
from sqlalchemy.orm import Session, aliased

from presa.auth.models import Role
from presa.care.store.models import Episode, Patient
from presa.web.access import Actor, patients_query

LARGE = 5_000


def narrowed(actor: Actor) -> ColumnElement[bool]:
    """A superset of the actor's scope that an index answers (``true()`` when there is nothing to gain)."""
    if actor.role is Role.CLINICIAN and actor.gestore_id is not None and actor.practitioner_id is not None:
        own: Select[int] | CompoundSelect[int] = select(Episode.patient_id).where(
            Episode.clinical_manager_id == actor.practitioner_id, Episode.gestore_id == actor.gestore_id
        )
        if actor.practitioner_code is not None:
            listed = aliased(Patient)
            own = union_all(own, select(listed.id).where(listed.gp_id == actor.practitioner_code))
        return Patient.id.in_(own)
    if actor.role in (Role.GESTORE_ADMIN, Role.OPERATOR, Role.CASE_MANAGER) and actor.gestore_id is not None:
        return Patient.id.in_(select(Episode.patient_id).where(Episode.gestore_id == actor.gestore_id))
    return true()


def scoped_patients(actor: Actor, *, large: bool = False) -> Select[Patient, Episode]:
    """``access.patients_query`` with :func:`narrowed`: the same rows, from an index. For a ``large`` scope (see
    :func:`is_large`) the plain query: walking the patients in order and keeping the scope's is then faster than
    collecting the scope first."""
    query = patients_query(actor)
    return query if large else query.where(narrowed(actor))


def is_large(session: Session, actor: Actor) -> bool:
    """Whether a clinician follows more than :data:`LARGE` patients (two counts an index answers); a GP's list is
    a few hundred, a specialist managing a whole area's patients is not."""
    if actor.role is not Role.CLINICIAN or actor.practitioner_id is None:
        return False
    managed = session.scalar(
        select(func.count()).select_from(Episode).where(Episode.clinical_manager_id == actor.practitioner_id)
    )
    listed = 0
    if actor.practitioner_code is not None:
        listed = session.scalar(select(func.count()).where(Patient.gp_id == actor.practitioner_code)) or 0
    return (managed or 0) + listed > LARGE
