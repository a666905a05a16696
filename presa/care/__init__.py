"""Taking chronic patients in charge: the individual care plan (PAI) and the enrolment around it.

The modules below, and ``enrolment`` (the episode state machine) and ``pact`` (the care-pact rules), are pure: a
plan is built from its inputs and previewed; saving it is a separate step. The edge is ``store`` (the database:
models, migrations, bulk loads, audit trail) and ``service`` (the operations on it, one transaction each).

- ``pdta``: :func:`load_templates` reads and validates the templates (``presa/care/pdta/*.yaml``)
- ``plan``: :func:`merge_pathways` merges a patient's templates; :func:`add_activity`, :func:`drop_activity`
  and :func:`move_activity` personalise a laid plan into a new version
- ``calendar``: :func:`lay_calendar` lays a merged plan on working days; :func:`draft_care_plan` does both
  steps
- ``ical``: :func:`to_ical` writes a plan as RFC 5545 text
"""

from presa.care.calendar import draft_care_plan, is_working_day, lay_calendar, working_days
from presa.care.ical import to_ical
from presa.care.pdta import PdtaError, TemplateSet, load_templates
from presa.care.plan import (
    CarePlan,
    MergedPlan,
    PlanActivity,
    PlanChange,
    PlanChangeError,
    PlannedActivity,
    add_activity,
    drop_activity,
    merge_pathways,
    move_activity,
)

__all__ = [
    "CarePlan",
    "MergedPlan",
    "PdtaError",
    "PlanActivity",
    "PlanChange",
    "PlanChangeError",
    "PlannedActivity",
    "TemplateSet",
    "add_activity",
    "draft_care_plan",
    "drop_activity",
    "is_working_day",
    "lay_calendar",
    "load_templates",
    "merge_pathways",
    "move_activity",
    "to_ical",
    "working_days",
]
