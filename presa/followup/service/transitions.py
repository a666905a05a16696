"""Transitions of care: a hospital discharge or an ER visit of an enrolled patient opens two tasks.

- a follow-up for the case manager (call the patient, check therapy and appointments), due within
  ``transitions.follow_up_working_days`` working days (2) of the event - Italian holidays and the patron saint's
  day of the patient's municipality excluded (``presa.care.calendar``);
- a PAI review for the clinical manager, due within ``transitions.review_working_days`` working days (10).

The event comes from the flows (``reconcile``, in bulk: :func:`open_transitions`) or from a person (the API,
:func:`open_transition`). It is recorded once per patient, kind and day: posting it again, or loading the same
flows again, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from presa.care.service.common import CareError, get, now
from presa.care.service.episodes import open_episode
from presa.care.service.pacts import require_processing
from presa.care.store.audit import origin, record
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import AuditEvent, Episode, Patient
from presa.followup.config import FollowupConfig, default_config
from presa.followup.rules import add_working_days, italian_day, priority_band, priority_score
from presa.followup.service.worklist import add_item
from presa.followup.store import CareTransition, ItemKind, ItemStatus, TransitionKind, WorkItem

WHAT = {TransitionKind.DISCHARGE: "hospital discharge", TransitionKind.ER_VISIT: "ER visit"}
SOURCES = ("flows", "api")
CHUNK = 5_000
ITEM_COLUMNS = ("key", "kind", "status", "patient_id", "gestore_id", "ats_code", "owner_id", "due_on", "priority_score",
                "priority", "title", "origin", "created_at", "created_by", "updated_at")  # fmt: skip
TRANSITION_COLUMNS = ("patient_id", "kind", "event_on", "source", "follow_up_item_id", "review_item_id", "recorded_at",
                      "recorded_by")  # fmt: skip
AUDIT_COLUMNS = ("at", "actor", "action", "entity", "entity_id", "patient_id", "remote_addr", "detail")


@dataclass(frozen=True, slots=True)
class Task:
    """One of the two items a transition opens."""

    key: str
    kind: ItemKind
    title: str
    due_on: date
    owner: str  # "case_manager" or "clinical_manager"


def tasks(kind: TransitionKind, patient_id: int, event_on: date, municipality: str | None,
          settings: FollowupConfig) -> tuple[Task, Task]:  # fmt: skip
    """The follow-up and the PAI review a discharge or ER visit opens: keys, titles, due days."""
    what, tag = WHAT[kind], f"{kind.value}:{patient_id}:{event_on.isoformat()}"
    t = settings.transitions
    return (
        Task(f"post_discharge:{tag}", ItemKind.POST_DISCHARGE, f"follow-up after the {what} of {event_on.isoformat()}",
             add_working_days(event_on, t.follow_up_working_days, municipality), "case_manager"),
        Task(f"pai_review:{tag}", ItemKind.PAI_REVIEW, f"review the PAI after the {what} of {event_on.isoformat()}",
             add_working_days(event_on, t.review_working_days, municipality), "clinical_manager"),
    )  # fmt: skip


def _kind(kind: TransitionKind | str) -> TransitionKind:
    try:
        return TransitionKind(kind)
    except ValueError:
        raise CareError(f"unknown transition '{kind}': give discharge or er_visit") from None


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
    parsed = _kind(kind)
    if source not in SOURCES:
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
    owners = {"case_manager": episode.case_manager_id, "clinical_manager": episode.clinical_manager_id}
    follow_up, review = (
        add_item(
            session,
            key=task.key,
            kind=task.kind,
            patient=patient,
            title=task.title,
            due_on=task.due_on,
            author=author,
            origin="transition",
            at=at,
            gestore_id=episode.gestore_id,
            owner_id=owners[task.owner],
            config=settings,
        )
        for task in tasks(parsed, patient.id, event_on, patient.municipality, settings)
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


def open_transitions(
    session: Session,
    events: Iterable[tuple[int, TransitionKind | str, date]],
    *,
    source: str,
    author: str,
    at: datetime | None = None,
    config: FollowupConfig | None = None,
) -> int:
    """:func:`open_transition` for many (patient, kind, day) events at once, in bulk: the same records, items and
    audit rows, written by the database's bulk load. The patients must be ones that may be processed (the caller's
    scope: reconciliation reads only theirs). Events recorded before are skipped; how many were recorded."""
    at = at or now()
    settings = config or default_config()
    if source not in SOURCES:
        raise CareError(f"unknown source '{source}': give flows or api")
    wanted = {(patient_id, _kind(kind), day) for patient_id, kind, day in events}
    if not wanted:
        return 0
    session.flush()
    known: set[tuple[int, TransitionKind, date]] = set()
    people: dict[int, tuple[int, str, str | None, int | None, int | None, int | None]] = {}
    ids = sorted({patient_id for patient_id, _, _ in wanted})
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        known.update(
            (p, k, d)
            for p, k, d in session.execute(
                select(CareTransition.patient_id, CareTransition.kind, CareTransition.event_on).where(
                    CareTransition.patient_id.in_(chunk)
                )
            )
        )
        for patient_id, *facts in session.execute(
            select(Patient.id, Patient.level, Patient.ats_code, Patient.municipality, Episode.gestore_id,
                   Episode.case_manager_id, Episode.clinical_manager_id)
            .join(Episode, and_(Episode.patient_id == Patient.id, Episode.closed_on.is_(None)))
            .where(Patient.id.in_(chunk))
        ):  # fmt: skip
            people[patient_id] = tuple(facts)  # type: ignore[assignment]
    new = sorted(e for e in wanted if e not in known and e[0] in people)
    if not new:
        return 0
    today, cap = italian_day(at), settings.worklist.overdue_cap_days
    items: list[tuple[Any, ...]] = []
    for patient_id, kind, event_on in new:
        level, ats_code, municipality, gestore_id, case_manager, clinical_manager = people[patient_id]
        owners = {"case_manager": case_manager, "clinical_manager": clinical_manager}
        for task in tasks(kind, patient_id, event_on, municipality, settings):
            score = priority_score(task.kind, level, task.due_on, today, cap_days=cap)
            items.append(
                (
                    task.key,
                    task.kind,
                    ItemStatus.OPEN,
                    patient_id,
                    gestore_id,
                    ats_code,
                    owners[task.owner],
                    task.due_on,
                    score,
                    priority_band(score),
                    task.title,
                    "transition",
                    at,
                    author,
                    at,
                )
            )
    connection = session.connection()
    bulk_insert(connection, table_of(WorkItem), ITEM_COLUMNS, items)
    keys = [row[0] for row in items]
    item_ids: dict[str, int] = {}
    for start in range(0, len(keys), CHUNK):
        chosen = select(WorkItem.key, WorkItem.id).where(WorkItem.key.in_(keys[start : start + CHUNK]))
        item_ids.update((key, item_id) for key, item_id in session.execute(chosen))
    records = []
    for patient_id, kind, event_on in new:
        follow_up, review = tasks(kind, patient_id, event_on, people[patient_id][2], settings)
        records.append((patient_id, kind, event_on, source, item_ids[follow_up.key], item_ids[review.key], at, author))
    bulk_insert(connection, table_of(CareTransition), TRANSITION_COLUMNS, records)
    transition_ids: dict[tuple[int, TransitionKind, date], int] = {}
    for start in range(0, len(ids), CHUNK):
        transition_ids.update(
            ((p, k, d), i)
            for i, p, k, d in session.execute(
                select(CareTransition.id, CareTransition.patient_id, CareTransition.kind, CareTransition.event_on)
                .where(CareTransition.patient_id.in_(ids[start : start + CHUNK]), CareTransition.recorded_at == at)
            )
        )  # fmt: skip
    where = origin(session)
    audit = [
        (at, author, "open", "work_item", str(item_ids[row[0]]), row[3], where,
         {"kind": row[1].value, "due_on": row[7].isoformat()})
        for row in items
    ] + [
        (at, author, "transition_of_care", "care_transition", str(transition_ids[(p, k, d)]), p, where,
         {"kind": k.value, "event_on": d.isoformat(), "source": source})
        for p, k, d in new
    ]  # fmt: skip
    bulk_insert(connection, table_of(AuditEvent), AUDIT_COLUMNS, audit)
    session.expire_all()
    return len(new)
