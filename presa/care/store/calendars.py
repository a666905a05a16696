"""Plan calendars: a version's dated activities stored once per distinct calendar, shared by the versions that have it.

The plans of a region repeat - the same merged pathways laid from the same start give the same calendar - so a
plan version names its calendar (``care_plan_versions.calendar_id``) and the activities are stored with the
calendar, not with the version: a million residents' 324,559 plans have 9,343 distinct calendars, and generating
them stores 117,000 activity rows instead of 4.07 million. A calendar is found by the SHA-256 of its activities
in order (:func:`calendar_digest`); storing one that is already there stores nothing. A personalised version
usually gets a calendar of its own; one that returns to an earlier calendar shares it again.

Calendars are never changed or deleted once stored: versions may point at them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from presa.care.plan import PlannedActivity
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import PlanCalendar, PlanCalendarActivity

ACTIVITY_COLUMNS = (
    "calendar_id",
    "position",
    "activity_id",
    "day",
    "origin",
    "key",
    "code",
    "kind",
    "discipline",
    "provider",
    "description_it",
    "description_en",
    "times_per_year",
    "precedes_visit",
    "pathways",
    "conditions",
)
LOOKUP_CHUNK = 500
"""Digests looked up per statement (SQLite's limit on bound parameters is 999 in older builds)."""


def calendar_digest(activities: Sequence[PlannedActivity]) -> str:
    """The SHA-256 of the activities in order, every stored column but the calendar's id and the position.

    Migration 0012 computes the same digest for the calendars it made from the versions stored before it.
    """
    canonical = json.dumps([_canonical(p) for p in activities], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def store_calendars(connection: Connection, calendars: Mapping[str, Sequence[PlannedActivity]]) -> dict[str, int]:
    """The id of each calendar (by its digest), storing with their activities those not stored yet.

    Safe against another transaction storing the same calendar at the same time: the unique digest makes one of
    them wait, then find the other's.
    """
    ids = _stored_ids(connection, calendars)
    missing = [digest for digest in calendars if digest not in ids]
    if missing:
        created = _insert_calendars(connection, [(digest, len(calendars[digest])) for digest in missing])
        rows = (
            (calendar_id, position, *_values(planned))
            for digest, calendar_id in created.items()
            for position, planned in enumerate(calendars[digest])
        )
        bulk_insert(connection, table_of(PlanCalendarActivity), ACTIVITY_COLUMNS, rows)
        ids.update(created)
        if len(ids) < len(calendars):  # stored meanwhile by a concurrent transaction, now committed
            ids.update(_stored_ids(connection, [d for d in calendars if d not in ids]))
    return ids


def store_calendar(connection: Connection, activities: Sequence[PlannedActivity]) -> int:
    """The id of the calendar of these activities, stored if it is not yet."""
    digest = calendar_digest(activities)
    return store_calendars(connection, {digest: activities})[digest]


def _stored_ids(connection: Connection, digests: Iterable[str]) -> dict[str, int]:
    wanted, found = list(digests), {}
    for first in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[first : first + LOOKUP_CHUNK]
        rows = connection.execute(select(PlanCalendar.digest, PlanCalendar.id).where(PlanCalendar.digest.in_(chunk)))
        found.update({str(digest): int(calendar_id) for digest, calendar_id in rows})
    return found


def _insert_calendars(connection: Connection, calendars: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Insert the calendars that are still missing; the ids of those this transaction inserted."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(PlanCalendar)
        .on_conflict_do_nothing(index_elements=["digest"])
        .returning(PlanCalendar.digest, PlanCalendar.id)
    )
    rows = connection.execute(statement, [{"digest": d, "activities": n} for d, n in calendars])
    return {str(digest): int(calendar_id) for digest, calendar_id in rows}


def _values(planned: PlannedActivity) -> tuple[Any, ...]:
    a = planned.activity
    return (
        *(planned.id, planned.day, planned.origin, a.key, a.code, a.kind, a.discipline, a.provider),
        *(a.description_it, a.description_en, float(a.times_per_year), a.precedes_visit),
        *(list(a.pathways), list(a.conditions)),
    )


def _canonical(planned: PlannedActivity) -> list[Any]:
    values = list(_values(planned))
    values[1] = planned.day.isoformat()
    return values
