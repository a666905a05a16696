"""Generating the plans of a whole population (presa/care/service/bulk.py): exactly the patients who may be
processed get one, each the same as the single-patient service would store, counted right, and never twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, update
from sqlalchemy.orm import Session

from presa.care.calendar import draft_care_plan, year_after
from presa.care.pdta import Sex
from presa.care.plan import PlannedActivity
from presa.care.service import (
    choose_gestore,
    draft_pact,
    generate_plan,
    invite,
    load_plan,
    load_run,
    open_episode,
    revoke_pact,
    sign_pact,
    transition,
)
from presa.care.service.bulk import BulkPlanReport, generate_all_plans
from presa.care.store.audit import set_origin, trail
from presa.care.store.calendars import ACTIVITY_COLUMNS, calendar_digest
from presa.care.store.models import (
    AuditEvent,
    CarePact,
    CarePlanRecord,
    Patient,
    PlanCalendar,
    PlanCalendarActivity,
    PlanStatus,
    PlanVersion,
)
from tests.carebuilder import ALL_SCOPES, AT, TODAY, CareRuns, clinical_manager, gestore

START = date(2026, 3, 9)
LATER = AT + timedelta(hours=2)

# resident id → pathologies; options of the run's resident where they differ from the builder's defaults.
PEOPLE: dict[str, tuple[str, ...]] = {
    "TWIN_BULK": ("hypertension", "diabetes_type2"),
    "TWIN_SERVICE": ("hypertension", "diabetes_type2"),
    "TWIN_TOO": ("hypertension", "diabetes_type2"),
    "TWIN_NO_PATRON": ("diabetes_type2", "hypertension"),
    "MAN": ("copd", "heart_failure"),
    "GENERIC": ("rare_condition", "hypertension"),
    "RESIGNED": ("copd",),
    "REVOKED": ("hypertension",),
    "WITHDRAWN": ("hypertension",),
    "UNSIGNED": ("copd",),
    "INVITED": ("copd",),
    "OTHER_ATS": ("copd",),
    "TOO_OLD": ("copd",),
}
OPTIONS: dict[str, dict[str, Any]] = {"MAN": {"sex": "M", "age": 58}, "OTHER_ATS": {"ats": "322"}}
TAKEN_IN_CHARGE: tuple[str, ...] = ("TWIN_BULK", "TWIN_SERVICE", "TWIN_TOO", "TWIN_NO_PATRON", "MAN", "GENERIC")
TAKEN_IN_CHARGE += ("RESIGNED", "REVOKED", "WITHDRAWN", "TOO_OLD")
PROCESSABLE = {"TWIN_BULK", "TWIN_TOO", "TWIN_NO_PATRON", "MAN", "GENERIC", "RESIGNED", "TOO_OLD"}
"""TWIN_SERVICE is processable too, but already has a plan for the year (made by generate_plan)."""


@dataclass
class Population:
    ids: dict[str, int]
    pacts: dict[str, CarePact]


@pytest.fixture
def population(db: Session, tmp_path: Path) -> Population:
    runs = CareRuns(tmp_path)
    load_run(db, runs.write(PEOPLE, options=OPTIONS), author="loader", at=AT, today=TODAY)
    ids = {resident_id: patient_id for resident_id, patient_id in db.execute(select(Patient.resident_id, Patient.id))}
    # Not in the run's options: a municipality without a known patron saint's day, and an impossible age.
    db.execute(update(Patient).where(Patient.id == ids["TWIN_NO_PATRON"]).values(municipality="015999"))
    db.execute(update(Patient).where(Patient.id == ids["TOO_OLD"]).values(birth_date=date(1880, 1, 1)))
    db.expire_all()
    coop = gestore(db)
    gp = clinical_manager(db, coop)
    invite(db, "321", author="ats-operator", at=AT, today=TODAY)
    pacts: dict[str, CarePact] = {}
    for resident_id in (*TAKEN_IN_CHARGE, "UNSIGNED"):
        episode = open_episode(db, ids[resident_id])
        assert episode is not None
        choose_gestore(db, episode.id, coop.id, clinical_manager_id=gp.id, author="op", at=AT, today=TODAY)
        pacts[resident_id] = draft_pact(db, episode.id, scopes=ALL_SCOPES, author="op", at=AT)
        if resident_id != "UNSIGNED":
            sign(db, pacts[resident_id], AT)
    for resident_id in ("RESIGNED", "REVOKED"):
        revoke_pact(db, pacts[resident_id].id, reason="consent withdrawn", author="op", at=AT + timedelta(hours=1))
    episode = open_episode(db, ids["RESIGNED"])
    assert episode is not None
    pacts["RESIGNED"] = draft_pact(db, episode.id, scopes=ALL_SCOPES, author="op", at=LATER)
    sign(db, pacts["RESIGNED"], LATER)
    withdrawn = open_episode(db, ids["WITHDRAWN"])
    assert withdrawn is not None
    transition(db, withdrawn.id, "withdrawn", reason="moved abroad", author="op", at=AT, today=TODAY)
    generate_plan(db, ids["TWIN_SERVICE"], start=START, author="dr.rossi", at=AT)
    return Population(ids, pacts)


def sign(db: Session, pact: CarePact, at: Any) -> None:
    for role, signer in (("patient", "Anna Bianchi"), ("clinical_manager", "Maria Rossi")):
        sign_pact(db, pact.id, role=role, signer=signer, signed_at=at, author="op", at=at, today=TODAY)


def plans_by_resident(db: Session) -> dict[str, CarePlanRecord]:
    query = select(Patient.resident_id, CarePlanRecord).join(Patient, Patient.id == CarePlanRecord.patient_id)
    return {resident_id: plan for resident_id, plan in db.execute(query)}


def activity_rows(db: Session, plan: CarePlanRecord) -> list[tuple[Any, ...]]:
    """Every stored column of the plan's activities but the calendar's id and the position, in the plan's order."""
    columns = [getattr(PlanCalendarActivity, c) for c in ACTIVITY_COLUMNS if c not in ("calendar_id", "position")]
    query = (
        select(*columns)
        .join(PlanVersion, PlanVersion.calendar_id == PlanCalendarActivity.calendar_id)
        .where(PlanVersion.plan_id == plan.id)
        .order_by(PlanCalendarActivity.position)
    )
    return [tuple(r) for r in db.execute(query)]


def pure_activities(db: Session, patient_id: int, start: date = START) -> tuple[PlannedActivity, ...]:
    patient = db.get(Patient, patient_id)
    assert patient is not None
    sex: Sex = "M" if patient.sex == "M" else "F"
    plan = draft_care_plan(
        patient.pathologies,
        level=patient.level,
        age=patient.age_on(start),
        sex=sex,
        start=start,
        municipality=patient.municipality,
    )
    return plan.activities


def test_plans_for_exactly_the_processable_patients(db: Session, population: Population) -> None:
    report = generate_all_plans(db, author="ats-batch", start=START, at=LATER)

    plans = plans_by_resident(db)
    bulk = {r for r, p in plans.items() if p.created_by == "ats-batch"}
    assert bulk == PROCESSABLE - {"TOO_OLD"}
    assert set(plans) == bulk | {"TWIN_SERVICE"}  # the revoked, withdrawn, unsigned, invited, uninvited: none
    assert [s.resident_id for s in report.skipped] == ["TOO_OLD"]
    assert report.skipped[0].reason == "age must be 0 to 130, not 146"
    for resident_id in bulk:
        plan = plans[resident_id]
        assert (plan.status, plan.current_version, plan.start_on, plan.end_on) == (
            PlanStatus.DRAFT,
            1,
            START,
            year_after(START),
        )
        assert plan.pact_id == population.pacts[resident_id].id  # RESIGNED: the version signed after the revocation
        assert load_plan(db, plan.id).activities == pure_activities(db, population.ids[resident_id])
    assert plans["GENERIC"].generic_follow_up == ["rare_condition"]
    assert plans["MAN"].sex == "M" and plans["MAN"].age == 58


def test_each_plan_is_what_the_single_patient_service_stores(db: Session, population: Population) -> None:
    generate_all_plans(db, author="dr.rossi", start=START, at=AT)

    plans = plans_by_resident(db)
    bulk, service = plans["TWIN_BULK"], plans["TWIN_SERVICE"]
    fields: tuple[str, ...] = ("status", "current_version", "start_on", "end_on", "municipality", "level", "age", "sex")
    fields += ("pathologies", "pathways", "generic_follow_up", "templates_digest", "created_at", "created_by")
    assert [getattr(bulk, f) for f in fields] == [getattr(service, f) for f in fields]
    rows = activity_rows(db, bulk)
    assert rows == activity_rows(db, service) and len(rows) > 20
    assert load_plan(db, bulk.id) == load_plan(db, service.id)
    # Same pathologies in another order, but no patron saint's day: its own calendar, still the pure core's.
    no_patron = load_plan(db, plans["TWIN_NO_PATRON"].id)
    assert no_patron.merged.activities == load_plan(db, service.id).merged.activities
    assert no_patron.activities == pure_activities(db, population.ids["TWIN_NO_PATRON"])
    assert no_patron.activities != load_plan(db, service.id).activities  # 7 December is a working day there

    [version] = db.scalars(select(PlanVersion).where(PlanVersion.plan_id == bulk.id)).all()
    assert (version.version, version.author, version.created_at, version.action) == (1, "dr.rossi", AT, None)
    [audit] = [a for a in trail(db, patient_id=population.ids["TWIN_BULK"]) if a.entity == "care_plan"]
    assert (audit.action, audit.actor, audit.entity_id, audit.at) == ("generate", "dr.rossi", str(bulk.id), AT)
    assert audit.detail == {"start": START.isoformat(), "activities": len(rows), "pathways": bulk.pathways}


def test_counts_are_reported_and_a_second_run_generates_nothing(db: Session, population: Population) -> None:
    set_origin(db, "10.1.2.3")  # as the API does for a request's session
    progress: list[BulkPlanReport] = []
    report = generate_all_plans(
        db, author="ats-batch", start=START, at=LATER, chunk_size=2, on_progress=progress.append
    )

    stored = db.scalar(select(func.count()).select_from(PlanCalendarActivity))
    planned = [pure_activities(db, population.ids[r]) for r in PROCESSABLE - {"TOO_OLD"}]
    expected = sum(len(activities) for activities in planned)
    assert (report.plans, report.activities, report.start) == (6, expected, START)
    # Each distinct calendar is stored once, whichever plans share it (generate_plan's included).
    calendars = {calendar_digest(a): len(a) for a in [*planned, pure_activities(db, population.ids["TWIN_SERVICE"])]}
    assert len(calendars) < len(planned) + 1
    assert db.scalar(select(func.count()).select_from(PlanCalendar)) == len(calendars)
    assert stored == sum(calendars.values())
    assert report.chunks == 4 and report.seconds > 0  # 7 candidates (TOO_OLD among them) in chunks of 2
    assert report.distinct_plans == 5  # TWIN_BULK and TWIN_TOO share one calendar; TOO_OLD's merge is refused
    assert [p.chunks for p in progress] == [1, 2, 3, 4]
    assert [p.plans for p in progress] == sorted(p.plans for p in progress) and progress[0].plans >= 1
    assert (progress[-1].plans, progress[-1].activities) == (report.plans, report.activities)
    generate_audits = db.scalars(select(AuditEvent).where(AuditEvent.action == "generate")).all()
    assert sorted(str(a.remote_addr) for a in generate_audits) == ["10.1.2.3"] * 6 + ["None"]  # and generate_plan's
    [summary] = db.scalars(select(AuditEvent).where(AuditEvent.action == "generate_all")).all()
    assert summary.remote_addr == "10.1.2.3"
    assert summary.detail == {"start": START.isoformat(), "plans": 6, "activities": expected, "skipped": 1}

    again = generate_all_plans(db, author="ats-batch", start=START, at=LATER)
    assert (again.plans, again.activities, again.chunks, [s.resident_id for s in again.skipped]) == (
        0,
        0,
        1,
        ["TOO_OLD"],
    )
    assert db.scalar(select(func.count()).select_from(CarePlanRecord)) == 7
    assert db.scalar(select(func.count()).select_from(PlanCalendarActivity)) == stored
    # A window that overlaps this year's plans is refused too; the next year's is free.
    assert generate_all_plans(db, author="ats-batch", start=START + timedelta(days=200), at=LATER).plans == 0
    assert generate_all_plans(db, author="ats-batch", start=year_after(START), at=LATER).plans == 7


def test_without_the_cache_every_plan_is_drafted_and_stored_alike(db: Session, population: Population) -> None:
    report = generate_all_plans(db, author="ats-batch", start=START, at=LATER, cache=False)
    assert (report.plans, report.distinct_plans) == (6, 6)
    plans = plans_by_resident(db)
    assert activity_rows(db, plans["TWIN_BULK"]) == activity_rows(db, plans["TWIN_SERVICE"])


def test_the_default_start_is_today_in_italy_and_an_author_is_needed(db: Session, population: Population) -> None:
    with pytest.raises(ValueError, match="needs an author"):
        generate_all_plans(db, author=" ")
    at = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # already 3 March in Rome
    report = generate_all_plans(db, author="ats-batch", at=at)
    assert report.start == date(2026, 3, 3) and report.plans == 6  # TWIN_SERVICE's plan overlaps: not again
    assert {p.start_on for p in plans_by_resident(db).values() if p.created_by == "ats-batch"} == {report.start}


def test_a_revoked_pact_gets_no_plan_until_a_new_version_is_signed(db: Session, population: Population) -> None:
    revoke_pact(db, population.pacts["MAN"].id, reason="consent withdrawn", author="op", at=LATER)
    assert "MAN" not in plans_by_resident(db)
    generate_all_plans(db, author="ats-batch", start=START, at=LATER)
    assert "MAN" not in plans_by_resident(db)
    episode = open_episode(db, population.ids["MAN"])
    assert episode is not None
    later = LATER + timedelta(hours=1)
    sign(db, draft_pact(db, episode.id, scopes=ALL_SCOPES, author="op", at=later), later)
    report = generate_all_plans(db, author="ats-batch", start=START, at=later)
    assert report.plans == 1 and plans_by_resident(db)["MAN"].created_at == later


def test_a_large_batch_checks_its_references_once_and_stores_the_same_plans(
    db: Session, population: Population
) -> None:
    keys_before = foreign_keys(db)
    report = generate_all_plans(db, author="ats-batch", start=START, at=LATER, references_checked_once_from=1)

    assert report.plans == 6
    for resident_id, plan in plans_by_resident(db).items():
        assert load_plan(db, plan.id).activities == pure_activities(db, population.ids[resident_id])
    assert foreign_keys(db) == keys_before  # dropped for the load on PostgreSQL, then added back and checked


def test_the_references_are_back_when_a_large_batch_fails(db: Session, population: Population) -> None:
    keys_before = foreign_keys(db)

    def fail(_: BulkPlanReport) -> None:
        raise RuntimeError("the operator pressed Ctrl-C")

    with pytest.raises(RuntimeError, match="Ctrl-C"):
        generate_all_plans(db, author="ats-batch", start=START, references_checked_once_from=1, on_progress=fail)
    assert foreign_keys(db) == keys_before


def foreign_keys(db: Session) -> dict[str, list[str]]:
    inspector = inspect(db.connection())
    tables = ("care_plans", "care_plan_versions", "plan_calendar_activities")
    keys = {t: sorted(str(fk["name"]) for fk in inspector.get_foreign_keys(t)) for t in tables}
    assert all(keys.values())
    return keys
