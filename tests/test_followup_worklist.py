"""Work lists: refreshed from the PAI, the enrolments and the pacts; filtered, paged by keyset, assigned, snoozed,
closed; call-backs in desk hours; transitions of care posted by a person; nothing for a revoked pact."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from presa.care.service import CareError, ProcessingRefusedError, invite, load_run, revoke_pact
from presa.care.service.organisations import assign_role, register_practitioner
from presa.care.store.models import Patient
from presa.care.store.prepared import driver_statement
from presa.followup.rules import priority_band, priority_score
from presa.followup.service.contacts import contacts_of, log_contact
from presa.followup.service.reconcile import mark_done
from presa.followup.service.transitions import open_transition
from presa.followup.service.worklist import (
    WorkListFilter,
    add_item,
    assign,
    close,
    items_of,
    list_item_rows,
    list_items,
    refresh_worklist,
    row_page_statement,
    snooze,
)
from presa.followup.store import ItemKind, ItemStatus, Priority, WorkItem
from presa.web.access import Visibility
from presa.web.reads import DIALECT
from tests.carebuilder import CareRuns, gestore
from tests.followupbuilder import Planned, planned

MAY_20 = date(2026, 5, 20)
JUNE_15 = date(2026, 6, 15)


def at(day: date, hour: int = 8) -> datetime:
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=UTC)


@pytest.fixture
def runs(tmp_path: Path) -> CareRuns:
    return CareRuns(tmp_path)


@pytest.fixture
def patient(db: Session, runs: CareRuns) -> Planned:
    return planned(db, runs)


def keys(db: Session, **filters: object) -> list[str]:
    page = list_items(db, WorkListFilter(**filters), at=at(MAY_20), limit=500)  # type: ignore[arg-type]
    return [row.item.key.split(":")[0] + ":" + (row.item.activity_id or "") for row in page.rows]


def test_refresh_makes_one_item_per_thing_to_do_and_is_idempotent(db: Session, patient: Planned) -> None:
    report = refresh_worklist(db, today=MAY_20, at=at(MAY_20))

    shown = keys(db)
    # Coded activities due within the booking horizon and not booked; GP visit on 9 June is beyond "due soon".
    assert "not_booked:90.27.1-01" in shown and "not_booked:89.52-01" in shown
    assert "not_booked:89.01.3.cardiologia-01" in shown and not any("gp_visit" in k for k in shown)
    assert report.created == len(shown) and report.closed == 0
    again = refresh_worklist(db, today=MAY_20, at=at(MAY_20))
    assert (again.created, again.reopened, again.closed) == (0, 0, 0)

    later = refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))
    overdue = list_items(db, WorkListFilter(kinds=(ItemKind.OVERDUE,)), at=at(JUNE_15)).rows
    assert {r.item.activity_id for r in overdue} >= {"90.27.1-01", "89.52-01", "gp_visit-01", "89.01.3.cardiologia-01"}
    assert later.closed >= 4  # the "not booked" items of activities now overdue are resolved
    first = overdue[0]
    assert first.next_action == "call the patient and rebook" and first.level == 2 and first.resident_id == "R1"
    assert first.item.owner_id is None and first.item.gestore_id == patient.care.gestore.id


def test_a_done_activity_resolves_its_item_and_a_persons_closure_is_final(db: Session, patient: Planned) -> None:
    refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))
    items = {i.activity_id: i for i in items_of(db, patient.care.patient.id) if i.kind is ItemKind.OVERDUE}

    mark_done(db, patient.plan.id, "gp_visit-01", done_on=JUNE_15, note="seen", author="cm", at=at(JUNE_15))
    close(db, items["89.52-01"].id, outcome="the patient refuses the exam", author="cm", at=at(JUNE_15))
    report = refresh_worklist(db, today=JUNE_15, at=at(JUNE_15, 9))

    assert (items["gp_visit-01"].status, items["gp_visit-01"].closed_by) == (ItemStatus.CLOSED, "system")
    assert items["89.52-01"].outcome == "the patient refuses the exam" and report.reopened == 0
    assert items["89.52-01"].status is ItemStatus.CLOSED  # still wanted by the rules, but a person closed it


def test_keyset_pages_cover_the_list_once_in_priority_order(db: Session, patient: Planned) -> None:
    refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))
    everything = list_items(db, WorkListFilter(), at=at(JUNE_15), limit=500).rows
    assert len(everything) >= 5

    seen, cursor = [], None
    while True:
        page = list_items(db, WorkListFilter(), at=at(JUNE_15), limit=2, after=cursor)
        seen.extend(r.item.id for r in page.rows)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [r.item.id for r in everything]
    order = [(-r.item.priority_score, r.item.due_on, r.item.id) for r in everything]
    assert order == sorted(order)
    # The most overdue first: all have the same level here.
    assert everything[0].item.due_on == min(r.item.due_on for r in everything)
    with pytest.raises(CareError, match="not a work-list cursor"):
        list_items(db, WorkListFilter(), at=at(JUNE_15), after="garbage")


def test_filters(db: Session, patient: Planned) -> None:
    refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))

    def count(**filters: object) -> int:
        return len(list_items(db, WorkListFilter(**filters), at=at(JUNE_15), limit=500).rows)  # type: ignore[arg-type]

    total = count()
    assert count(gestore_id=patient.care.gestore.id) == total and count(gestore_id=999) == 0
    assert count(level=2) == total and count(level=1) == 0 and count(level=0) == 0  # 0 is a value, not unset
    assert count(gp_id="GP1") == total and count(gp_id="GP9") == 0
    assert count(pathology="diabetes_type2") == total and count(pathology="copd") == 0
    assert count(ats_code="321") == total and count(ats_code="322") == 0
    assert count(kinds=(ItemKind.OVERDUE,)) + count(kinds=(ItemKind.NOT_BOOKED, ItemKind.DUE_SOON)) == total
    assert count(due_until=date(2026, 5, 31)) + count(due_from=date(2026, 6, 1)) == total
    assert count(unassigned=True) == total and count(owner_id=patient.care.manager.id) == 0
    bands = [count(priority=p) for p in Priority]
    assert sum(bands) == total


def test_assign_snooze_and_close(db: Session, patient: Planned) -> None:
    refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))
    item = list_items(db, WorkListFilter(), at=at(JUNE_15)).rows[0].item
    nurse = register_practitioner(
        db, code="N1", family_name="Verdi", given_name="Luca", profession="nurse", author="admin"
    )
    with pytest.raises(CareError, match="holds no role"):
        assign(db, item.id, nurse.id, author="coordinator", at=at(JUNE_15))
    assign_role(db, nurse.id, patient.care.gestore.id, "case_manager", start_on=date(2026, 1, 1), author="admin")

    assign(db, item.id, nurse.id, author="coordinator", at=at(JUNE_15))
    assert [r.item.id for r in list_items(db, WorkListFilter(owner_id=nurse.id), at=at(JUNE_15)).rows] == [item.id]

    with pytest.raises(CareError, match="reason for snoozing"):
        snooze(db, item.id, until=at(JUNE_15 + timedelta(days=2)), reason="", author="cm", at=at(JUNE_15))
    snooze(db, item.id, until=at(JUNE_15 + timedelta(days=2)), reason="patient away", author="cm", at=at(JUNE_15))
    hidden = list_items(db, WorkListFilter(), at=at(JUNE_15, 10), limit=500).rows
    back = list_items(db, WorkListFilter(), at=at(JUNE_15 + timedelta(days=2)), limit=500).rows
    assert item.id not in {r.item.id for r in hidden} and item.id in {r.item.id for r in back}
    assert item.id in {r.item.id for r in list_items(db, WorkListFilter(include_snoozed=True), at=at(JUNE_15)).rows}

    close(db, item.id, outcome="booked by phone", author="cm", at=at(JUNE_15))
    assert (item.status, item.closed_by, item.outcome) == (ItemStatus.CLOSED, "cm", "booked by phone")
    with pytest.raises(CareError, match="is closed"):
        close(db, item.id, outcome="again", author="cm", at=at(JUNE_15))


def test_a_revoked_pact_hides_and_closes_the_patients_items(db: Session, patient: Planned) -> None:
    refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))
    assert list_items(db, WorkListFilter(), at=at(JUNE_15)).rows

    revoke_pact(db, patient.care.pact.id, reason="consent withdrawn", author="operator", at=at(JUNE_15))
    assert list_items(db, WorkListFilter(), at=at(JUNE_15, 9)).rows == []  # before any refresh
    report = refresh_worklist(db, today=JUNE_15, at=at(JUNE_15, 10))

    assert report.created == 0 and report.closed > 0
    assert all(i.status is ItemStatus.CLOSED for i in items_of(db, patient.care.patient.id))
    with pytest.raises(ProcessingRefusedError):
        log_contact(db, patient.care.patient.id, direction="outbound", outcome="reached", operator="op")


def test_unanswered_invitations_and_renewals(db: Session, runs: CareRuns, patient: Planned) -> None:
    coop = patient.care.gestore
    load_run(db, runs.write({"R1": ("hypertension", "diabetes_type2"), "R2": ("copd",)}), author="loader",
             at=at(date(2026, 3, 3)), today=date(2026, 3, 3))  # fmt: skip
    invite(db, "321", author="ats", at=at(date(2026, 3, 4)), today=date(2026, 3, 4))
    r2 = db.query(Patient).filter_by(resident_id="R2").one()
    end = patient.plan.end_on

    refresh_worklist(db, today=end - timedelta(days=40), at=at(end - timedelta(days=40)))

    kinds = {(i.kind, i.patient_id) for i in db.query(WorkItem)}
    assert (ItemKind.INVITED_NO_ANSWER, r2.id) in kinds
    assert (ItemKind.PLAN_RENEWAL, patient.care.patient.id) in kinds
    assert (ItemKind.PACT_RENEWAL, patient.care.patient.id) in kinds
    invited = db.query(WorkItem).filter_by(kind=ItemKind.INVITED_NO_ANSWER).one()
    assert (invited.gestore_id, invited.ats_code, invited.due_on) == (None, "321", date(2026, 4, 3))
    assert refresh_worklist(db, today=end - timedelta(days=40), gestore_id=coop.id).created == 0


def test_a_call_back_comes_due_at_the_next_desk_opening_and_the_call_closes_it(db: Session, patient: Planned) -> None:
    patient_id = patient.care.patient.id
    called = datetime(2026, 6, 15, 17, 0, tzinfo=UTC)  # 19:00 in Rome
    wanted = datetime(2026, 6, 15, 19, 30, tzinfo=UTC)  # 21:30 in Rome: the desk closes at 20
    with pytest.raises(CareError, match="call_back_at"):
        log_contact(db, patient_id, direction="outbound", outcome="call_back", operator="op", at=called)

    contact = log_contact(db, patient_id, direction="outbound", outcome="call_back", operator="op", at=called,
                          call_back_at=wanted, note="after dinner")  # fmt: skip

    item = db.get(WorkItem, contact.call_back_item_id)
    assert item is not None and item.kind is ItemKind.CALL_BACK
    assert item.due_at == datetime(2026, 6, 16, 6, 0, tzinfo=UTC)  # 08:00 in Rome
    callbacks = WorkListFilter(kinds=(ItemKind.CALL_BACK,))
    assert list_items(db, callbacks, at=datetime(2026, 6, 16, 5, 59, tzinfo=UTC)).rows == []
    assert [r.item.id for r in list_items(db, callbacks, at=datetime(2026, 6, 16, 6, 0, tzinfo=UTC)).rows] == [item.id]

    log_contact(db, patient_id, direction="outbound", outcome="reached", operator="op", item_id=item.id,
                at=datetime(2026, 6, 16, 6, 5, tzinfo=UTC))  # fmt: skip
    assert item.status is ItemStatus.CLOSED and item.outcome == "called back: reached"
    assert [c.outcome.value for c in contacts_of(db, patient_id)] == ["call_back", "reached"]


def test_a_transition_posted_by_a_person_is_recorded_once(db: Session, patient: Planned, runs: CareRuns) -> None:
    patient_id = patient.care.patient.id
    first = open_transition(db, patient_id, "er_visit", date(2026, 6, 12), source="api", author="cm", at=at(JUNE_15))
    again = open_transition(db, patient_id, "er_visit", date(2026, 6, 12), source="api", author="cm", at=at(JUNE_15))

    assert first.id == again.id
    follow_up = db.get(WorkItem, first.follow_up_item_id)
    assert follow_up is not None and follow_up.due_on == date(2026, 6, 16)  # Friday 12 → Tuesday 16
    assert follow_up.priority is Priority.URGENT  # level 2 (300) + post-discharge (150)
    with pytest.raises(CareError, match="unknown transition"):
        open_transition(db, patient_id, "surgery", date(2026, 6, 12), source="api", author="cm")
    gestore(db, "COOP2")
    load_run(db, runs.write({"R1": ("hypertension",), "R3": ("copd",)}), author="loader", at=at(date(2026, 3, 3)),
             today=date(2026, 3, 3))  # fmt: skip
    r3 = db.query(Patient).filter_by(resident_id="R3").one()
    with pytest.raises(ProcessingRefusedError):
        open_transition(db, r3.id, "discharge", date(2026, 6, 12), source="api", author="cm")


def test_things_to_do_are_reminded_once(db: Session, patient: Planned) -> None:
    from presa.followup.service.reminders import add_contact_point, enqueue_todo_reminders, outbox_of

    add_contact_point(db, patient.care.patient.id, channel="sms", address="+393331234567", author="op")
    week_before = patient.activity("gp_visit-01") - timedelta(days=7)

    assert enqueue_todo_reminders(db, today=week_before, at=at(week_before, 6)) == 1
    assert enqueue_todo_reminders(db, today=week_before, at=at(week_before, 7)) == 0
    [message] = outbox_of(db, patient.care.patient.id)
    assert message.template == "activity_todo" and message.body.startswith("Promemoria PAI: Visita di controllo")
    assert message.not_before == at(week_before)  # 10:00 in Rome


def test_the_refresh_rescores_in_sql_as_the_rule_does(db: Session, patient: Planned) -> None:
    """Every kind, days before and after today and beyond the cap: the refresh's set-based priorities are the pure
    rule's (``priority_score``, ``priority_band``)."""
    person = patient.care.patient
    for number, (kind, late) in enumerate((k, d) for k in ItemKind for d in (-5, 0, 1, 30, 200, 400)):
        add_item(db, key=f"test:{number}", kind=kind, patient=person, title="t", due_on=JUNE_15 - timedelta(days=late),
                 author="cm", origin="contact", at=at(JUNE_15 - timedelta(days=800)))  # fmt: skip
    report = refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))
    assert report.rescored > 0
    for item in items_of(db, person.id):
        if item.key.startswith("test:"):
            expected = priority_score(item.kind, person.level, item.due_on, JUNE_15)
            assert (item.priority_score, item.priority) == (expected, priority_band(expected)), item.key


def test_the_apis_rows_are_the_lists_items_page_by_page(db: Session, patient: Planned) -> None:
    """``list_item_rows`` (the API's statement: on PostgreSQL a page of several kinds is one index range per kind,
    merged) pages through the same items in the same order as ``list_items``, for each shape of filter."""
    refresh_worklist(db, today=JUNE_15, at=at(JUNE_15))
    gestore_id = patient.care.gestore.id
    scope = Visibility("gestore", {"scope_gestore": gestore_id})
    shapes = [
        {},
        {"kinds": (ItemKind.OVERDUE,)},
        {"kinds": (ItemKind.OVERDUE, ItemKind.NOT_BOOKED, ItemKind.DUE_SOON)},
        {"kinds": (ItemKind.NOT_BOOKED, ItemKind.OVERDUE), "level": 2},
        {"kinds": (ItemKind.CALL_BACK, ItemKind.PAI_REVIEW)},
    ]
    for shape in shapes:
        filters = WorkListFilter(gestore_id=gestore_id, **shape)  # type: ignore[arg-type]
        expected = [r.item.id for r in list_items(db, filters, at=at(JUNE_15), limit=500).rows]
        seen, cursor = [], None
        while True:
            page = list_item_rows(db, filters, scope=scope, at=at(JUNE_15), limit=2, after=cursor)
            seen.extend(row.id for row in page.rows)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == expected, shape
    assert len(expected) == 0 and len(seen) == 0  # the last shape: no such items here
    assert len([r for r in list_items(db, WorkListFilter(), at=at(JUNE_15), limit=500).rows]) >= 5


def test_the_apis_statement_writes_its_constants_in_its_text() -> None:
    """The states, kinds and LIMITs of a page are in the statement's text, not parameters: PostgreSQL can then plan
    it once for all values with the queue index, whose condition (``status <> 'closed'``) it must see to use."""
    filters = WorkListFilter(gestore_id=1, kinds=(ItemKind.OVERDUE, ItemKind.NOT_BOOKED))
    statement = row_page_statement(filters, after=True, scope=Visibility("gestore", {}), dialect="postgresql")
    compiled = driver_statement(statement, DIALECT, {"limit": 51})
    assert "'open'" in compiled.sql and "'snoozed'" in compiled.sql and "'call_back'" in compiled.sql
    assert "'revoked'" in compiled.sql and "LIMIT 51" in compiled.sql and "LIMIT 1" in compiled.sql
    names = {name for name, _ in compiled.processors}
    assert names <= {"at", "gestore_id", "scope_gestore", "after_score", "after_day", "after_id", "kinds",
                     "page_kind_0", "page_kind_1"}  # fmt: skip
    assert "scope_gestore" in names and "gestore_id" in names
