"""A provider's schedule expanded into slots, pure: weekly openings, minus closures and (optionally) holidays.

Openings and closures are Italian local times; slots come out as UTC instants, so a slot at 09:00 is 08:00 UTC in
winter and 07:00 UTC in summer. A slot is cut only where a whole slot fits in an opening, and dropped when it
overlaps a closure of its day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from presa.care.calendar import national_holidays
from presa.followup.rules import ITALY


@dataclass(frozen=True, slots=True)
class Opening:
    weekday: int
    starts: time
    ends: time


@dataclass(frozen=True, slots=True)
class Closure:
    """A closure of one day: the whole day when ``starts`` is None."""

    day: date
    starts: time | None = None
    ends: time | None = None


@dataclass(frozen=True, slots=True)
class SlotSpan:
    day: date
    starts_at: datetime
    ends_at: datetime


def expand(
    openings: Iterable[Opening],
    closures: Iterable[Closure],
    *,
    slot_minutes: int,
    start: date,
    end: date,
    closed_on_holidays: bool = True,
) -> list[SlotSpan]:
    """The slots from ``start`` (included) to ``end`` (excluded), in time order.

    >>> spans = expand([Opening(0, time(9), time(10))], [], slot_minutes=20, start=date(2026, 3, 2),
    ...                end=date(2026, 3, 3))
    >>> [s.starts_at.strftime("%H:%M") for s in spans]  # UTC: Rome is UTC+1 in March
    ['08:00', '08:20', '08:40']
    """
    if slot_minutes < 1:
        raise ValueError("a slot lasts at least a minute")
    by_weekday: dict[int, list[Opening]] = {}
    for opening in openings:
        by_weekday.setdefault(opening.weekday, []).append(opening)
    closed: dict[date, list[Closure]] = {}
    for closure in closures:
        closed.setdefault(closure.day, []).append(closure)
    holidays: set[date] = set()
    if closed_on_holidays:
        for year in range(start.year, end.year + 1):
            holidays.update(national_holidays(year))
    length = timedelta(minutes=slot_minutes)
    spans: list[SlotSpan] = []
    day = start
    while day < end:
        if day not in holidays and not any(c.starts is None for c in closed.get(day, ())):
            for opening in sorted(by_weekday.get(day.weekday(), ()), key=lambda o: o.starts):
                spans.extend(_cut(day, opening, length, closed.get(day, [])))
        day += timedelta(days=1)
    return spans


def _cut(day: date, opening: Opening, length: timedelta, closures: list[Closure]) -> list[SlotSpan]:
    out = []
    cursor = datetime.combine(day, opening.starts)
    close = datetime.combine(day, opening.ends)
    while cursor + length <= close:
        starts, ends = cursor.time(), (cursor + length).time()
        if not any(
            c.starts is not None and c.ends is not None and starts < c.ends and c.starts < ends for c in closures
        ):
            out.append(
                SlotSpan(
                    day,
                    cursor.replace(tzinfo=ITALY).astimezone(UTC),
                    (cursor + length).replace(tzinfo=ITALY).astimezone(UTC),
                )
            )
        cursor += length
    return out
