"""iCalendar export: RFC 5545 structure, CRLF, folding at 75 octets, escaping; parsed back by a tiny parser."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from presa.care.calendar import draft_care_plan
from presa.care.ical import PRODID, escape_text, fold_line, to_ical
from presa.care.plan import CarePlan, PlanActivity, add_activity, drop_activity

STAMP = datetime(2026, 1, 12, 8, 0, tzinfo=timezone(timedelta(hours=1)))
Component = dict[str, list[tuple[dict[str, str], str]]]


def unfold(text: str) -> list[str]:
    """RFC 5545 3.1: a CRLF followed by one space or tab continues the previous line."""
    assert text.endswith("\r\n")
    return re.sub(r"\r\n[ \t]", "", text).split("\r\n")[:-1]


def unescape(value: str) -> str:
    return re.sub(r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def parse(text: str) -> list[tuple[str, Component]]:
    """Components as (name, {property: [(parameters, value)]}), in document order, nested ones flattened."""
    components: list[tuple[str, Component]] = []
    stack: list[tuple[str, Component]] = []
    for line in unfold(text):
        head, _, value = line.partition(":")
        name, *params = head.split(";")
        if name == "BEGIN":
            stack.append((value, {}))
        elif name == "END":
            ended = stack.pop()
            assert ended[0] == value, f"END:{value} closes {ended[0]}"
            components.append(ended)
        else:
            parameters = dict(p.split("=", 1) for p in params)
            stack[-1][1].setdefault(name, []).append((parameters, value))
    assert not stack, "unclosed components"
    return components


def only(component: Component, name: str) -> str:
    [(_, value)] = component[name]
    return value


def a_plan() -> CarePlan:
    return draft_care_plan(
        ["diabetes_type2", "hypertension", "epilepsy"],
        level=2,
        age=70,
        sex="F",
        start=date(2026, 1, 12),
        municipality="015146",
    )


def test_the_export_parses_back_to_one_event_per_planned_activity() -> None:
    plan = a_plan()
    components = parse(to_ical(plan, calendar_id="paz-7f3a", stamp=STAMP))
    events = [c for name, c in components if name == "VEVENT"]
    [calendar] = [c for name, c in components if name == "VCALENDAR"]
    assert (only(calendar, "VERSION"), only(calendar, "PRODID")) == ("2.0", PRODID)
    assert len(events) == len(plan.activities)
    for event, planned in zip(events, plan.activities, strict=True):
        assert only(event, "UID") == f"{planned.id}.paz-7f3a@presa"
        assert only(event, "DTSTAMP") == "20260112T070000Z"  # written in UTC
        [(parameters, start)] = event["DTSTART"]
        assert parameters == {"VALUE": "DATE"}
        assert start == planned.day.strftime("%Y%m%d")
        assert unescape(only(event, "SUMMARY")) == planned.activity.description_it
        assert only(event, "SEQUENCE") == "0"
    assert len({only(e, "UID") for e in events}) == len(events)


def test_the_description_names_the_pathways_in_italian() -> None:
    plan = a_plan()
    events = [c for name, c in parse(to_ical(plan, calendar_id="paz", stamp=STAMP)) if name == "VEVENT"]
    by_uid = {only(e, "UID"): unescape(only(e, "DESCRIPTION")) for e in events}
    creatinine = by_uid["90.16.3-01.paz@presa"]
    assert creatinine.startswith("Percorsi (PDTA): Diabete mellito tipo 2, Follow-up generico della cronicità")
    assert "Ipertensione arteriosa" in creatinine
    assert "Codice prestazione (nomenclatore DPCM 12/01/2017): 90.16.3" in creatinine
    assert "\n" in creatinine  # several lines, escaped as \n in the file
    assert "Codice prestazione" not in by_uid["gp_visit-01.paz@presa"]


def test_lines_end_with_crlf_and_are_folded_at_75_octets() -> None:
    text = to_ical(a_plan(), calendar_id="paz", stamp=STAMP)
    physical = text.split("\r\n")
    assert physical[-1] == ""
    assert "\n" not in "".join(physical) and "\r" not in "".join(physical)
    assert max(len(line.encode("utf-8")) for line in physical) == 75  # long descriptions were folded
    folded = [line for line in physical if line.startswith(" ")]
    assert folded


def test_folding_never_splits_a_utf8_character_and_unfolds_to_the_original() -> None:
    line = "SUMMARY:" + "Visita oculistica perché è già più tardi: " * 6
    folded = fold_line(line)
    pieces = folded.split("\r\n")
    assert len(pieces) > 1
    assert all(len(piece.encode("utf-8")) <= 75 for piece in pieces)
    assert all(piece.startswith(" ") for piece in pieces[1:])
    assert "".join([pieces[0], *(p[1:] for p in pieces[1:])]) == line
    assert fold_line("SUMMARY:breve") == "SUMMARY:breve"
    exactly_75 = "X" * 75
    assert fold_line(exactly_75) == exactly_75
    assert fold_line(exactly_75 + "Y") == exactly_75 + "\r\n Y"


def test_text_escaping() -> None:
    assert escape_text("a,b;c\\d\ne") == "a\\,b\\;c\\\\d\\ne"
    assert escape_text("riga\r\nsotto") == "riga\\nsotto"
    tricky = "Prelievo; digiuno, acqua\\no\ncaffè"
    assert unescape(escape_text(tricky)) == tricky


def test_a_personalised_activity_with_special_characters_round_trips() -> None:
    plan = a_plan()
    special = PlanActivity(
        key="93.82.1",
        code="93.82.1",
        kind="education",
        discipline="diabetologia",
        provider="specialist",
        description_it="Educazione individuale; piede, dieta \\ insulina\nseconda riga",
        description_en="Individual education",
        times_per_year=1,
        precedes_visit=False,
        pathways=("diabetes_type2",),
    )
    newer = add_activity(plan, special, date(2026, 5, 4), reason="richiesta", author="dr.verdi", at=STAMP)
    newer = drop_activity(newer, "gp_visit-01", reason="già vista", author="dr.verdi", at=STAMP)
    text = to_ical(newer, calendar_id="paz", stamp=STAMP)
    assert "SUMMARY:Educazione individuale\\; piede\\, dieta \\\\ insulina\\nseconda riga\r\n" in text
    events = {only(c, "UID"): c for name, c in parse(text) if name == "VEVENT"}
    added = events["93.82.1-v2.paz@presa"]
    assert unescape(only(added, "SUMMARY")) == special.description_it
    assert "Aggiunta dal clinico al piano." in unescape(only(added, "DESCRIPTION"))
    assert only(added, "SEQUENCE") == "2"  # version 3 of the plan
    assert "gp_visit-01.paz@presa" not in events


def test_the_export_needs_an_aware_stamp_and_a_calendar_id() -> None:
    plan = a_plan()
    with pytest.raises(ValueError, match="timezone-aware"):
        to_ical(plan, calendar_id="paz", stamp=datetime(2026, 1, 12, 8, 0))
    with pytest.raises(ValueError, match="calendar_id"):
        to_ical(plan, calendar_id=" ", stamp=STAMP)


def test_pathway_names_can_be_given() -> None:
    full = a_plan()
    plan = replace(full, activities=(full.activity("gp_visit-01"),))
    names = {"hypertension": "Ipertensione"}
    text = to_ical(plan, calendar_id="paz", stamp=datetime(2026, 1, 1, tzinfo=UTC), pathway_names=names)
    [event] = [c for name, c in parse(text) if name == "VEVENT"]
    description = unescape(only(event, "DESCRIPTION"))
    assert description.startswith("Percorsi (PDTA): diabetes_type2, generic_chronic_follow_up, Ipertensione\n")
