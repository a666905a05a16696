"""The individual care plan (PAI): merging the patient's PDTA templates, and personalising the laid plan.

Building a plan is pure: :func:`merge_pathways` turns a patient's pathologies, level, age and sex into one
:class:`MergedPlan`; ``presa.care.calendar.lay_calendar`` lays it on working days as a :class:`CarePlan`
(FHIR: a ``CarePlan`` instantiating each PDTA, its activities as ``ServiceRequest``). Saving is a separate
step.

Merge rules:

- the union of the activities of every pathway whose conditions (age, sex, level) the patient meets;
- the same work is planned once (see ``presa.care.pdta.merge_key``), at the highest frequency any pathway asks
  for: an exam wanted twice a year by one pathway and once by another is planned twice, not three times;
- all GP visits collapse into one cadence, the most frequent;
- every activity keeps the pathways that asked for it and their clinical conditions;
- a pathology without a template gets the generic chronic follow-up, and the plan flags it for the clinician;
- activities not included by default become suggestions, unless the plan already holds the same work.

Personalisation (:func:`add_activity`, :func:`drop_activity`, :func:`move_activity`) returns a new version of
an immutable plan, with a reason and an author recorded in its change log.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache
from typing import Literal, NamedTuple

from presa.care.pdta import Kind, Provider, Sex, Template, TemplateActivity, TemplateSet, default_templates

KIND_RANK: dict[str, int] = {
    "gp_visit": 0,
    "specialist_visit": 1,
    "instrumental": 2,
    "lab": 3,
    "education": 4,
}
LEVELS = range(1, 6)


@dataclass(frozen=True, slots=True)
class PlanActivity:
    """One piece of work of the merged plan, with the pathways that asked for it."""

    key: str
    code: str | None
    kind: Kind
    discipline: str | None
    provider: Provider
    description_it: str
    description_en: str
    times_per_year: float
    precedes_visit: bool
    pathways: tuple[str, ...]
    conditions: tuple[str, ...] = ()

    @property
    def occurrences(self) -> int:
        """How many times the activity falls in a 12-month plan: an every-two-years exam falls once."""
        return max(1, math.ceil(self.times_per_year - 1e-9))

    @property
    def every_years(self) -> int:
        """1 for yearly or more frequent work, else the interval in years (check when it was last done)."""
        return 1 if self.times_per_year >= 1 else round(1 / self.times_per_year)


@dataclass(frozen=True, slots=True)
class MergedPlan:
    """The merged yearly activity set of one patient, before it is laid on a calendar."""

    pathologies: tuple[str, ...]
    level: int
    age: int
    sex: Sex
    pathways: tuple[str, ...]
    activities: tuple[PlanActivity, ...]
    suggestions: tuple[PlanActivity, ...]
    generic_follow_up: tuple[str, ...]

    @property
    def needs_clinician_review(self) -> bool:
        """True when some pathology fell back on the generic follow-up, which the clinician must complete."""
        return bool(self.generic_follow_up)


class PlannedActivity(NamedTuple):
    """One dated occurrence of an activity in the care plan."""

    id: str
    day: date
    activity: PlanActivity
    origin: Literal["pathway", "personalised"] = "pathway"


Action = Literal["add", "drop", "move"]


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One personalisation of the plan, as the change log keeps it."""

    version: int
    action: Action
    activity_id: str
    reason: str
    author: str
    at: datetime
    from_day: date | None
    to_day: date | None


@dataclass(frozen=True, slots=True)
class CarePlan:
    """A versioned PAI: the merged plan laid from ``start`` (included) to ``end`` (excluded)."""

    merged: MergedPlan
    municipality: str | None
    start: date
    end: date
    activities: tuple[PlannedActivity, ...]
    version: int = 1
    changes: tuple[PlanChange, ...] = ()

    def activity(self, activity_id: str) -> PlannedActivity:
        for planned in self.activities:
            if planned.id == activity_id:
                return planned
        raise KeyError(activity_id)


class PlanChangeError(ValueError):
    """A personalisation that cannot be applied to the plan."""


def merge_pathways(
    pathologies: Iterable[str], *, level: int, age: int, sex: Sex, templates: TemplateSet | None = None
) -> MergedPlan:
    """Merge the PDTA templates of a patient's pathologies into one yearly plan without duplicate work."""
    _check_patient(level, age, sex)
    template_set = templates or default_templates()
    wanted = tuple(sorted(set(pathologies)))
    if not wanted:
        raise ValueError("a care plan needs at least one pathology")
    # Activities change applicability only at the breakpoint ages, so the bracket's lower bound merges alike.
    bracket = bisect_right(template_set.age_breakpoints, age)
    bracket_age = template_set.age_breakpoints[bracket - 1] if bracket else 0
    pathways, activities, suggestions, generic = _merge_cached(template_set, wanted, level, bracket_age, sex)
    return MergedPlan(wanted, level, age, sex, pathways, activities, suggestions, generic)


@lru_cache(maxsize=65_536)
def _merge_cached(
    templates: TemplateSet, pathologies: tuple[str, ...], level: int, age: int, sex: Sex
) -> tuple[tuple[str, ...], tuple[PlanActivity, ...], tuple[PlanActivity, ...], tuple[str, ...]]:
    chosen, generic = _templates_for(templates, pathologies)
    planned: dict[str, _Accumulator] = {}
    offered: dict[str, _Accumulator] = {}
    for template in chosen:
        template_id = template.id
        for activity in template.activities:
            if activity.applies_to(level, age, sex):
                into = planned if activity.spec.include_by_default else offered
                into.setdefault(activity.key, _Accumulator()).take(activity, template_id)
    for key in planned.keys() & offered.keys():
        del offered[key]
    return (
        tuple(t.id for t in chosen),
        _as_plan_activities(planned),
        _as_plan_activities(offered),
        generic,
    )


def _templates_for(templates: TemplateSet, pathologies: tuple[str, ...]) -> tuple[list[Template], tuple[str, ...]]:
    """The templates a patient's pathologies call for, in template order, and the pathologies without one."""
    found = {templates.by_pathology[p].id for p in pathologies if p in templates.by_pathology}
    generic = tuple(p for p in pathologies if p not in templates.by_pathology)
    if generic:
        found.add(templates.generic.id)
    return [t for t in templates.templates if t.id in found], generic


class _Accumulator:
    """The strongest request for one piece of work, and everyone who asked for it."""

    __slots__ = ("conditions", "pathways", "precedes_visit", "strongest")

    def __init__(self) -> None:
        self.strongest: TemplateActivity | None = None
        self.pathways: list[str] = []
        self.conditions: list[str] = []
        self.precedes_visit = False

    def take(self, activity: TemplateActivity, template_id: str) -> None:
        spec = activity.spec
        if self.strongest is None or spec.times_per_year > self.strongest.spec.times_per_year:
            self.strongest = activity
        if template_id not in self.pathways:
            self.pathways.append(template_id)
        if spec.condition and spec.condition not in self.conditions:
            self.conditions.append(spec.condition)
        self.precedes_visit = self.precedes_visit or spec.precedes_visit


def _as_plan_activities(accumulated: dict[str, _Accumulator]) -> tuple[PlanActivity, ...]:
    activities = []
    for key, acc in accumulated.items():
        assert acc.strongest is not None  # an accumulator exists only once it took an activity
        activities.append(
            _plan_activity(key, acc.strongest, tuple(acc.pathways), tuple(acc.conditions), acc.precedes_visit)
        )
    activities.sort(key=lambda a: (KIND_RANK[a.kind], a.key))
    return tuple(activities)


@lru_cache(maxsize=65_536)
def _plan_activity(
    key: str,
    strongest: TemplateActivity,
    pathways: tuple[str, ...],
    conditions: tuple[str, ...],
    precedes: bool,
) -> PlanActivity:
    """One merged activity; the same request from the same pathways is one shared object across plans."""
    spec = strongest.spec
    return PlanActivity(
        key=key,
        code=spec.code,
        kind=spec.kind,
        discipline=spec.discipline,
        provider=spec.provider,
        description_it=spec.description_it,
        description_en=spec.description_en,
        times_per_year=spec.times_per_year,
        precedes_visit=precedes,
        pathways=pathways,
        conditions=conditions,
    )


def _check_patient(level: int, age: int, sex: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be 1 to 5, not {level}")
    if not 0 <= age <= 130:
        raise ValueError(f"age must be 0 to 130, not {age}")
    if sex not in ("M", "F"):
        raise ValueError(f"sex must be 'M' or 'F', not {sex!r}")


def add_activity(
    plan: CarePlan, activity: PlanActivity, day: date, *, reason: str, author: str, at: datetime
) -> CarePlan:
    """A new version of the plan with one more occurrence of ``activity`` on ``day``."""
    version = plan.version + 1
    _check_change(plan, reason, author, day)
    added = PlannedActivity(f"{activity.key}-v{version}", day, activity, "personalised")
    change = PlanChange(version, "add", added.id, reason, author, at, None, day)
    return _next_version(plan, (*plan.activities, added), change)


def drop_activity(plan: CarePlan, activity_id: str, *, reason: str, author: str, at: datetime) -> CarePlan:
    """A new version of the plan without the occurrence ``activity_id``."""
    dropped = _existing(plan, activity_id)
    _check_change(plan, reason, author, None)
    change = PlanChange(plan.version + 1, "drop", activity_id, reason, author, at, dropped.day, None)
    return _next_version(plan, tuple(p for p in plan.activities if p.id != activity_id), change)


def move_activity(plan: CarePlan, activity_id: str, day: date, *, reason: str, author: str, at: datetime) -> CarePlan:
    """A new version of the plan with the occurrence ``activity_id`` on ``day``; its id does not change."""
    moved = _existing(plan, activity_id)
    _check_change(plan, reason, author, day)
    if moved.day == day:
        raise PlanChangeError(f"activity '{activity_id}' is already on {day.isoformat()}")
    change = PlanChange(plan.version + 1, "move", activity_id, reason, author, at, moved.day, day)
    activities = tuple(p._replace(day=day) if p.id == activity_id else p for p in plan.activities)
    return _next_version(plan, activities, change)


def by_day(activities: Iterable[PlannedActivity]) -> tuple[PlannedActivity, ...]:
    """Planned activities in calendar order: by day, visits first, then by what they are."""
    return tuple(sorted(activities, key=lambda p: (p.day, KIND_RANK[p.activity.kind], p.activity.key, p.id)))


def _existing(plan: CarePlan, activity_id: str) -> PlannedActivity:
    try:
        return plan.activity(activity_id)
    except KeyError:
        raise PlanChangeError(f"no activity '{activity_id}' in version {plan.version} of the plan") from None


def _check_change(plan: CarePlan, reason: str, author: str, day: date | None) -> None:
    if not reason.strip():
        raise PlanChangeError("a personalisation needs a reason")
    if not author.strip():
        raise PlanChangeError("a personalisation needs an author")
    if day is not None and not plan.start <= day < plan.end:
        window = f"{plan.start.isoformat()} to {plan.end.isoformat()} excluded"
        raise PlanChangeError(f"{day.isoformat()} is outside the plan, from {window}")


def _next_version(plan: CarePlan, activities: tuple[PlannedActivity, ...], change: PlanChange) -> CarePlan:
    return replace(plan, activities=by_day(activities), version=change.version, changes=(*plan.changes, change))
