"""Contacts: every call in or out, with its outcome; a call-back becomes a work-list item at the time asked for.

A call-back asked for outside the desk's hours (``desk`` in ``data/followup.yaml``: every day 8-20) is due at the
next opening. A contact made about a call-back item closes it; a contact about another item is linked to it, and
the item stays open until someone closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.service.common import CareError, get, now
from presa.care.service.episodes import open_episode
from presa.care.service.pacts import require_processing
from presa.care.store.audit import record
from presa.care.store.models import Patient
from presa.followup.config import FollowupConfig, default_config
from presa.followup.rules import italian_day
from presa.followup.service.worklist import add_item, close
from presa.followup.store import Contact, ContactDirection, ContactOutcome, ItemKind, ItemStatus, WorkItem

E = TypeVar("E", ContactDirection, ContactOutcome)


def log_contact(
    session: Session,
    patient_id: int,
    *,
    direction: ContactDirection | str,
    outcome: ContactOutcome | str,
    operator: str,
    at: datetime | None = None,
    call_back_at: datetime | None = None,
    note: str | None = None,
    item_id: int | None = None,
    config: FollowupConfig | None = None,
) -> Contact:
    """Log one call; ``call_back_at`` is required exactly when the outcome is ``call_back``."""
    at = at or now()
    settings = config or default_config()
    parsed_direction = _parse(ContactDirection, direction, "direction")
    parsed = _parse(ContactOutcome, outcome, "outcome")
    if (parsed is ContactOutcome.CALL_BACK) != (call_back_at is not None):
        raise CareError("give call_back_at with a call_back outcome, and only then")
    if call_back_at is not None and call_back_at <= at:
        raise CareError(f"call back at {call_back_at.isoformat()}: that is not after the call")
    require_processing(session, patient_id)
    patient = get(session, Patient, patient_id, "patient")
    item = None
    if item_id is not None:
        item = get(session, WorkItem, item_id, "work item")
        if item.patient_id != patient.id:
            raise CareError(f"work item {item.id} is about another patient")
    contact = Contact(
        patient_id=patient.id,
        direction=parsed_direction,
        at=at,
        operator=operator,
        outcome=parsed,
        call_back_at=call_back_at,
        note=note,
        item_id=item_id,
    )
    session.add(contact)
    session.flush()
    if call_back_at is not None:
        episode = open_episode(session, patient.id)
        due_at = settings.desk.hours().next_open(call_back_at)
        callback = add_item(
            session,
            key=f"call_back:contact:{contact.id}",
            kind=ItemKind.CALL_BACK,
            patient=patient,
            title=f"call back (asked for {call_back_at.isoformat()})" + (f": {note}" if note else ""),
            due_on=italian_day(due_at),
            due_at=due_at,
            author=operator,
            origin="contact",
            at=at,
            gestore_id=episode.gestore_id if episode else None,
            owner_id=episode.case_manager_id if episode else None,
            config=settings,
        )
        contact.call_back_item_id = callback.id
    if item is not None and item.kind is ItemKind.CALL_BACK and item.status is not ItemStatus.CLOSED:
        close(session, item.id, outcome=f"called back: {parsed.value}", author=operator, at=at)
    session.flush()
    record(
        session,
        actor=operator,
        action="contact",
        entity="contact",
        entity_id=contact.id,
        patient_id=patient.id,
        detail={"direction": parsed_direction.value, "outcome": parsed.value},
        at=at,
    )
    return contact


def contacts_of(session: Session, patient_id: int) -> Sequence[Contact]:
    return session.scalars(
        select(Contact).where(Contact.patient_id == patient_id).order_by(Contact.at, Contact.id)
    ).all()


def _parse(kind: type[E], value: E | str, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise CareError(f"unknown {what} '{value}': give one of {', '.join(m.value for m in kind)}") from None
