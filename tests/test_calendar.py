"""Working days (weekends, national holidays, Easter Monday, patron saints) and the laying of the calendar."""

from __future__ import annotations

import random
from bisect import bisect_left
from datetime import date, timedelta
from itertools import pairwise

import pytest

# python-dateutil comes with matplotlib and ships no type stubs; it is an independent oracle for Easter here.
from dateutil.easter import easter as dateutil_easter  # type: ignore[import-untyped]

from presa.care.calendar import (
    LEAD_WORKING_DAYS,
    draft_care_plan,
    easter_sunday,
    is_working_day,
    national_holidays,
    patron_day,
    patron_days,
    working_days,
    year_after,
)
from presa.care.plan import CarePlan, PlannedActivity

MILANO, BERGAMO, UNLISTED = "015146", "016024", "015002"  # Abbiategrasso has no row in the patron file
LOMBARDY_CAPITALS = {
    "012133": "Varese",
    "013075": "Como",
    "014061": "Sondrio",
    "015146": "Milano",
    "016024": "Bergamo",
    "017029": "Brescia",
    "018110": "Pavia",
    "019036": "Cremona",
    "020030": "Mantova",
    "097042": "Lecco",
    "098031": "Lodi",
    "108033": "Monza",
}

# Easter Sunday as published (Gregorian computus), including the earliest and latest possible dates.
EASTER = {
    1818: date(1818, 3, 22),
    1943: date(1943, 4, 25),
    2000: date(2000, 4, 23),
    2008: date(2008, 3, 23),
    2011: date(2011, 4, 24),
    2019: date(2019, 4, 21),
    2024: date(2024, 3, 31),
    2025: date(2025, 4, 20),
    2026: date(2026, 4, 5),
    2027: date(2027, 3, 28),
    2038: date(2038, 4, 25),
}


@pytest.mark.parametrize("year", sorted(EASTER))
def test_easter_monday_is_computed_and_is_a_holiday(year: int) -> None:
    monday = EASTER[year] + timedelta(days=1)
    assert easter_sunday(year) == EASTER[year]
    assert national_holidays(year)[monday] == "Lunedì dell'Angelo (Pasquetta)"
    assert not is_working_day(monday)


def test_easter_agrees_with_dateutil_over_four_centuries() -> None:
    assert all(easter_sunday(y) == dateutil_easter(y) for y in range(1800, 2200))


def test_the_national_holidays_of_2026() -> None:
    assert sorted(national_holidays(2026)) == [
        date(2026, 1, 1),
        date(2026, 1, 6),
        date(2026, 4, 6),
        date(2026, 4, 25),
        date(2026, 5, 1),
        date(2026, 6, 2),
        date(2026, 8, 15),
        date(2026, 10, 4),
        date(2026, 11, 1),
        date(2026, 12, 8),
        date(2026, 12, 25),
        date(2026, 12, 26),
    ]


def test_san_francesco_is_a_holiday_from_2026_only() -> None:
    assert is_working_day(date(2024, 10, 4))  # a Friday, before Legge 151/2025
    assert not is_working_day(date(2027, 10, 4))  # a Monday


def test_working_days_in_a_year_by_hand() -> None:
    # 2025: 261 weekdays, 10 of them holidays (1/1, 6/1, 21/4, 25/4, 1/5, 2/6, 15/8, 8/12, 25/12, 26/12).
    assert len(working_days(date(2025, 1, 1), date(2026, 1, 1))) == 251
    # 2026: 261 weekdays, 7 of them holidays; in Milano Sant'Ambrogio (Monday 7 December) is one more.
    assert len(working_days(date(2026, 1, 1), date(2027, 1, 1))) == 254
    assert len(working_days(date(2026, 1, 1), date(2027, 1, 1), MILANO)) == 253


def test_weekends_are_not_working_days() -> None:
    assert not is_working_day(date(2026, 3, 7))
    assert not is_working_day(date(2026, 3, 8))
    assert is_working_day(date(2026, 3, 9))


def test_the_patron_saint_closes_only_his_own_municipality() -> None:
    sant_ambrogio = date(2026, 12, 7)
    assert not is_working_day(sant_ambrogio, MILANO)
    assert is_working_day(sant_ambrogio, BERGAMO)
    assert is_working_day(sant_ambrogio)
    assert not is_working_day(date(2026, 8, 26), BERGAMO)  # Sant'Alessandro


def test_every_lombardy_capital_has_a_sourced_patron_day() -> None:
    days = patron_days()
    assert {code: days[code].municipality for code in LOMBARDY_CAPITALS} == LOMBARDY_CAPITALS
    assert all(day.source.startswith("https://") for day in days.values())
    milano = patron_day(MILANO)
    assert milano is not None
    assert (milano.month, milano.day, milano.patron) == (12, 7, "Sant'Ambrogio")


def test_an_unlisted_municipality_has_no_patron_day() -> None:
    assert patron_day(UNLISTED) is None
    assert patron_day(None) is None
    assert is_working_day(date(2026, 12, 7), UNLISTED)


def test_a_year_from_29_february_ends_on_28_february() -> None:
    assert year_after(date(2024, 2, 29)) == date(2025, 2, 28)
    assert year_after(date(2025, 11, 15)) == date(2026, 11, 15)


def random_plans(count: int, seed: int) -> list[CarePlan]:
    rng = random.Random(seed)
    pathologies = [
        "hypertension",
        "diabetes_type2",
        "dyslipidaemia",
        "heart_failure",
        "cardiac_arrhythmia",
        "copd",
        "dementia",
        "rheumatoid_arthritis",
        "chronic_kidney_disease",
        "multiple_sclerosis",
    ]
    municipalities = [None, MILANO, BERGAMO, "098031", "020030"]
    plans = []
    for _ in range(count):
        chosen = rng.sample(pathologies, rng.randint(1, 5))
        plans.append(
            draft_care_plan(
                chosen,
                level=3 if len(chosen) == 1 else 2 if len(chosen) <= 3 else 1,
                age=rng.randint(30, 95),
                sex=rng.choice(["M", "F"]),
                start=date(2025, 1, 1) + timedelta(days=rng.randint(0, 730)),
                municipality=rng.choice(municipalities),
            )
        )
    return plans


def closed_for(day: date, municipality: str | None) -> bool:
    """Independent of the working-day table: weekday, holiday list and patron file looked up directly."""
    patron = patron_day(municipality)
    return (
        day.weekday() >= 5
        or day in national_holidays(day.year)
        or (patron is not None and (day.month, day.day) == (patron.month, patron.day))
    )


def test_no_activity_falls_on_a_weekend_a_holiday_or_the_patron_day() -> None:
    for plan in random_plans(200, seed=7):
        assert plan.activities
        for planned in plan.activities:
            assert plan.start <= planned.day < plan.end
            assert not closed_for(planned.day, plan.municipality), (planned, plan.municipality)


def test_a_plan_across_the_new_year_skips_the_christmas_holidays_and_easter_monday() -> None:
    plan = draft_care_plan(
        ["dementia", "rheumatoid_arthritis", "heart_failure"],
        level=2,
        age=80,
        sex="F",
        start=date(2025, 11, 15),
        municipality=MILANO,
    )
    assert plan.end == date(2026, 11, 15)
    days = {p.day for p in plan.activities}
    assert {d.year for d in days} == {2025, 2026}
    closed = {date(2025, 12, 7), date(2025, 12, 8), date(2025, 12, 25), date(2025, 12, 26), date(2026, 1, 1)}
    assert not days & (closed | {date(2026, 1, 6), date(2026, 4, 6)})


def occurrences(plan: CarePlan, key: str) -> list[PlannedActivity]:
    return [p for p in plan.activities if p.activity.key == key]


def test_occurrences_are_spread_evenly_over_the_working_days() -> None:
    plan = draft_care_plan(["dementia"], level=3, age=80, sex="M", start=date(2026, 2, 1))
    table = working_days(plan.start, plan.end)
    visits = [table.index(p.day) for p in occurrences(plan, "gp_visit")]  # four GP visits a year
    share = len(table) / 4
    assert len(visits) == 4
    assert visits[0] == pytest.approx(share / 2, abs=1)  # each in the middle of its quarter
    gaps = [later - earlier for earlier, later in pairwise(visits)]
    assert all(gap == pytest.approx(share, abs=1) for gap in gaps)


def test_two_specialist_visits_with_the_same_cadence_do_not_share_a_day() -> None:
    plan = draft_care_plan(["hypertension", "diabetes_type2"], level=2, age=70, sex="F", start=date(2026, 1, 7))
    visit_days = [p.day for p in plan.activities if p.activity.kind in ("gp_visit", "specialist_visit")]
    assert len(visit_days) == len(set(visit_days))


def working_days_between(earlier: date, later: date, table: tuple[date, ...]) -> int:
    return bisect_left(table, later) - bisect_left(table, earlier)


def test_exams_that_feed_a_visit_are_booked_7_to_14_working_days_before_it() -> None:
    plan = draft_care_plan(
        ["diabetes_type2", "ischaemic_heart_disease"], level=2, age=64, sex="M", start=date(2026, 3, 1)
    )
    table = working_days(plan.start, plan.end)
    gp_days = [p.day for p in occurrences(plan, "gp_visit")]
    cardiology_days = [p.day for p in occurrences(plan, "89.01.3.cardiologia")]
    assert LEAD_WORKING_DAYS in range(7, 15)
    for hba1c in occurrences(plan, "90.28.1"):  # twice a year, before each of the two GP visits
        leads = [working_days_between(hba1c.day, visit, table) for visit in gp_days]
        assert any(7 <= lead <= 14 for lead in leads), (hba1c.day, gp_days)
    [ecg] = occurrences(plan, "89.52")  # a cardiology exam goes before the cardiology visit
    [cardiology] = cardiology_days
    assert 7 <= working_days_between(ecg.day, cardiology, table) <= 14
    lipid_days = {p.day for key in ("90.14.1", "90.14.3", "90.43.2", "90.13.B") for p in occurrences(plan, key)}
    assert len(lipid_days) == 1  # labs that feed the same visit share one blood draw


def test_the_same_inputs_give_the_same_plan_and_the_same_ids() -> None:
    first, second = random_plans(30, seed=3), random_plans(30, seed=3)
    assert first == second
    for plan in first:
        ids = [p.id for p in plan.activities]
        assert len(ids) == len(set(ids))
        for planned in plan.activities:
            same_work = occurrences(plan, planned.activity.key)
            position = [p.id for p in same_work].index(planned.id) + 1
            assert planned.id == f"{planned.activity.key}-{position:02d}"  # numbered in date order


def test_a_plan_shifted_by_a_year_keeps_its_ids() -> None:
    this_year = draft_care_plan(["copd", "heart_failure"], level=2, age=77, sex="M", start=date(2026, 1, 5))
    next_year = draft_care_plan(["copd", "heart_failure"], level=2, age=77, sex="M", start=date(2027, 1, 5))
    assert sorted(p.id for p in this_year.activities) == sorted(p.id for p in next_year.activities)


def test_monitoring_labs_more_frequent_than_visits_stay_evenly_spaced_and_precede_each_visit() -> None:
    plan = draft_care_plan(["rheumatoid_arthritis"], level=3, age=58, sex="F", start=date(2026, 1, 7))
    table = working_days(plan.start, plan.end)
    blood_counts = [table.index(p.day) for p in occurrences(plan, "90.62.2")]  # four a year on methotrexate
    gaps = [later - earlier for earlier, later in pairwise(blood_counts)]
    assert len(blood_counts) == 4
    assert all(gap == pytest.approx(len(table) / 4, abs=1) for gap in gaps)
    for visit in occurrences(plan, "gp_visit"):  # two GP visits, each with a blood count before it
        leads = [working_days_between(table[b], visit.day, table) for b in blood_counts]
        assert LEAD_WORKING_DAYS in leads
