"""The PAI in the store: generated from the pure core, personalised version by version, activated, renewed, and
refused once the care pact is revoked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from presa.care.calendar import draft_care_plan, year_after
from presa.care.enrolment import EpisodeState
from presa.care.plan import CarePlan
from presa.care.service import (
    CareError,
    ProcessingRefusedError,
    activate_plan,
    add_to_plan,
    drop_from_plan,
    generate_plan,
    history,
    load_plan,
    load_run,
    move_in_plan,
    revoke_pact,
    transition,
)
from presa.care.service.plans import offered_activities, plan_versions, plans_of
from presa.care.store import downgrade, make_engine, upgrade
from presa.care.store.audit import trail
from presa.care.store.models import (
    CarePlanRecord,
    Patient,
    PlanCalendar,
    PlanCalendarActivity,
    PlanStatus,
    PlanVersion,
)
from tests.carebuilder import AT, TODAY, CareRuns, Enrolled, enrolled, enrolled_together

START = date(2026, 3, 9)
PATHOLOGIES = ("hypertension", "diabetes_type2")


@pytest.fixture
def runs(tmp_path: Path) -> CareRuns:
    return CareRuns(tmp_path)


@pytest.fixture
def care(db: Session, runs: CareRuns) -> Enrolled:
    return enrolled(db, runs, pathologies=PATHOLOGIES)


def test_the_stored_plan_is_the_pure_plan(db: Session, care: Enrolled) -> None:
    stored = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    pure = draft_care_plan(PATHOLOGIES, level=2, age=70, sex="F", start=START, municipality="015146")

    assert (stored.status, stored.current_version, stored.start_on, stored.end_on) == (
        PlanStatus.DRAFT,
        1,
        START,
        year_after(START),
    )
    assert (stored.level, stored.age, stored.sex, stored.pact_id) == (2, 70, "F", care.pact.id)
    assert stored.pathways == ["diabetes_type2", "hypertension"] and stored.generic_follow_up == []
    loaded = load_plan(db, stored.id)
    assert loaded.activities == pure.activities
    assert (loaded.start, loaded.end, loaded.municipality, loaded.version, loaded.changes) == (
        pure.start,
        pure.end,
        pure.municipality,
        1,
        (),
    )
    assert loaded.merged.activities == pure.merged.activities
    assert loaded.merged.pathways == pure.merged.pathways
    # Every activity keeps the pathways that asked for it; work both pathways want is planned once.
    both = {p.activity.key for p in loaded.activities if p.activity.pathways == ("diabetes_type2", "hypertension")}
    assert "gp_visit" in both and len(both) > 3
    assert len({p.activity.key for p in loaded.activities}) == len(pure.merged.activities)
    rows = db.scalar(select(func.count()).select_from(PlanCalendarActivity))
    assert rows == len(pure.activities) > 20
    [audit] = [a for a in trail(db, patient_id=care.patient.id) if a.entity == "care_plan"]
    assert (audit.action, audit.actor, audit.detail["activities"]) == ("generate", "dr.rossi", len(pure.activities))  # type: ignore[index]


def test_a_pathology_without_a_template_gets_the_generic_follow_up_flagged(db: Session, runs: CareRuns) -> None:
    care = enrolled(db, runs, pathologies=("rare_condition", "hypertension"))
    stored = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    assert stored.generic_follow_up == ["rare_condition"]
    assert stored.pathways == ["generic_chronic_follow_up", "hypertension"]
    assert load_plan(db, stored.id).merged.needs_clinician_review


def test_personalising_makes_versions_with_author_and_reason(db: Session, care: Enrolled) -> None:
    stored = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    v1 = load_plan(db, stored.id)
    visit = next(p for p in v1.activities if p.activity.kind == "gp_visit")
    exam = next(p for p in v1.activities if p.activity.kind == "lab")
    later = AT + timedelta(hours=1)

    moved_to = visit.day + timedelta(days=7)
    move_in_plan(db, stored.id, activity_id=visit.id, day=moved_to, reason="patient away", author="dr.rossi", at=later)
    drop_from_plan(
        db, stored.id, activity_id=exam.id, reason="done last month elsewhere", author="dr.bianchi", at=later
    )
    suggestion = next(iter(set(offered_activities(db, stored.id)) - {p.activity.key for p in v1.activities}))
    add_day = START + timedelta(days=30)
    add_to_plan(
        db, stored.id, activity_key=suggestion, day=add_day, reason="clinical judgement", author="dr.rossi", at=later
    )

    latest = load_plan(db, stored.id)
    assert latest.version == 4 and stored.current_version == 4
    assert [(c.version, c.action, c.activity_id, c.author, c.reason) for c in latest.changes] == [
        (2, "move", visit.id, "dr.rossi", "patient away"),
        (3, "drop", exam.id, "dr.bianchi", "done last month elsewhere"),
        (4, "add", f"{suggestion}-v4", "dr.rossi", "clinical judgement"),
    ]
    assert latest.changes[0].from_day == visit.day and latest.changes[0].to_day == moved_to
    assert latest.activity(visit.id).day == moved_to
    assert exam.id not in {p.id for p in latest.activities}
    added = latest.activity(f"{suggestion}-v4")
    assert (added.day, added.origin) == (add_day, "personalised")
    assert len(latest.activities) == len(v1.activities)  # one dropped, one added
    assert load_plan(db, stored.id, version=1).activities == v1.activities  # earlier versions stay as they were
    assert [(v.version, v.author) for v in plan_versions(db, stored.id)] == [
        (1, "dr.rossi"),
        (2, "dr.rossi"),
        (3, "dr.bianchi"),
        (4, "dr.rossi"),
    ]
    actions = [a.action for a in trail(db, patient_id=care.patient.id) if a.entity == "care_plan"]
    assert actions == ["generate", "personalise_move", "personalise_drop", "personalise_add"]


def test_personalisations_that_make_no_sense_are_refused_and_write_nothing(db: Session, care: Enrolled) -> None:
    stored = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    first = load_plan(db, stored.id).activities[0]
    with pytest.raises(CareError, match=r"2027-03-09 is outside the plan, from 2026-03-09 to 2027-03-09 excluded"):
        move_in_plan(db, stored.id, activity_id=first.id, day=year_after(START), reason="r", author="a", at=AT)
    with pytest.raises(CareError, match="no activity 'nothing-01' in version 1 of the plan"):
        drop_from_plan(db, stored.id, activity_id="nothing-01", reason="r", author="a", at=AT)
    with pytest.raises(CareError, match="a personalisation needs a reason"):
        drop_from_plan(db, stored.id, activity_id=first.id, reason=" ", author="a", at=AT)
    with pytest.raises(CareError, match=r"'99.99' is neither in care plan .* the activities offered are: "):
        add_to_plan(db, stored.id, activity_key="99.99", day=START, reason="r", author="a", at=AT)
    with pytest.raises(CareError, match="no care plan 424242"):
        load_plan(db, 424242)
    with pytest.raises(CareError, match="has no version 7"):
        load_plan(db, stored.id, version=7)
    assert [v.version for v in plan_versions(db, stored.id)] == [1]


def test_activating_the_plan_activates_the_episode_and_renewal_completes_last_year(db: Session, care: Enrolled) -> None:
    first = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    with pytest.raises(CareError, match=r"care plan \d+ \(draft, 2026-03-09 to 2027-03-09\) already covers part"):
        generate_plan(db, care.patient.id, start=START + timedelta(days=100), author="dr.rossi", at=AT)
    activate_plan(db, first.id, author="dr.rossi", at=AT, today=TODAY)
    assert (first.status, first.activated_by) == (PlanStatus.ACTIVE, "dr.rossi")
    assert care.episode.state is EpisodeState.PAI_ACTIVE
    assert history(db, care.episode.id)[-1].reason == f"care plan {first.id} v1 activated"
    with pytest.raises(CareError, match="is active: only a draft can be activated"):
        activate_plan(db, first.id, author="dr.rossi", at=AT, today=TODAY)

    # Personalising the active plan is allowed and versions it.
    activity = load_plan(db, first.id).activities[-1]
    drop_from_plan(db, first.id, activity_id=activity.id, reason="not tolerated", author="dr.rossi", at=AT)
    assert first.status is PlanStatus.ACTIVE and first.current_version == 2

    renewal = generate_plan(db, care.patient.id, start=first.end_on, author="dr.rossi", at=AT)
    activate_plan(db, renewal.id, author="dr.rossi", at=AT, today=TODAY)
    assert [(p.id, p.status) for p in plans_of(db, care.patient.id)] == [
        (first.id, PlanStatus.COMPLETED),
        (renewal.id, PlanStatus.ACTIVE),
    ]
    with pytest.raises(CareError, match="is completed: personalise the current year's plan"):
        drop_from_plan(db, first.id, activity_id=activity.id, reason="r", author="a", at=AT)
    assert care.episode.state is EpisodeState.PAI_ACTIVE


def test_a_suspended_episode_activates_no_plan_until_resumed(db: Session, care: Enrolled) -> None:
    first = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    activate_plan(db, first.id, author="dr.rossi", at=AT, today=TODAY)
    transition(db, care.episode.id, "suspended", reason="long hospital stay", author="cm", at=AT, today=TODAY)
    renewal = generate_plan(db, care.patient.id, start=first.end_on, author="dr.rossi", at=AT)
    with pytest.raises(CareError, match="is suspended: resume it before activating a plan"):
        activate_plan(db, renewal.id, author="dr.rossi", at=AT, today=TODAY)
    transition(db, care.episode.id, "pai_active", reason="discharged home", author="cm", at=AT, today=TODAY)
    activate_plan(db, renewal.id, author="dr.rossi", at=AT, today=TODAY)
    assert [e.to_state for e in history(db, care.episode.id)][-3:] == [
        EpisodeState.PAI_ACTIVE,
        EpisodeState.SUSPENDED,
        EpisodeState.PAI_ACTIVE,
    ]


def test_no_plan_before_the_pact_is_signed(db: Session, runs: CareRuns) -> None:
    load_run(db, runs.write({"EARLY": ["copd"]}), author="loader", at=AT, today=TODAY)
    patient = db.scalars(select(Patient).where(Patient.resident_id == "EARLY")).one()
    with pytest.raises(ProcessingRefusedError, match="patient EARLY has no signed care pact"):
        generate_plan(db, patient.id, start=START, author="dr.rossi", at=AT)


def test_a_revoked_pact_refuses_new_plans_versions_and_activation(db: Session, care: Enrolled) -> None:
    stored = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    some = load_plan(db, stored.id).activities[0]
    revoke_pact(db, care.pact.id, reason="consent withdrawn", author="op", at=AT + timedelta(hours=1))
    refusal = r"the care pact v1 of patient R1 was revoked on 2026-03-02 by op \(consent withdrawn\): no further"

    with pytest.raises(ProcessingRefusedError, match=refusal):
        generate_plan(db, care.patient.id, start=year_after(START), author="dr.rossi", at=AT)
    with pytest.raises(ProcessingRefusedError, match=refusal):
        drop_from_plan(db, stored.id, activity_id=some.id, reason="r", author="dr.rossi", at=AT)
    with pytest.raises(ProcessingRefusedError, match=refusal):
        move_in_plan(db, stored.id, activity_id=some.id, day=some.day + timedelta(1), reason="r", author="a", at=AT)
    with pytest.raises(ProcessingRefusedError, match=refusal):
        activate_plan(db, stored.id, author="dr.rossi", at=AT, today=TODAY)

    assert db.scalar(select(func.count()).select_from(CarePlanRecord)) == 1
    assert db.scalar(select(func.count()).select_from(PlanVersion)) == 1
    assert stored.status is PlanStatus.DRAFT and care.episode.state is EpisodeState.PACT_SIGNED


def test_migration_0012_shares_the_stored_versions_calendars_and_gives_them_back(
    empty_database: str, tmp_path: Path
) -> None:
    """Versions stored before 0012 (one row per activity per version) get calendars, shared where identical; the
    downgrade writes every version's activities back; each plan reads the same across both."""
    engine = make_engine(empty_database)
    try:
        upgrade(engine)
        runs = CareRuns(tmp_path)
        with Session(engine) as db, db.begin():
            first, second, third = enrolled_together(db, runs, dict.fromkeys(("R1", "R2", "R3"), PATHOLOGIES))
            later_patient = third.patient.id
            plans = [generate_plan(db, c.patient.id, start=START, author="dr.rossi", at=AT).id for c in (first, second)]
            moved = load_plan(db, plans[0]).activities[3]
            later = AT + timedelta(hours=1)
            move_in_plan(
                db,
                plans[0],
                activity_id=moved.id,
                day=moved.day + timedelta(days=7),
                reason="ferie",
                author="dr.rossi",
                at=later,
            )
            drop_from_plan(db, plans[1], activity_id=moved.id, reason="già eseguito", author="dr.rossi", at=later)
        before = _every_version(engine, plans)
        assert len({v.activities for v in before.values()}) == 3  # v1 twice, then two different personalisations

        downgrade(engine, "0011")
        with engine.connect() as connection:
            per_version = connection.execute(
                text(
                    "SELECT v.plan_id, v.version, count(*) FROM plan_activities a "
                    "JOIN care_plan_versions v ON v.id = a.version_id GROUP BY v.plan_id, v.version"
                )
            ).all()
        assert {(p, v): n for p, v, n in per_version} == {k: len(plan.activities) for k, plan in before.items()}

        upgrade(engine)
        assert _every_version(engine, plans) == before
        with Session(engine) as db:
            assert db.scalar(select(func.count()).select_from(PlanCalendar)) == 3
            shared = db.scalars(select(PlanVersion.calendar_id).where(PlanVersion.version == 1)).all()
            assert len(shared) == 2 and len(set(shared)) == 1
            # A plan generated after the migration with the same activities finds the migrated calendar.
            plan = generate_plan(db, later_patient, start=START, author="dr.rossi", at=AT)
            version = db.scalars(select(PlanVersion).where(PlanVersion.plan_id == plan.id)).one()
            assert version.calendar_id == shared[0]
            assert db.scalar(select(func.count()).select_from(PlanCalendar)) == 3
    finally:
        engine.dispose()


def _every_version(engine: Engine, plan_ids: Sequence[int]) -> dict[tuple[int, int], CarePlan]:
    with Session(engine) as db:
        return {
            (plan_id, version.version): load_plan(db, plan_id, version.version)
            for plan_id in plan_ids
            for version in plan_versions(db, plan_id)
        }
