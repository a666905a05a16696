"""Transitions of care: a hospital discharge or an ER visit of an enrolled patient opens two tasks.

- a follow-up for the case manager (call the patient, check therapy and appointments), due within
  ``transitions.follow_up_working_days`` working days (2) of the event - Italian holidays and the patron saint's
  day of the patient's municipality excluded (``presa.care.calendar``);
- a PAI review for the clinical manager, due within ``transitions.review_working_days`` working days (10).

The event comes from the flows (``reconcile``) or from a person (the API later). It is recorded once per patient,
kind and day: posting it again, or loading the same flows again, changes nothing.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.service.common import CareError, get, now
from presa.care.service.episodes import open_episode
from presa.care.service.pacts import require_processing
from presa.care.store.audit import record
from presa.care.store.models import Patient
from presa.followup.config import FollowupConfig, default_config
from presa.followup.rules import add_working_days
from presa.followup.service.worklist import add_item
from presa.followup.store import CareTransition, ItemKind, TransitionKind

WHAT = {TransitionKind.DISCHARGE: "hospital discharge", TransitionKind.ER_VISIT: "ER visit"}


def open_transition(
    session: Session,
    patient_id: int,
    kind: TransitionKind | str,
    event_on: date,
    *,
    source: str,
    author: str,
    at: datetime | None = None,
    config: FollowupConfig | None = None,
) -> CareTransition:
    """Record the event and open its follow-up and PAI review (or return the record made before)."""
    at = at or now()
    settings = config or default_config()
    try:
        parsed = TransitionKind(kind)
    except ValueError:
        raise CareError(f"unknown transition '{kind}': give discharge or er_visit") from None
    if source not in ("flows", "api"):
        raise CareError(f"unknown source '{source}': give flows or api")
    done = session.scalars(
        select(CareTransition).where(
            CareTransition.patient_id == patient_id, CareTransition.kind == parsed, CareTransition.event_on == event_on
        )
    ).first()
    if done is not None:
        return done
    require_processing(session, patient_id)
    patient = get(session, Patient, patient_id, "patient")
    episode = open_episode(session, patient_id)
    if episode is None:  # pragma: no cover - require_processing needs an open episode
        raise CareError(f"patient {patient.resident_id} has no open episode")
    what = WHAT[parsed]
    tag = f"{parsed.value}:{patient.id}:{event_on.isoformat()}"
    follow_up = add_item(
        session,
        key=f"post_discharge:{tag}",
        kind=ItemKind.POST_DISCHARGE,
        patient=patient,
        title=f"follow-up after the {what} of {event_on.isoformat()}",
        due_on=add_working_days(event_on, settings.transitions.follow_up_working_days, patient.municipality),
        author=author,
        origin="transition",
        at=at,
        gestore_id=episode.gestore_id,
        owner_id=episode.case_manager_id,
        config=settings,
    )
    review = add_item(
        session,
        key=f"pai_review:{tag}",
        kind=ItemKind.PAI_REVIEW,
        patient=patient,
        title=f"review the PAI after the {what} of {event_on.isoformat()}",
        due_on=add_working_days(event_on, settings.transitions.review_working_days, patient.municipality),
        author=author,
        origin="transition",
        at=at,
        gestore_id=episode.gestore_id,
        owner_id=episode.clinical_manager_id,
        config=settings,
    )
    transition = CareTransition(
        patient_id=patient.id,
        kind=parsed,
        event_on=event_on,
        source=source,
        follow_up_item_id=follow_up.id,
        review_item_id=review.id,
        recorded_at=at,
        recorded_by=author,
    )
    session.add(transition)
    session.flush()
    record(
        session,
        actor=author,
        action="transition_of_care",
        entity="care_transition",
        entity_id=transition.id,
        patient_id=patient.id,
        detail={"kind": parsed.value, "event_on": event_on.isoformat(), "source": source},
        at=at,
    )
    return transition
