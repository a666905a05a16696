"""Reconciliation: later months' flows, through the real loader, turn planned PAI activities into done on time,
done late or missed; the same month twice changes nothing; a person's "done" stands; revoked pacts are left alone."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Date, Float, func, select
from sqlalchemy import literal as sa_literal
from sqlalchemy.orm import Session

from presa.care.service import CareError, revoke_pact
from presa.care.service.plans import move_in_plan
from presa.followup.rules import activity_window
from presa.followup.service.reconcile import (
    mark_done,
    outcomes_of,
    recompute_outcomes,
    reconcile_flows,
    window_closes_sql,
)
from presa.followup.store import ActivityOutcome, CareTransition, Execution, ItemKind, Outcome, OutcomeSource, WorkItem
from tests.carebuilder import CareRuns
from tests.followupbuilder import LATER, Flows, Planned, planned


@pytest.fixture
def runs(tmp_path: Path) -> CareRuns:
    return CareRuns(tmp_path)


@pytest.fixture
def patient(db: Session, runs: CareRuns) -> Planned:
    return planned(db, runs)


def summer(p: Planned) -> Flows:
    """Spring and summer 2026 of patient R1, with one malformed line and one resident presa does not follow."""
    return (
        Flows()
        .resident("R1")
        .resident("OTHER")
        .service("R1", p.activity("90.27.1-01") + timedelta(days=4), "90.27.1")  # on time
        .service("R1", p.activity("89.52-01") + timedelta(days=45), "89.52")  # late: 30 days of tolerance
        .service("R1", p.activity("89.01.3.cardiologia-01") + timedelta(days=2), "89.01")  # DM 1996 stem
        .service("R1", date(2026, 6, 2), "90.99.9")  # not in the plan
        .service("OTHER", p.activity("90.28.1-01"), "90.28.1")  # someone else's
        .raw("outpatient", "R1;2026-06-03;XX;08;P1")  # malformed code: rejected by the loader
        .discharge("R1", date(2026, 4, 3), admitted=date(2026, 3, 30))
        .drug("R1", date(2026, 8, 31))  # the flows cover up to the end of August
    )


def test_planned_activities_become_done_on_time_late_or_missed(db: Session, patient: Planned, tmp_path: Path) -> None:
    result = reconcile_flows(db, summer(patient).write(tmp_path / "summer"), author="loader", at=LATER)

    assert not result.already_loaded
    assert (result.covered_until, result.rejected) == (date(2026, 8, 31), 1)
    assert result.counts["outpatient"]["rejected"] == 1 and result.counts["outpatient"]["accepted"] == 5
    assert result.executions == 5  # four outpatient services and the discharge of R1; OTHER is nobody's patient
    outcomes = outcomes_of(db, patient.plan.id)
    by = {k: (o.outcome, o.done_on) for k, o in outcomes.items()}
    assert by["90.27.1-01"] == (Outcome.DONE_ON_TIME, patient.activity("90.27.1-01") + timedelta(days=4))
    assert by["89.52-01"] == (Outcome.DONE_LATE, patient.activity("89.52-01") + timedelta(days=45))
    assert by["89.01.3.cardiologia-01"][0] is Outcome.DONE_ON_TIME
    # Twice a year: the May occurrence's window (±91 days) closed on 24 August, within the flows: missed.
    assert by["90.28.1-01"] == (Outcome.MISSED, None)
    # GP visits are not in the flows: never missed by them. Later activities are still planned (no row).
    assert "gp_visit-01" not in outcomes and "90.28.1-02" not in outcomes
    assert all(o.source is OutcomeSource.FLOWS for o in outcomes.values())
    assert result.outcome_changes == len(outcomes) == 4
    missed = outcomes["90.28.1-01"]
    assert (missed.window_from, missed.window_until) == (date(2026, 2, 23), date(2026, 8, 24))


def test_the_same_month_twice_changes_nothing(db: Session, patient: Planned, tmp_path: Path) -> None:
    flows = summer(patient)
    first = reconcile_flows(db, flows.write(tmp_path / "a"), author="loader", at=LATER)
    before = _snapshot(db)

    again = reconcile_flows(db, flows.write(tmp_path / "a"), author="loader", at=LATER)
    renamed = reconcile_flows(db, flows.write(tmp_path / "b", suffix="2026_08"), author="loader", at=LATER)

    assert again.already_loaded and renamed.already_loaded and again.load_id == renamed.load_id == first.load_id
    assert (again.executions, again.outcome_changes, again.transitions) == (0, 0, 0)
    assert _snapshot(db) == before


def test_a_later_month_adds_only_what_is_new(db: Session, patient: Planned, tmp_path: Path) -> None:
    reconcile_flows(db, summer(patient).write(tmp_path / "summer"), author="loader", at=LATER)
    before = _snapshot(db)
    autumn = summer(patient).service("R1", patient.activity("90.28.1-02") + timedelta(days=1), "90.28.1")
    autumn.drug("R1", date(2026, 11, 30))

    result = reconcile_flows(
        db, autumn.write(tmp_path / "autumn"), author="loader", at=LATER.replace(month=12), max_date=date(2026, 12, 1)
    )

    assert (result.executions, result.transitions, result.outcome_changes) == (1, 0, 1)
    after = _snapshot(db)
    assert after["executions"] == before["executions"] + 1
    assert after["outcomes"] - before["outcomes"] == {("90.28.1-02", "done_on_time")}


def test_a_manual_done_stands_and_the_flows_do_not_overwrite_it(db: Session, patient: Planned, tmp_path: Path) -> None:
    gp_day = patient.activity("gp_visit-01")
    manual = mark_done(
        db, patient.plan.id, "gp_visit-01", done_on=gp_day + timedelta(days=40), note="seen at home", author="cm",
        at=LATER,
    )  # fmt: skip
    assert (manual.outcome, manual.source, manual.note) == (Outcome.DONE_LATE, OutcomeSource.MANUAL, "seen at home")
    typed = mark_done(
        db, patient.plan.id, "90.28.1-01", done_on=date(2026, 5, 20), note="result brought by the patient",
        author="cm", at=LATER,
    )  # fmt: skip
    assert typed.outcome is Outcome.DONE_ON_TIME

    reconcile_flows(db, summer(patient).write(tmp_path / "summer"), author="loader", at=LATER)

    outcomes = outcomes_of(db, patient.plan.id)
    assert outcomes["90.28.1-01"].source is OutcomeSource.MANUAL  # the flows would have said missed
    assert outcomes["gp_visit-01"].done_on == gp_day + timedelta(days=40)
    with pytest.raises(CareError, match="no activity 'nope'"):
        mark_done(db, patient.plan.id, "nope", done_on=date(2026, 5, 1), note="x", author="cm", at=LATER)
    with pytest.raises(CareError, match="note must not be empty"):
        mark_done(db, patient.plan.id, "gp_visit-02", done_on=date(2026, 5, 1), note=" ", author="cm", at=LATER)
    with pytest.raises(CareError, match="in the future"):
        mark_done(db, patient.plan.id, "gp_visit-02", done_on=date(2026, 9, 5), note="x", author="cm", at=LATER)


def test_a_discharge_in_the_flows_opens_a_follow_up_within_two_working_days(
    db: Session, patient: Planned, tmp_path: Path
) -> None:
    result = reconcile_flows(db, summer(patient).write(tmp_path / "summer"), author="loader", at=LATER)

    assert result.transitions == 1
    [transition] = db.scalars(select(CareTransition)).all()
    follow_up = db.get(WorkItem, transition.follow_up_item_id)
    review = db.get(WorkItem, transition.review_item_id)
    assert follow_up is not None and review is not None
    # Friday 3 April 2026; Easter Monday (6 April) is a holiday: the second working day is Wednesday 8 April.
    assert (follow_up.kind, follow_up.due_on) == (ItemKind.POST_DISCHARGE, date(2026, 4, 8))
    assert (review.kind, review.owner_id) == (ItemKind.PAI_REVIEW, patient.care.manager.id)
    assert (transition.source, transition.event_on) == ("flows", date(2026, 4, 3))


def test_a_revoked_pact_stops_the_reconciliation(db: Session, patient: Planned, tmp_path: Path) -> None:
    revoke_pact(db, patient.care.pact.id, reason="the patient withdrew consent", author="operator", at=LATER)

    result = reconcile_flows(db, summer(patient).write(tmp_path / "summer"), author="loader", at=LATER)

    assert (result.executions, result.outcome_changes, result.transitions) == (0, 0, 0)
    assert db.scalar(select(func.count()).select_from(Execution)) == 0
    with pytest.raises(CareError, match="revoked"):
        mark_done(db, patient.plan.id, "gp_visit-01", done_on=date(2026, 6, 9), note="x", author="cm", at=LATER)


def _snapshot(db: Session) -> dict[str, object]:
    return {
        "executions": db.scalar(select(func.count()).select_from(Execution)),
        "outcomes": {(o.activity_id, o.outcome.value) for o in db.scalars(select(ActivityOutcome))},
        "rows": sorted(
            (o.id, o.activity_id, o.outcome.value, o.done_on, o.recorded_at)
            for o in db.scalars(select(ActivityOutcome))
        ),
        "items": db.scalar(select(func.count()).select_from(WorkItem)),
        "transitions": db.scalar(select(func.count()).select_from(CareTransition)),
    }


def test_the_window_in_sql_agrees_with_the_rule_in_python(db: Session, backend: str) -> None:
    cases = [(date(2026, 3, 9), t) for t in (0.25, 0.5, 1, 1.5, 2, 2.0000001, 3, 4, 6, 12, 26, 52, 365)]
    cases += [(date(2024, 2, 28), 1), (date(2026, 12, 31), 4)]
    closes = db.execute(
        select(*(window_closes_sql(sa_literal(d, Date), sa_literal(t, Float), backend) for d, t in cases))
    ).one()
    assert [date.fromisoformat(str(c)) for c in closes] == [activity_window(d, t).closes for d, t in cases]


def test_later_months_give_what_a_full_recomputation_gives(db: Session, patient: Planned, tmp_path: Path) -> None:
    """Each load recomputes only the groups it touches; a person's "done" and a moved activity are caught up
    with: after every step, recomputing everything of the patient changes nothing."""
    p, pid = patient, patient.care.patient.id
    first = summer(p)
    reconcile_flows(db, first.write(tmp_path / "one"), author="loader", at=LATER)
    assert recompute_outcomes(db, [pid], at=LATER) == 0
    # A person says the HbA1c was done: the service the flows had matched to it is free for the second one.
    mark_done(db, p.plan.id, "90.27.1-01", done_on=p.activity("90.27.1-01"), note="seen", author="cm", at=LATER)
    move_in_plan(db, p.plan.id, activity_id="90.27.1-02", day=p.activity("90.27.1-01") + timedelta(days=60),
                 reason="earlier", author="dr.rossi", at=LATER)  # fmt: skip
    second = first.service("R1", date(2026, 10, 1), "89.52").drug("R1", date(2026, 11, 30))
    result = reconcile_flows(
        db, second.write(tmp_path / "two"), author="loader", at=LATER.replace(month=12), max_date=date(2026, 12, 1)
    )
    assert result.executions == 1 and result.outcome_changes >= 1
    outcomes = outcomes_of(db, p.plan.id)
    assert outcomes["90.27.1-02"].done_on == p.activity("90.27.1-01") + timedelta(days=4)  # the freed service
    assert recompute_outcomes(db, [pid], at=LATER.replace(month=12)) == 0
