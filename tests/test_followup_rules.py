"""The follow-up's pure rules, without a database: code families, windows, matching, priority, desk and quiet hours,
working days, slot expansion, Italian templates, the settings file; and the doctests of those modules."""

from __future__ import annotations

import doctest
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

import presa.followup.availability
import presa.followup.messages
import presa.followup.rules
from presa.followup.availability import Closure, Opening, expand
from presa.followup.config import DEFAULT_CONFIG_FILE, default_config, load_config
from presa.followup.messages import SMS_MAX_CHARS, render
from presa.followup.rules import (
    DeliveredService,
    DeskHours,
    PlannedOccurrence,
    QuietHours,
    activity_window,
    add_working_days,
    priority_band,
    priority_score,
    reconcile,
    same_family,
)
from presa.followup.store import ItemKind, Outcome, Priority


@pytest.mark.parametrize("module", [presa.followup.rules, presa.followup.availability, presa.followup.messages])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0


def test_code_families() -> None:
    assert same_family("89.01.8", "89.01.8") and same_family("89.01.8", "89.01") and same_family("89.01", "89.01.3")
    assert not same_family("89.01.8", "89.01.3") and not same_family("90.14.1", "90.14.3")
    assert not same_family("89.52", "89.5") and same_family(" 90.27.1 ", "90.27.1")


def test_windows_scale_with_frequency() -> None:
    yearly, quarterly, monthly = (activity_window(date(2026, 6, 1), n) for n in (1, 4, 12))
    assert (yearly.closes - yearly.opens).days == 364 and (yearly.on_time_until - yearly.due).days == 30
    assert (quarterly.closes - quarterly.due).days == 45 and (quarterly.on_time_until - quarterly.due).days == 15
    assert (monthly.closes - monthly.due).days == 15 and (monthly.on_time_until - monthly.due).days == 5
    every_two_years = activity_window(date(2026, 6, 1), 0.5)
    assert every_two_years == yearly


def test_one_service_fulfils_one_occurrence_the_nearest() -> None:
    planned = [
        PlannedOccurrence(1, "hba1c-01", date(2026, 3, 1), "90.28.1", 2),
        PlannedOccurrence(1, "hba1c-02", date(2026, 9, 1), "90.28.1", 2),
        PlannedOccurrence(1, "gp-01", date(2026, 3, 1), None, 2),
    ]
    delivered = [
        DeliveredService(10, date(2026, 3, 20), "90.28.1"),
        DeliveredService(11, date(2026, 3, 25), "90.28.1"),  # a repeat: belongs to nobody
        DeliveredService(12, date(2026, 11, 20), "90.28.1"),  # late for September
    ]
    out = {r.activity_id: r for r in reconcile(planned, delivered, as_of=date(2026, 12, 31))}
    assert (out["hba1c-01"].outcome, out["hba1c-01"].execution_id) == (Outcome.DONE_ON_TIME, 10)
    assert (out["hba1c-02"].outcome, out["hba1c-02"].execution_id) == (Outcome.DONE_LATE, 12)
    assert out["gp-01"].outcome is None
    nothing = {r.activity_id: r.outcome for r in reconcile(planned, [], as_of=date(2026, 6, 1))}
    assert nothing == {"hba1c-01": Outcome.MISSED, "hba1c-02": None, "gp-01": None}
    assert {r.outcome for r in reconcile(planned, [], as_of=None)} == {None}


def test_priority_puts_the_most_complex_and_most_overdue_first() -> None:
    today = date(2026, 6, 15)
    fresh_level1 = priority_score(ItemKind.OVERDUE, 1, today - timedelta(days=1), today)
    old_level3 = priority_score(ItemKind.OVERDUE, 3, today - timedelta(days=30), today)
    fresh_level3 = priority_score(ItemKind.OVERDUE, 3, today - timedelta(days=1), today)
    assert fresh_level1 > old_level3 > fresh_level3
    assert priority_score(ItemKind.OVERDUE, 3, today - timedelta(days=400), today) == 200 + 50 + 2 * 180
    assert priority_score(ItemKind.DUE_SOON, 2, today + timedelta(days=5), today) == 320
    assert [priority_band(s) for s in (449, 450, 599, 600)] == [
        Priority.ROUTINE,
        Priority.URGENT,
        Priority.URGENT,
        Priority.ASAP,
    ]


def test_desk_and_quiet_hours() -> None:
    desk = DeskHours(frozenset(range(5)), time(8), time(20))  # weekdays only
    friday_night = datetime(2026, 6, 12, 19, 0, tzinfo=UTC)  # 21:00 in Rome
    assert desk.next_open(friday_night) == datetime(2026, 6, 15, 6, 0, tzinfo=UTC)  # Monday 08:00
    open_now = datetime(2026, 6, 12, 10, 0, tzinfo=UTC)
    assert desk.is_open(open_now) and desk.next_open(open_now) == open_now
    quiet = QuietHours(time(20), time(8))
    assert quiet.is_quiet(datetime(2026, 6, 12, 5, 0, tzinfo=UTC)) and not quiet.is_quiet(open_now)
    assert quiet.next_allowed(datetime(2026, 6, 12, 5, 0, tzinfo=UTC)) == datetime(2026, 6, 12, 6, 0, tzinfo=UTC)
    lunch = QuietHours(time(13), time(14))
    assert lunch.is_quiet(datetime(2026, 6, 12, 11, 30, tzinfo=UTC)) and not lunch.is_quiet(open_now)


def test_working_days_skip_weekends_holidays_and_the_patron_saint() -> None:
    assert add_working_days(date(2026, 6, 12), 2) == date(2026, 6, 16)
    assert add_working_days(date(2026, 12, 4), 1, "015146") == date(2026, 12, 9)  # 7 Dec Milan, 8 Dec national
    with pytest.raises(ValueError, match="at least 1"):
        add_working_days(date(2026, 6, 12), 0)


def test_slots_from_openings_and_closures() -> None:
    week = [Opening(d, time(9), time(10)) for d in range(5)]
    spans = expand(week, [Closure(date(2026, 6, 3), time(9, 20), time(9, 40)), Closure(date(2026, 6, 4))],
                   slot_minutes=20, start=date(2026, 6, 1), end=date(2026, 6, 8))  # fmt: skip
    per_day: dict[date, int] = {}
    for s in spans:
        per_day[s.day] = per_day.get(s.day, 0) + 1
    # 2 June is Festa della Repubblica; on 3 June the 9:20 slot is closed; 4 June is closed all day.
    assert per_day == {date(2026, 6, 1): 3, date(2026, 6, 3): 2, date(2026, 6, 5): 3}
    with_holiday = expand(week, [], slot_minutes=20, start=date(2026, 6, 2), end=date(2026, 6, 3),
                          closed_on_holidays=False)  # fmt: skip
    assert len(with_holiday) == 3
    autumn = expand([Opening(6, time(9), time(9, 30))], [], slot_minutes=30, start=date(2026, 10, 25),
                    end=date(2026, 10, 26), closed_on_holidays=False)  # fmt: skip
    assert autumn[0].starts_at == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)  # the day summer time ends


def test_italian_templates() -> None:
    text = render("booking_reminder", name=None, service="Elettrocardiogramma", day=date(2026, 5, 26),
                  at=datetime(2026, 5, 26, 7, 20, tzinfo=UTC), place="Poliambulatorio Niguarda",
                  gestore="Cooperativa MMG Milano Nord", phone="02 1234567")  # fmt: skip
    assert text.subject == "Promemoria: Elettrocardiogramma, martedì 26 maggio 2026 alle 09:20"
    assert text.email.startswith("Gentile assistita/o,") and "Patto di cura" in text.email
    assert text.sms.startswith("Promemoria: Elettrocardiogramma 26/05/2026 ore 09:20") and len(text.sms) <= 160
    long = render("activity_todo", name="Anna", service="x" * 300, day=date(2026, 5, 26), at=None, place="",
                  gestore="G", phone="1")  # fmt: skip
    assert len(long.sms) == SMS_MAX_CHARS and long.sms.endswith("…")


def test_the_settings_file(tmp_path: Path) -> None:
    config = default_config()
    assert config.desk.days == tuple(range(7)) and (config.desk.opens, config.desk.closes) == (time(8), time(20))
    assert config.transitions.follow_up_working_days == 2
    bad = tmp_path / "followup.yaml"
    bad.write_text(DEFAULT_CONFIG_FILE.read_text(encoding="utf-8").replace("days: [0, 1", "days: [9, 1"))
    with pytest.raises(ValueError, match="weekdays are 0"):
        load_config(bad)
