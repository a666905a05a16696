"""The follow-up's rules, pure: reconciliation, work-list priority and next actions, desk and quiet hours, due days.

Reconciliation (:func:`reconcile`) decides what became of each planned activity from the services the flows say
were delivered:

- **code family** (:func:`same_family`): a delivered service fulfils a planned one when the codes are equal, or
  when one is the DM 1996 stem of the other (the DPCM 2017 code without its last segment: ``89.01`` and
  ``89.01.8``), since regional flows still carry older codes; two different DPCM 2017 codes of the same stem
  (``90.14.1``, ``90.14.3``) are different services;
- **date window** (:func:`activity_window`): an occurrence planned on day D of an activity done n times a year
  owns the days from D - s/2 to D + s/2, where s = 365 // n is its share of the year; done by
  D + min(30, max(3, s // 6)) (and never after the window) it is on time, later in the window it is late;
- **one service, one activity**: each patient's occurrences are taken in date order and each takes, among the
  services of its family in its window not yet taken, the one nearest its day (the earlier one on a tie);
- **missed** once the flows cover the whole window (``as_of`` after its last day) and nothing matched;
- activities without a code (GP visits, most education) are paid otherwise and never appear in the flows: the
  reconciliation leaves them planned, for a person to mark done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from presa.care.calendar import working_days
from presa.followup.store import ItemKind, Outcome, Priority

ITALY = ZoneInfo("Europe/Rome")
DAYS_IN_YEAR = 365
MAX_ON_TIME_DAYS = 30
MIN_ON_TIME_DAYS = 3


# --- reconciliation ------------------------------------------------------------------------------------------


def code_stem(code: str) -> str:
    """The first two segments of a nomenclator code: its DM 1996 stem (``89.01.8`` → ``89.01``)."""
    return ".".join(code.strip().upper().split(".")[:2])


def same_family(planned: str, delivered: str) -> bool:
    """Whether a delivered service code fulfils a planned one (equal, or one is the other's DM 1996 stem).

    >>> same_family("89.01.8", "89.01"), same_family("89.01", "89.01.8"), same_family("90.14.1", "90.14.3")
    (True, True, False)
    """
    p, d = planned.strip().upper(), delivered.strip().upper()
    return p == d or d == code_stem(p) or p == code_stem(d)


@dataclass(frozen=True, slots=True)
class Window:
    """The days an occurrence owns, and the last day it counts as done on time."""

    due: date
    opens: date
    closes: date
    on_time_until: date

    def holds(self, day: date) -> bool:
        return self.opens <= day <= self.closes


def activity_window(due: date, times_per_year: float) -> Window:
    """The window of an occurrence planned on ``due`` of an activity done ``times_per_year`` times a year.

    >>> w = activity_window(date(2026, 6, 1), 2)
    >>> (w.opens.isoformat(), w.closes.isoformat(), w.on_time_until.isoformat())
    ('2026-03-02', '2026-08-31', '2026-07-01')
    """
    occurrences = max(1, math.ceil(times_per_year - 1e-9))
    share = DAYS_IN_YEAR // occurrences
    half = share // 2
    tolerance = min(half, MAX_ON_TIME_DAYS, max(MIN_ON_TIME_DAYS, share // 6))
    return Window(due, due - timedelta(days=half), due + timedelta(days=half), due + timedelta(days=tolerance))


@dataclass(frozen=True, slots=True)
class PlannedOccurrence:
    plan_id: int
    activity_id: str
    due: date
    code: str | None
    times_per_year: float


@dataclass(frozen=True, slots=True)
class DeliveredService:
    id: int
    day: date
    code: str


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What the flows say of one occurrence: ``outcome`` None means still planned."""

    plan_id: int
    activity_id: str
    window: Window
    outcome: Outcome | None
    done_on: date | None = None
    execution_id: int | None = None


def reconcile(
    planned: Iterable[PlannedOccurrence], delivered: Iterable[DeliveredService], as_of: date | None
) -> list[Reconciled]:
    """Match one patient's planned occurrences with the services delivered to them (rules: module docstring).

    ``as_of`` is the last day the flows cover (None: no flows yet, nothing can be missed).
    """
    services = sorted(delivered, key=lambda s: (s.day, s.id))
    taken: set[int] = set()
    results = []
    for occurrence in sorted(planned, key=lambda p: (p.due, p.plan_id, p.activity_id)):
        window = activity_window(occurrence.due, occurrence.times_per_year)
        match = _nearest(occurrence, window, services, taken) if occurrence.code else None
        if match is not None:
            taken.add(match.id)
            outcome = Outcome.DONE_ON_TIME if match.day <= window.on_time_until else Outcome.DONE_LATE
            results.append(Reconciled(occurrence.plan_id, occurrence.activity_id, window, outcome, match.day, match.id))
        elif occurrence.code and as_of is not None and as_of > window.closes:
            results.append(Reconciled(occurrence.plan_id, occurrence.activity_id, window, Outcome.MISSED))
        else:
            results.append(Reconciled(occurrence.plan_id, occurrence.activity_id, window, None))
    return results


def _nearest(
    occurrence: PlannedOccurrence, window: Window, services: Sequence[DeliveredService], taken: set[int]
) -> DeliveredService | None:
    assert occurrence.code is not None
    best: DeliveredService | None = None
    for service in services:
        if service.day > window.closes:
            break
        if service.id in taken or service.day < window.opens or not same_family(occurrence.code, service.code):
            continue
        if best is None or abs((service.day - window.due).days) < abs((best.day - window.due).days):
            best = service
    return best


def manual_outcome(due: date, times_per_year: float, done_on: date) -> Outcome:
    """A person's "done on ``done_on``": on time or late by the same window as the flows."""
    window = activity_window(due, times_per_year)
    return Outcome.DONE_ON_TIME if done_on <= window.on_time_until else Outcome.DONE_LATE


# --- work lists ----------------------------------------------------------------------------------------------

LEVEL_POINTS: dict[int, int] = {1: 400, 2: 300, 3: 200, 4: 100, 5: 100}
KIND_POINTS: dict[ItemKind, int] = {
    ItemKind.POST_DISCHARGE: 150,
    ItemKind.CALL_BACK: 120,
    ItemKind.PAI_REVIEW: 100,
    ItemKind.OVERDUE: 50,
    ItemKind.PLAN_RENEWAL: 40,
    ItemKind.PACT_RENEWAL: 40,
    ItemKind.NOT_BOOKED: 30,
    ItemKind.DUE_SOON: 20,
    ItemKind.INVITED_NO_ANSWER: 0,
}
POINTS_PER_DAY_OVERDUE = 2
URGENT_FROM, ASAP_FROM = 450, 600

NEXT_ACTION: dict[ItemKind, str] = {
    ItemKind.DUE_SOON: "remind the patient",
    ItemKind.OVERDUE: "call the patient and rebook",
    ItemKind.NOT_BOOKED: "book a slot",
    ItemKind.INVITED_NO_ANSWER: "call about the invitation",
    ItemKind.PLAN_RENEWAL: "ask the clinical manager to renew the PAI",
    ItemKind.PACT_RENEWAL: "renew the care pact with the patient",
    ItemKind.POST_DISCHARGE: "call the patient after the discharge",
    ItemKind.PAI_REVIEW: "review the PAI",
    ItemKind.CALL_BACK: "call the patient back",
}


def priority_score(kind: ItemKind, level: int, due_on: date, today: date, *, cap_days: int = 180) -> int:
    """The most complex patients and the most overdue items first.

    Points for the level (level 1: 400 ... levels 4-5: 100), for the kind (a post-discharge follow-up 150 ... an
    unanswered invitation 0) and 2 per day overdue, up to ``cap_days`` days.

    >>> priority_score(ItemKind.OVERDUE, 1, date(2026, 3, 1), date(2026, 3, 11))
    470
    """
    overdue = min(max((today - due_on).days, 0), cap_days)
    return LEVEL_POINTS.get(level, 100) + KIND_POINTS[kind] + POINTS_PER_DAY_OVERDUE * overdue


def priority_band(score: int) -> Priority:
    """The FHIR priority of a score: asap from 600, urgent from 450, routine below."""
    if score >= ASAP_FROM:
        return Priority.ASAP
    if score >= URGENT_FROM:
        return Priority.URGENT
    return Priority.ROUTINE


def next_action(kind: ItemKind) -> str:
    return NEXT_ACTION[kind]


# --- hours and days ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeskHours:
    """When the service centre's phone line is open: weekdays (0 = Monday) and a span of Italian time."""

    days: frozenset[int]
    opens: time
    closes: time

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(ITALY)
        return local.weekday() in self.days and self.opens <= local.time() < self.closes

    def next_open(self, at: datetime) -> datetime:
        """``at`` if the desk is open then, else the next opening (as a UTC instant).

        >>> desk = DeskHours(frozenset(range(7)), time(8), time(20))
        >>> desk.next_open(datetime(2026, 3, 2, 20, 30, tzinfo=UTC)).isoformat()  # 21:30 in Rome
        '2026-03-03T07:00:00+00:00'
        """
        if self.is_open(at):
            return at
        local = at.astimezone(ITALY)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            opening = datetime.combine(day, self.opens, ITALY)
            if day.weekday() in self.days and opening >= local:
                return opening.astimezone(UTC)
        raise ValueError("the desk is never open")  # pragma: no cover - the config requires a day


@dataclass(frozen=True, slots=True)
class QuietHours:
    """When no reminder may leave, in Italian time; ``starts`` after ``ends`` spans midnight."""

    starts: time
    ends: time

    def is_quiet(self, at: datetime) -> bool:
        now = at.astimezone(ITALY).time()
        if self.starts <= self.ends:
            return self.starts <= now < self.ends
        return now >= self.starts or now < self.ends

    def next_allowed(self, at: datetime) -> datetime:
        """``at``, or the end of the quiet hours it falls in (as a UTC instant).

        >>> QuietHours(time(20), time(8)).next_allowed(datetime(2026, 3, 2, 22, 0, tzinfo=UTC)).isoformat()
        '2026-03-03T07:00:00+00:00'
        """
        if not self.is_quiet(at):
            return at
        local = at.astimezone(ITALY)
        end = datetime.combine(local.date(), self.ends, ITALY)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.ends, ITALY)
        return end.astimezone(UTC)


@lru_cache(maxsize=65_536)
def add_working_days(day: date, count: int, municipality: str | None = None) -> date:
    """The ``count``-th working day after ``day`` (Italian holidays and the patron saint's day excluded).

    >>> add_working_days(date(2026, 4, 3), 2).isoformat()  # Friday before Easter: Monday 6 April is a holiday
    '2026-04-08'
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    horizon = day + timedelta(days=7 * count + 14)
    return working_days(day + timedelta(days=1), horizon, municipality)[count - 1]


def italian_day(at: datetime) -> date:
    return at.astimezone(ITALY).date()
