"""Working days and the 12-month calendar of a care plan.

A working day is a weekday that is neither an Italian national holiday (``data/holidays_it.yaml``, Easter
Monday computed) nor the patron saint's day of the patient's municipality, where known
(``data/patron_days.csv``, keyed by ISTAT municipality code). The calendar is laid on a precomputed table of
working days per year, so laying a plan costs index arithmetic, not a walk over the days of the year.

How :func:`lay_calendar` places the activities, from ``start`` to the same day a year later (excluded):

1. every activity's occurrences are spread evenly over the working days of the window, each in the middle of
   its share (twice a year: at one quarter and three quarters of the year);
2. visits are placed first: GP visits in the middle of their shares, specialist visits staggered away from
   them (see ``_specialist_phase``); a visit that would still fall on a day another visit holds moves to the
   next free working day, so the patient is not sent to two clinics at once;
3. an exam that feeds a visit (``precedes_visit``) is booked :data:`LEAD_WORKING_DAYS` working days before
   one: before the specialist visit of its own discipline when the plan has one, otherwise before a GP visit.
   When the exam is rarer than those visits it goes before an evenly chosen subset of them; when it is more
   frequent, its even schedule is shifted round the year so that one occurrence precedes the first of them
   (and each of them, when its cadence is a multiple of theirs). Labs before the same visit share one draw;
4. occurrences get ids ``<work key>-<nn>`` numbered in date order, so the same inputs always give the same
   ids.
"""

from __future__ import annotations

import csv
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from functools import cache, lru_cache
from itertools import chain
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from presa.care.pdta import VISIT_KINDS, Sex, TemplateSet
from presa.care.plan import KIND_RANK, CarePlan, MergedPlan, PlanActivity, PlannedActivity, merge_pathways
from presa.yamlfile import read_yaml

DATA_DIR = Path(__file__).parent / "data"
HOLIDAYS_FILE = DATA_DIR / "holidays_it.yaml"
PATRON_DAYS_FILE = DATA_DIR / "patron_days.csv"

LEAD_WORKING_DAYS = 10
"""Working days between an exam and the visit it feeds: two calendar weeks, inside the 7-14 a result needs."""

MonthDay = tuple[int, int]
HALF = Fraction(1, 2)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedHoliday(_Strict):
    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)
    name_it: str
    source: str
    from_year: int | None = None


class EasterHoliday(_Strict):
    days_after_easter: int = Field(ge=-60, le=60)
    name_it: str
    source: str


class HolidayRules(_Strict):
    sources: tuple[dict[str, str], ...]
    fixed: tuple[FixedHoliday, ...]
    easter_relative: tuple[EasterHoliday, ...]


@dataclass(frozen=True, slots=True)
class PatronDay:
    istat_code: str
    municipality: str
    month: int
    day: int
    patron: str
    source: str


@cache
def holiday_rules() -> HolidayRules:
    """The national holiday rules shipped with presa."""
    return HolidayRules.model_validate(read_yaml(HOLIDAYS_FILE))


@cache
def patron_days() -> dict[str, PatronDay]:
    """Patron saint's days by ISTAT municipality code."""
    with PATRON_DAYS_FILE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    days = {}
    for row in rows:
        code = row["istat_code"]
        if len(code) != 6 or not code.isdigit():
            raise ValueError(f"{PATRON_DAYS_FILE.name}: ISTAT code '{code}' must be six digits")
        day = PatronDay(code, row["municipality"], int(row["month"]), int(row["day"]), row["patron"], row["source"])
        date(2024, day.month, day.day)  # refuses an impossible day; 2024 is a leap year
        days[code] = day
    return days


def patron_day(municipality: str | None) -> PatronDay | None:
    """The patron saint's day of a municipality (ISTAT code), or None where it is not known."""
    return patron_days().get(municipality) if municipality else None


def easter_sunday(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous algorithm of Meeus, Jones and Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


def national_holidays(year: int) -> dict[date, str]:
    """The national public holidays of a year, by date (Sundays are left out: no weekend day is worked)."""
    rules = holiday_rules()
    holidays = {
        date(year, h.month, h.day): h.name_it for h in rules.fixed if h.from_year is None or year >= h.from_year
    }
    easter = easter_sunday(year)
    for h in rules.easter_relative:
        holidays[easter + timedelta(days=h.days_after_easter)] = h.name_it
    return holidays


def is_working_day(day: date, municipality: str | None = None) -> bool:
    """Not a weekend, not a national holiday, not the patron saint's day of the municipality (if known)."""
    table = _working_days_of_year(day.year, _patron_month_day(municipality))
    position = bisect_left(table, day.toordinal())
    return position < len(table) and table[position] == day.toordinal()


def working_days(start: date, end: date, municipality: str | None = None) -> tuple[date, ...]:
    """The working days from ``start`` (included) to ``end`` (excluded)."""
    window = _window(start.toordinal(), end.toordinal(), _patron_month_day(municipality))
    return tuple(date.fromordinal(o) for o in window)


def year_after(start: date) -> date:
    """The same day a year later; 29 February gives 28 February."""
    try:
        return start.replace(year=start.year + 1)
    except ValueError:
        return start.replace(year=start.year + 1, day=28)


def lay_calendar(merged: MergedPlan, start: date, *, municipality: str | None = None) -> CarePlan:
    """Lay a merged plan on the working days of the 12 months from ``start`` (version 1 of the care plan)."""
    end = year_after(start)
    window = _window(start.toordinal(), end.toordinal(), _patron_month_day(municipality))
    if not window:
        raise ValueError(f"no working day between {start} and {end}")
    planned = tuple(
        PlannedActivity(activity_id, date.fromordinal(window[slot]), activity)
        for activity_id, slot, activity in _layout(merged.activities, len(window))
    )
    return CarePlan(merged, municipality, start, end, planned)


def draft_care_plan(
    pathologies: Iterable[str],
    *,
    level: int,
    age: int,
    sex: Sex,
    start: date,
    municipality: str | None = None,
    templates: TemplateSet | None = None,
) -> CarePlan:
    """Merge a patient's pathways and lay them from ``start``: version 1 of the PAI, to preview or to save."""
    merged = merge_pathways(pathologies, level=level, age=age, sex=sex, templates=templates)
    return lay_calendar(merged, start, municipality=municipality)


def _patron_month_day(municipality: str | None) -> MonthDay | None:
    patron = patron_day(municipality)
    return (patron.month, patron.day) if patron else None


@lru_cache(maxsize=1024)
def _working_days_of_year(year: int, patron: MonthDay | None) -> tuple[int, ...]:
    """Ordinals of the working days of a year: computed once per year and patron day, shared by all plans."""
    closed = {d.toordinal() for d in national_holidays(year)}
    if patron:
        closed.add(date(year, *patron).toordinal())
    first = date(year, 1, 1).toordinal()
    last = date(year, 12, 31).toordinal()
    # date.fromordinal(o).weekday() == (o + 6) % 7: Monday is 0, so weekdays are below 5.
    return tuple(o for o in range(first, last + 1) if (o + 6) % 7 < 5 and o not in closed)


@lru_cache(maxsize=8192)
def _window(first: int, end: int, patron: MonthDay | None) -> tuple[int, ...]:
    """Ordinals of the working days in [first, end), cut from the yearly tables."""
    days: list[int] = []
    for year in range(date.fromordinal(first).year, date.fromordinal(end - 1).year + 1):
        table = _working_days_of_year(year, patron)
        days.extend(table[bisect_left(table, first) : bisect_left(table, end)])
    return tuple(days)


def _spread(occurrences: int, slots: int, at: Fraction = HALF) -> list[int]:
    """Indexes of ``occurrences`` evenly spread over ``slots``, each at fraction ``at`` of its share."""
    num, den = at.numerator, at.denominator
    return [(i * den + num) * slots // (occurrences * den) for i in range(occurrences)]


def _specialist_phase(k: int, specialists: int) -> Fraction:
    """Where the k-th of n specialist visits falls in its share: the middle of the k-th n-th, moved by a
    quarter of that part when n is odd, so that no specialist sits where the GP does (mid-share)."""
    return Fraction(4 * k + 2 + specialists % 2, 4 * specialists)


def _place_visits(activities: Sequence[PlanActivity], slots: int) -> list[tuple[PlanActivity, list[int]]]:
    """Visit slots: GP visits centred in their shares, specialist visits staggered away from them."""
    taken: set[int] = set()
    specialists = [a for a in activities if a.kind == "specialist_visit"]
    placed = []
    for activity in activities:
        if activity.kind == "gp_visit":
            wanted = _spread(activity.occurrences, slots)
        elif activity.kind == "specialist_visit":
            at = _specialist_phase(specialists.index(activity), len(specialists))
            wanted = _spread(activity.occurrences, slots, at)
        else:
            continue
        placed.append((activity, [_free_slot(position, taken, slots) for position in wanted]))
    return placed


def _free_slot(position: int, taken: set[int], slots: int) -> int:
    """The first slot from ``position`` on that no other visit holds (at the end of the year: before it)."""
    for candidate in chain(range(position, slots), range(position - 1, -1, -1)):
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    return position  # more visits than working days: share a day rather than fail


def _place_exam(activity: PlanActivity, visits: list[tuple[PlanActivity, list[int]]], slots: int) -> list[int]:
    positions = _spread(activity.occurrences, slots)
    targets = _visits_fed_by(activity, visits) if activity.precedes_visit else []
    if not targets:
        return positions
    if len(positions) <= len(targets):
        for exam, visit in _pair_evenly(len(positions), len(targets)):
            positions[exam] = max(0, targets[visit] - LEAD_WORKING_DAYS)
        return positions
    # More frequent than the visits (monitoring labs): keep the even schedule, shifted round the year so that
    # one occurrence precedes the first visit; with a multiple of the visits' cadence, each visit gets one.
    anchor = max(0, targets[0] - LEAD_WORKING_DAYS)
    nearest = min(positions, key=lambda position: abs(position - anchor))
    return sorted((position + anchor - nearest) % slots for position in positions)


def _visits_fed_by(activity: PlanActivity, visits: list[tuple[PlanActivity, list[int]]]) -> list[int]:
    """The visit slots an exam's results feed: its discipline's specialist visits if any, else the GP's."""
    same_discipline = [
        p
        for visit, positions in visits
        if visit.kind == "specialist_visit" and activity.discipline and visit.discipline == activity.discipline
        for p in positions
    ]
    if same_discipline:
        return sorted(same_discipline)
    return sorted(p for visit, positions in visits if visit.kind == "gp_visit" for p in positions)


def _pair_evenly(exams: int, visits: int) -> list[tuple[int, int]]:
    """Pairs (exam occurrence, visit) tying each of ``exams`` to one of an evenly chosen subset of ``visits``."""
    return [(e, (2 * e + 1) * visits // (2 * exams)) for e in range(exams)]


@lru_cache(maxsize=16_384)
def _layout(activities: tuple[PlanActivity, ...], slots: int) -> tuple[tuple[str, int, PlanActivity], ...]:
    """Where each occurrence falls, as (id, index of its working day).

    It depends only on the activities and the number of working days, so plans that share both share it.
    """
    visits = _place_visits(activities, slots)
    placed = list(visits)
    placed.extend((a, _place_exam(a, visits, slots)) for a in activities if a.kind not in VISIT_KINDS)
    layout = [
        (activity_id, slot, activity)
        for activity, slots_of_activity in placed
        for activity_id, slot in zip(
            _occurrence_ids(activity.key, len(slots_of_activity)), sorted(slots_of_activity), strict=True
        )
    ]
    layout.sort(key=lambda item: (item[1], KIND_RANK[item[2].kind], item[2].key, item[0]))
    return tuple(layout)


@lru_cache(maxsize=4096)
def _occurrence_ids(key: str, count: int) -> tuple[str, ...]:
    return tuple(f"{key}-{n:02d}" for n in range(1, count + 1))
