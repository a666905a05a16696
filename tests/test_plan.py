"""The PAI merge rules, and personalisation as new versions of an immutable plan."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from presa.care.calendar import draft_care_plan
from presa.care.pdta import load_templates
from presa.care.plan import (
    CarePlan,
    MergedPlan,
    PlanActivity,
    PlanChangeError,
    add_activity,
    drop_activity,
    merge_pathways,
    move_activity,
)
from tests.test_pdta import activity, template_dir

AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def planned(merged: MergedPlan, key: str) -> PlanActivity:
    matches = [a for a in merged.activities if a.key == key]
    assert len(matches) == 1, f"{key} planned {len(matches)} times"
    return matches[0]


def keys(activities: tuple[PlanActivity, ...]) -> set[str]:
    return {a.key for a in activities}


def test_an_exam_wanted_twice_by_one_pathway_and_once_by_another_is_planned_twice(tmp_path: Path) -> None:
    templates = load_templates(
        template_dir(tmp_path, twice=[activity(times_per_year=2)], once=[activity(times_per_year=1)])
    )
    merged = merge_pathways(["twice", "once"], level=2, age=60, sex="F", templates=templates)
    hba1c = planned(merged, "90.28.1")
    assert (hba1c.times_per_year, hba1c.occurrences) == (2, 2)
    assert hba1c.pathways == ("once", "twice")


def test_shipped_templates_plan_shared_exams_once_at_the_highest_frequency() -> None:
    merged = merge_pathways(["hypertension", "heart_failure"], level=2, age=70, sex="M")
    creatinine = planned(merged, "90.16.3")
    assert creatinine.times_per_year == 2  # heart failure twice a year, hypertension once
    assert creatinine.pathways == ("heart_failure", "hypertension")
    assert [a.key for a in merged.activities].count("90.16.3") == 1


def test_gp_visits_collapse_into_the_most_frequent_cadence() -> None:
    merged = merge_pathways(["hypertension", "dementia", "osteoporosis"], level=2, age=82, sex="F")
    gp_visits = [a for a in merged.activities if a.kind == "gp_visit"]
    assert len(gp_visits) == 1
    assert gp_visits[0].times_per_year == 4  # dementia 4, hypertension 2, osteoporosis 1
    assert gp_visits[0].pathways == ("dementia", "hypertension", "osteoporosis")


def test_every_activity_keeps_the_pathways_that_asked_for_it() -> None:
    merged = merge_pathways(["diabetes_type2", "hypertension", "chronic_kidney_disease"], level=2, age=66, sex="M")
    assert planned(merged, "90.16.3").pathways == ("chronic_kidney_disease", "diabetes_type2", "hypertension")
    assert planned(merged, "90.28.1").pathways == ("diabetes_type2",)
    assert planned(merged, "90.43.5").pathways == ("hypertension",)
    assert all(a.pathways for a in merged.activities)
    assert merged.pathways == ("chronic_kidney_disease", "diabetes_type2", "hypertension")


def test_a_pathology_without_template_gets_the_generic_follow_up_and_is_flagged() -> None:
    merged = merge_pathways(["hypertension", "multiple_sclerosis", "epilepsy"], level=2, age=50, sex="F")
    assert merged.generic_follow_up == ("epilepsy", "multiple_sclerosis")
    assert merged.needs_clinician_review
    assert "generic_chronic_follow_up" in merged.pathways
    assert planned(merged, "89.01.branca_da_definire").pathways == ("generic_chronic_follow_up",)
    assert planned(merged, "gp_visit").pathways == ("generic_chronic_follow_up", "hypertension")


def test_a_patient_whose_pathologies_all_have_templates_is_not_flagged() -> None:
    merged = merge_pathways(["hypertension"], level=3, age=50, sex="F")
    assert merged.generic_follow_up == ()
    assert not merged.needs_clinician_review
    assert merged.pathways == ("hypertension",)


def test_age_conditions_raise_the_frequency_from_75() -> None:
    younger = merge_pathways(["cardiac_arrhythmia"], level=3, age=74, sex="M")
    older = merge_pathways(["cardiac_arrhythmia"], level=3, age=75, sex="M")
    assert planned(younger, "90.16.3").times_per_year == 1
    assert planned(older, "90.16.3").times_per_year == 2
    assert planned(older, "90.62.2").times_per_year == 2
    assert planned(older, "90.04.5").times_per_year == 1  # no age rule for ALT


def test_sex_and_age_conditions_decide_what_is_offered() -> None:
    pregnancy = "pregnancy or planning a pregnancy"
    young_woman = merge_pathways(["hypothyroidism"], level=3, age=32, sex="F")
    young_man = merge_pathways(["hypothyroidism"], level=3, age=32, sex="M")
    older_woman = merge_pathways(["hypothyroidism"], level=3, age=51, sex="F")
    [visit] = [s for s in young_woman.suggestions if s.key == "89.01.8.endocrinologia"]
    assert pregnancy in visit.conditions
    for merged in (young_man, older_woman):
        [visit] = [s for s in merged.suggestions if s.key == "89.01.8.endocrinologia"]
        assert pregnancy not in visit.conditions


def test_sex_condition_on_a_default_activity(tmp_path: Path) -> None:
    templates = load_templates(template_dir(tmp_path, bone=[activity(code="88.99.6", when={"sex": "F"})]))
    assert "88.99.6" in keys(merge_pathways(["bone"], level=3, age=60, sex="F", templates=templates).activities)
    assert "88.99.6" not in keys(merge_pathways(["bone"], level=3, age=60, sex="M", templates=templates).activities)


def test_level_conditions_plan_the_cardiologist_for_levels_1_and_2_only() -> None:
    for level in (1, 2):
        merged = merge_pathways(["hypertension"], level=level, age=60, sex="M")
        assert "89.01.3.cardiologia" in keys(merged.activities)
        assert "89.01.3.cardiologia" not in keys(merged.suggestions)
    level_3 = merge_pathways(["hypertension"], level=3, age=60, sex="M")
    assert "89.01.3.cardiologia" not in keys(level_3.activities)
    assert "89.01.3.cardiologia" in keys(level_3.suggestions)


def test_suggestions_never_repeat_planned_work() -> None:
    diabetes_alone = merge_pathways(["diabetes_type2"], level=3, age=60, sex="M")
    assert "90.04.5" in keys(diabetes_alone.suggestions)
    with_arrhythmia = merge_pathways(["diabetes_type2", "cardiac_arrhythmia"], level=2, age=60, sex="M")
    assert "90.04.5" in keys(with_arrhythmia.activities)
    assert not keys(with_arrhythmia.activities) & keys(with_arrhythmia.suggestions)
    assert planned(with_arrhythmia, "90.04.5").pathways == ("cardiac_arrhythmia",)


def test_the_merge_ignores_input_order_and_repetition() -> None:
    one = merge_pathways(["hypertension", "copd", "diabetes_type2"], level=2, age=70, sex="M")
    other = merge_pathways(["diabetes_type2", "copd", "hypertension", "copd"], level=2, age=70, sex="M")
    assert one == other
    assert one.pathologies == ("copd", "diabetes_type2", "hypertension")


def test_rare_exams_fall_once_a_year_and_say_how_often_they_repeat() -> None:
    echo = planned(merge_pathways(["ischaemic_heart_disease"], level=3, age=60, sex="M"), "88.72.2")
    assert (echo.times_per_year, echo.occurrences, echo.every_years) == (0.33, 1, 3)


def test_the_merge_refuses_impossible_patients() -> None:
    with pytest.raises(ValueError, match="level"):
        merge_pathways(["hypertension"], level=0, age=60, sex="M")
    with pytest.raises(ValueError, match="age"):
        merge_pathways(["hypertension"], level=3, age=-1, sex="M")
    with pytest.raises(ValueError, match="sex"):
        merge_pathways(["hypertension"], level=3, age=60, sex="X")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one pathology"):
        merge_pathways([], level=3, age=60, sex="M")


def a_plan() -> CarePlan:
    return draft_care_plan(["diabetes_type2", "hypertension"], level=2, age=68, sex="F", start=date(2026, 1, 12))


def test_adding_a_suggested_activity_makes_version_2_and_leaves_version_1_alone() -> None:
    plan = a_plan()
    [retinopathy_test] = [s for s in plan.merged.suggestions if s.key == "89.39.3"]
    day = date(2026, 3, 3)
    newer = add_activity(plan, retinopathy_test, day, reason="piede a rischio", author="dr.rossi", at=AT)
    assert (plan.version, newer.version) == (1, 2)
    assert plan.changes == ()
    assert len(newer.activities) == len(plan.activities) + 1
    added = newer.activity("89.39.3-v2")
    assert (added.day, added.activity, added.origin) == (day, retinopathy_test, "personalised")
    [change] = newer.changes
    assert (change.version, change.action, change.activity_id) == (2, "add", "89.39.3-v2")
    assert (change.reason, change.author, change.at, change.from_day, change.to_day) == (
        "piede a rischio",
        "dr.rossi",
        AT,
        None,
        day,
    )
    assert [p.day for p in newer.activities] == sorted(p.day for p in newer.activities)


def test_dropping_and_moving_keep_ids_and_log_every_change() -> None:
    plan = a_plan()
    ecg = plan.activity("89.52-01")
    moved_to = date(2026, 9, 14)
    v2 = move_activity(plan, "89.52-01", moved_to, reason="paziente in ferie", author="cm.bianchi", at=AT)
    v3 = drop_activity(v2, "90.43.5-01", reason="già eseguito", author="dr.rossi", at=AT)
    assert v3.version == 3
    assert v3.activity("89.52-01").day == moved_to
    assert plan.activity("89.52-01").day == ecg.day  # the older version is untouched
    with pytest.raises(KeyError):
        v3.activity("90.43.5-01")
    assert [(c.version, c.action, c.activity_id) for c in v3.changes] == [
        (2, "move", "89.52-01"),
        (3, "drop", "90.43.5-01"),
    ]
    assert (v3.changes[0].from_day, v3.changes[0].to_day) == (ecg.day, moved_to)
    assert v3.changes[1].to_day is None
    assert [p.day for p in v3.activities] == sorted(p.day for p in v3.activities)


def test_personalisation_needs_a_reason_an_author_a_known_activity_and_a_day_in_the_plan() -> None:
    plan = a_plan()
    with pytest.raises(PlanChangeError, match="reason"):
        drop_activity(plan, "89.52-01", reason=" ", author="dr.rossi", at=AT)
    with pytest.raises(PlanChangeError, match="author"):
        drop_activity(plan, "89.52-01", reason="già eseguito", author="", at=AT)
    with pytest.raises(PlanChangeError, match="no activity"):
        drop_activity(plan, "89.52-07", reason="già eseguito", author="dr.rossi", at=AT)
    with pytest.raises(PlanChangeError, match="outside the plan"):
        move_activity(plan, "89.52-01", date(2027, 1, 12), reason="rinvio", author="dr.rossi", at=AT)
    with pytest.raises(PlanChangeError, match="already on"):
        move_activity(plan, "89.52-01", plan.activity("89.52-01").day, reason="rinvio", author="dr.rossi", at=AT)


def test_plans_are_immutable() -> None:
    plan = a_plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.version = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        plan.activities[0].day = date(2026, 2, 2)  # type: ignore[misc]
