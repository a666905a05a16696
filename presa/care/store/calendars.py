"""Plan calendars: a version's dated activities stored once per distinct calendar, shared by the versions that have it.

The plans of a region repeat - the same merged pathways laid from the same start give the same calendar - so a
plan version names its calendar (``care_plan_versions.calendar_id``) and the activities are stored with the
calendar, not with the version: a million residents' 324,559 plans have 7,555 distinct calendars, and generating
them stores 188,091 activity rows instead of 4.07 million. A calendar is found by the SHA-256 of its activities
in order (:func:`calendar_digest`); storing one that is already there stores nothing. A personalised version
usually gets a calendar of its own; one that returns to an earlier calendar shares it again.

Calendars are never changed or deleted once stored: versions may point at them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from presa.care.plan import PlanActivity, PlannedActivity
from presa.care.store.bulk import bulk_insert, copy_text, copy_value, table_of
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
    return CalendarDigests()(activities)


class CalendarDigests:
    """:func:`calendar_digest`, keeping each activity's part of the canonical text: a region's thousands of
    calendars are laid from a few hundred distinct activities."""

    def __init__(self) -> None:
        self._described: dict[PlanActivity, str] = {}
        self._strings: dict[str, str] = {}

    def __call__(self, activities: Sequence[PlannedActivity]) -> str:
        # The text is json.dumps of one list per activity, written piecewise: the same bytes.
        pieces = []
        for planned in activities:
            described = self._described.get(planned.activity)
            if described is None:
                described = self._described[planned.activity] = _dumps(_described(planned.activity))[1:-1]
            head = f'{self._string(planned.id)},"{planned.day.isoformat()}",{self._string(planned.origin)}'
            pieces.append(f"[{head},{described}]")
        return hashlib.sha256(("[" + ",".join(pieces) + "]").encode("utf-8")).hexdigest()

    def _string(self, value: str) -> str:
        dumped = self._strings.get(value)
        if dumped is None:
            dumped = self._strings[value] = _dumps(value)
        return dumped


def store_calendars(connection: Connection, calendars: Mapping[str, Sequence[PlannedActivity]]) -> dict[str, int]:
    """The id of each calendar (by its digest), storing with their activities those not stored yet.

    Safe against another transaction storing the same calendar at the same time: the unique digest makes one of
    them wait, then find the other's.
    """
    ids = _stored_ids(connection, calendars)
    missing = [digest for digest in calendars if digest not in ids]
    if missing:
        created = _insert_calendars(connection, [(digest, len(calendars[digest])) for digest in missing])
        _store_activities(connection, {calendar_id: calendars[digest] for digest, calendar_id in created.items()})
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


def _store_activities(connection: Connection, calendars: Mapping[int, Sequence[PlannedActivity]]) -> None:
    """The new calendars' activities; on PostgreSQL as COPY text, each distinct activity's columns written once."""
    table = table_of(PlanCalendarActivity)
    if connection.dialect.name != "postgresql":
        rows = (
            (calendar_id, position, *_values(planned))
            for calendar_id, activities in calendars.items()
            for position, planned in enumerate(activities)
        )
        bulk_insert(connection, table, ACTIVITY_COLUMNS, rows)
        return
    described: dict[PlanActivity, str] = {}

    def lines() -> Iterator[str]:
        for calendar_id, activities in calendars.items():
            for position, planned in enumerate(activities):
                text = described.get(planned.activity)
                if text is None:
                    text = described[planned.activity] = "\t".join(map(_copy_field, _described(planned.activity)))
                day, origin = planned.day.isoformat(), copy_value(planned.origin)
                yield f"{calendar_id}\t{position}\t{copy_value(planned.id)}\t{day}\t{origin}\t{text}\n"

    copy_text(connection, table, ACTIVITY_COLUMNS, lines())


def _copy_field(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return copy_value(json.dumps(value, ensure_ascii=False))
    return copy_value(value)


def _values(planned: PlannedActivity) -> tuple[Any, ...]:
    return (planned.id, planned.day, planned.origin, *_described(planned.activity))


def _described(a: PlanActivity) -> tuple[Any, ...]:
    return (
        *(a.key, a.code, a.kind, a.discipline, a.provider, a.description_it, a.description_en),
        *(float(a.times_per_year), a.precedes_visit, list(a.pathways), list(a.conditions)),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
