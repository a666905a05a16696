"""Booking: schedules with weekly openings, holidays and closures; an activity booked in its window, rescheduled,
cancelled; a whole plan-year at once; reminders written with the booking; and never two bookings of one slot, even
under 50 simultaneous attempts from separate connections."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from presa.care.service import CareError, add_to_plan, draft_pact, revoke_pact, sign_pact
from presa.care.store import make_engine, upgrade
from presa.followup.rules import ITALY
from presa.followup.service.booking import (
    SlotTakenError,
    add_closure,
    book,
    book_plan,
    cancel,
    free_slots,
    planned_activity,
    preview_plan_booking,
    publish_slots,
    reschedule,
)
from presa.followup.service.reconcile import mark_done
from presa.followup.service.reminders import add_contact_point, opt_out, outbox_of, recipients
from presa.followup.service.worklist import WorkListFilter, list_items, refresh_worklist
from presa.followup.store import Booking, BookingStatus, Channel, ItemKind, ItemStatus, OutboxStatus, Slot
from tests.carebuilder import CareRuns
from tests.followupbuilder import Planned, clinic, planned

NOW = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)  # 09:00 in Rome, the day after the plan starts
ECG = "89.52-01"  # yearly, due 26 May 2026


@pytest.fixture
def runs(tmp_path: Path) -> CareRuns:
    return CareRuns(tmp_path)


@pytest.fixture
def patient(db: Session, runs: CareRuns) -> Planned:
    return planned(db, runs)


@pytest.fixture
def schedules(db: Session, patient: Planned) -> dict[str, int]:
    return clinic(db, patient.care.gestore.id, ("89.52", "90.27.1", "90.28.1"))


def slot_on(db: Session, schedule_id: int, day: date, hour: int = 9) -> Slot:
    starts = datetime.combine(day, time(hour), ITALY).astimezone(UTC)
    return db.scalars(select(Slot).where(Slot.schedule_id == schedule_id, Slot.starts_at == starts)).one()


def test_slots_follow_the_weekly_openings_minus_holidays_and_closures(
    db: Session, patient: Planned, schedules: dict[str, int]
) -> None:
    ecg = schedules["89.52"]
    days = Counter(s.day for s in db.scalars(select(Slot).where(Slot.schedule_id == ecg)))
    assert days[date(2026, 5, 26)] == 4  # Tuesday, 9:00 to 11:00 in 30-minute slots
    assert date(2026, 5, 30) not in days and date(2026, 5, 31) not in days  # weekend
    assert date(2026, 6, 2) not in days  # Festa della Repubblica
    assert slot_on(db, ecg, date(2026, 5, 26)).starts_at == datetime(2026, 5, 26, 7, 0, tzinfo=UTC)  # CEST
    assert slot_on(db, ecg, date(2026, 3, 10)).starts_at == datetime(2026, 3, 10, 8, 0, tzinfo=UTC)  # CET
    assert publish_slots(db, ecg, start=date(2026, 3, 9), end=date(2027, 3, 9)) == 0  # idempotent

    add_closure(db, patient_id_provider(db, ecg), day=date(2026, 5, 27), starts=time(10), ends=time(11),
                reason="ECG machine serviced", author="clinic", at=NOW)  # fmt: skip
    withdrawn = db.scalars(select(Slot).where(Slot.schedule_id == ecg, Slot.day == date(2026, 5, 27), Slot.withdrawn))
    assert [s.starts_at.astimezone(ITALY).time() for s in withdrawn] == [time(10), time(10, 30)]


def patient_id_provider(db: Session, schedule_id: int) -> int:
    from presa.followup.store import Schedule

    schedule = db.get(Schedule, schedule_id)
    assert schedule is not None
    return schedule.provider_id


def test_a_booking_in_the_window_writes_its_reminders(db: Session, patient: Planned, schedules: dict[str, int]) -> None:
    patient_id = patient.care.patient.id
    add_contact_point(db, patient_id, channel="email", address="anna@example.org", name="Anna Bianchi", author="op")
    add_contact_point(db, patient_id, channel="sms", address="+393331234567", author="op")
    add_contact_point(db, patient_id, channel="email", address="figlio@example.org", role="caregiver", author="op")
    activity = planned_activity(db, patient.plan.id, ECG)
    offered = free_slots(db, activity, not_before=NOW)
    assert offered[0].day == date(2026, 5, 26)  # nearest the planned day first

    refresh_worklist(db, today=date(2026, 5, 20), at=NOW)
    wanted = list_items(db, WorkListFilter(kinds=(ItemKind.NOT_BOOKED,)), at=NOW).rows
    to_book = next(r.item for r in wanted if r.item.activity_id == ECG)

    booking = book(db, patient.plan.id, ECG, offered[0].id, author="cm", at=NOW)

    assert booking.status is BookingStatus.BOOKED
    # the list stops offering to book it at once, not at the next refresh
    assert (to_book.status, to_book.closed_by, to_book.outcome) == (ItemStatus.CLOSED, "system", "booked")
    messages = outbox_of(db, patient_id)
    assert len(messages) == 6  # 3 recipients x (7 days and 1 day before)
    assert {m.not_before for m in messages} == {
        datetime(2026, 5, 19, 8, 0, tzinfo=UTC),  # 10:00 in Rome, a week before
        datetime(2026, 5, 25, 8, 0, tzinfo=UTC),
    }
    sms = next(m for m in messages if m.channel is Channel.SMS)
    assert sms.body.startswith("Promemoria: Elettrocardiogramma") and "26/05/2026 ore 09:00" in sms.body
    assert len(sms.body) <= 160
    email = next(m for m in messages if m.recipient == "anna@example.org")
    assert email.body.startswith("Gentile Anna Bianchi,") and "martedì 26 maggio 2026 alle 09:00" in email.body
    assert "Poliambulatorio AMB1" in email.body and "Cooperativa COOP1" in email.body
    assert free_slots(db, activity, not_before=NOW)[0].id != offered[0].id

    refresh_worklist(db, today=date(2026, 5, 20), at=NOW)
    not_booked = list_items(db, WorkListFilter(kinds=(ItemKind.NOT_BOOKED,)), at=NOW).rows
    assert ECG not in {r.item.activity_id for r in not_booked}


def test_consent_and_opt_out_decide_who_is_reminded(db: Session, runs: CareRuns) -> None:
    patient = planned(db, runs, scopes=("care", "reminders_email"))
    schedules = clinic(db, patient.care.gestore.id, ("89.52",))
    patient_id = patient.care.patient.id
    add_contact_point(db, patient_id, channel="email", address="anna@example.org", author="op")
    add_contact_point(db, patient_id, channel="sms", address="+393331234567", author="op")
    add_contact_point(db, patient_id, channel="email", address="figlio@example.org", role="caregiver", author="op")

    book(db, patient.plan.id, ECG, slot_on(db, schedules["89.52"], date(2026, 5, 26)).id, author="cm", at=NOW)

    messages = outbox_of(db, patient_id)
    assert {m.recipient for m in messages} == {"anna@example.org"}  # no SMS consent; no caregiver_reminders
    assert opt_out(db, patient_id, "email", author="op", at=NOW) == 2
    assert {m.status for m in outbox_of(db, patient_id)} == {OutboxStatus.CANCELLED}


def test_a_caregiver_is_reminded_only_with_the_pacts_own_scope(db: Session, runs: CareRuns) -> None:
    # Sharing data with the gestore's network is not consent to tell a third person about appointments.
    patient = planned(db, runs, scopes=("care", "reminders_email", "data_sharing"))
    schedules = clinic(db, patient.care.gestore.id, ("89.52",))
    patient_id = patient.care.patient.id
    add_contact_point(db, patient_id, channel="email", address="figlio@example.org", role="caregiver", author="op")
    assert recipients(db, patient_id) == []
    draft = draft_pact(db, patient.care.episode.id, author="op", at=NOW,
                       scopes=("care", "reminders_email", "caregiver_reminders"))  # fmt: skip
    sign_pact(db, draft.id, role="patient", signer="Paziente", signed_at=NOW, author="op")
    sign_pact(db, draft.id, role="clinical_manager", signer="Medico", signed_at=NOW, author="op")
    assert [p.address for p in recipients(db, patient_id)] == ["figlio@example.org"]

    book(db, patient.plan.id, ECG, slot_on(db, schedules["89.52"], date(2026, 5, 26)).id, author="cm", at=NOW)

    assert {m.recipient for m in outbox_of(db, patient_id)} == {"figlio@example.org"}


def test_what_cannot_be_booked(db: Session, patient: Planned, schedules: dict[str, int]) -> None:
    plan_id = patient.plan.id
    ecg = schedules["89.52"]
    with pytest.raises(CareError, match="outside the window"):
        book(db, plan_id, ECG, slot_on(db, ecg, date(2027, 1, 5)).id, author="cm", at=NOW)
    with pytest.raises(CareError, match=r"is for service 90\.27\.1"):
        book(db, plan_id, ECG, slot_on(db, schedules["90.27.1"], date(2026, 5, 26)).id, author="cm", at=NOW)
    with pytest.raises(CareError, match="in the past"):
        book(db, plan_id, ECG, slot_on(db, ecg, date(2026, 3, 10)).id, author="cm", at=NOW + timedelta(hours=2))
    with pytest.raises(CareError, match="no service code"):
        book(db, plan_id, "gp_visit-01", slot_on(db, ecg, date(2026, 5, 26)).id, author="cm", at=NOW)
    outsider = clinic(db, patient.care.gestore.id, ("89.52",), code="AMB2")
    from presa.care.store.models import NetworkMembership

    db.query(NetworkMembership).filter_by(provider_id=patient_id_provider(db, outsider["89.52"])).delete()
    with pytest.raises(CareError, match="not in the gestore's network"):
        book(db, plan_id, ECG, slot_on(db, outsider["89.52"], date(2026, 5, 26)).id, author="cm", at=NOW)
    mark_done(db, plan_id, ECG, done_on=date(2026, 3, 9), note="done privately", author="cm", at=NOW)
    with pytest.raises(CareError, match="nothing to book"):
        book(db, plan_id, ECG, slot_on(db, ecg, date(2026, 5, 26)).id, author="cm", at=NOW)
    revoke_pact(db, patient.care.pact.id, reason="withdrawn", author="op", at=NOW)
    with pytest.raises(CareError, match="revoked"):
        book(db, plan_id, "90.27.1-01", slot_on(db, schedules["90.27.1"], date(2026, 5, 25)).id, author="cm", at=NOW)


def test_reschedule_cancel_and_closures(db: Session, patient: Planned, schedules: dict[str, int]) -> None:
    patient_id = patient.care.patient.id
    add_contact_point(db, patient_id, channel="sms", address="+393331234567", author="op")
    ecg = schedules["89.52"]
    first = book(db, patient.plan.id, ECG, slot_on(db, ecg, date(2026, 5, 26)).id, author="cm", at=NOW)

    moved = reschedule(db, first.id, slot_on(db, ecg, date(2026, 5, 28)).id, reason="patient busy", author="cm", at=NOW)

    assert (first.status, first.end_reason, moved.replaces_id) == (BookingStatus.RESCHEDULED, "patient busy", first.id)
    by_booking = Counter((m.booking_id, m.status) for m in outbox_of(db, patient_id))
    assert by_booking == {(first.id, OutboxStatus.CANCELLED): 2, (moved.id, OutboxStatus.PENDING): 2}
    other = add_to_plan(db, patient.plan.id, activity_key="89.52", day=date(2026, 5, 27), reason="second ECG",
                        author="dr.rossi", at=NOW)  # fmt: skip
    assert other.current_version == 2
    book(db, patient.plan.id, "89.52-v2", slot_on(db, ecg, date(2026, 5, 27)).id, author="cm", at=NOW)
    with pytest.raises(SlotTakenError):
        reschedule(db, moved.id, slot_on(db, ecg, date(2026, 5, 27)).id, reason="x", author="cm", at=NOW)
    assert moved.status is BookingStatus.BOOKED  # a refused reschedule changes nothing

    cancelled = add_closure(db, patient_id_provider(db, ecg), day=date(2026, 5, 28), reason="strike", author="clinic",
                            at=NOW)  # fmt: skip
    assert [b.id for b in cancelled] == [moved.id] and moved.status is BookingStatus.CANCELLED
    with pytest.raises(CareError, match="is cancelled"):
        cancel(db, moved.id, reason="again", author="cm", at=NOW)
    refresh_worklist(db, today=date(2026, 5, 20), at=NOW)
    assert ECG in {r.item.activity_id for r in list_items(db, WorkListFilter(), at=NOW, limit=500).rows}


def test_booking_closes_the_item_offering_it_and_a_cancellation_brings_it_back(
    db: Session, patient: Planned, schedules: dict[str, int]
) -> None:
    refresh_worklist(db, today=date(2026, 5, 20), at=NOW)

    def to_book() -> set[str | None]:
        rows = list_items(db, WorkListFilter(kinds=(ItemKind.NOT_BOOKED,)), at=NOW, limit=500).rows
        return {r.item.activity_id for r in rows}

    assert ECG in to_book()
    booking = book(db, patient.plan.id, ECG, slot_on(db, schedules["89.52"], date(2026, 5, 26)).id, author="cm", at=NOW)
    assert ECG not in to_book()
    assert refresh_worklist(db, today=date(2026, 5, 20), at=NOW).reopened == 0

    cancel(db, booking.id, reason="the patient is away", author="cm", at=NOW)
    assert refresh_worklist(db, today=date(2026, 5, 20), at=NOW).reopened == 1
    assert ECG in to_book()


def test_a_whole_plan_year_is_previewed_then_booked(db: Session, patient: Planned, schedules: dict[str, int]) -> None:
    proposals = preview_plan_booking(db, patient.plan.id, at=NOW)
    with_slot = {p.activity.activity_id for p in proposals if p.slot is not None}
    without = {p.activity.activity_id for p in proposals if p.slot is None}
    assert with_slot == {"89.52-01", "90.27.1-01", "90.27.1-02", "90.28.1-01", "90.28.1-02"}
    assert "89.01.3.cardiologia-01" in without and "gp_visit-01" not in without | with_slot  # uncoded: not booked
    days = [p.slot.day for p in proposals if p.slot is not None]
    assert len(days) == len(set(days))  # one visit to the clinic a day
    assert db.scalar(select(func.count()).select_from(Booking)) == 0  # a preview writes nothing

    result = book_plan(db, patient.plan.id, author="cm", at=NOW)

    assert {b.activity_id for b in result.booked} == with_slot and not result.taken_meanwhile
    assert {a.activity_id for a in result.without_slot} == without
    assert preview_plan_booking(db, patient.plan.id, at=NOW) == [
        p for p in preview_plan_booking(db, patient.plan.id, at=NOW) if p.slot is None
    ]


def test_the_database_refuses_a_second_live_booking_of_a_slot(
    db: Session, patient: Planned, schedules: dict[str, int]
) -> None:
    slot = slot_on(db, schedules["89.52"], date(2026, 5, 26))
    book(db, patient.plan.id, ECG, slot.id, author="cm", at=NOW)
    with pytest.raises(IntegrityError), db.begin_nested():  # straight to the table, past every check in book()
        row = {"patient_id": patient.care.patient.id, "plan_id": patient.plan.id, "activity_id": "90.27.1-01"}
        db.add(Booking(slot_id=slot.id, status=BookingStatus.BOOKED, booked_at=NOW, booked_by="x", **row))
        db.flush()


ATTEMPTS = 50


def test_fifty_simultaneous_attempts_at_one_slot_make_one_booking(empty_database: str, tmp_path: Path) -> None:
    setup = make_engine(empty_database)
    upgrade(setup)
    with Session(setup, expire_on_commit=False) as db, db.begin():
        patient = planned(db, CareRuns(tmp_path))
        schedules = clinic(db, patient.care.gestore.id, ("89.52",))
        add_to_plan(db, patient.plan.id, activity_key="89.52", day=date(2026, 5, 27), reason="second ECG",
                    author="dr.rossi", at=NOW)  # fmt: skip
        slot_id = slot_on(db, schedules["89.52"], date(2026, 5, 26)).id
        plan_id = patient.plan.id
    setup.dispose()
    engine = make_engine(empty_database, pool_size=ATTEMPTS, max_overflow=0)
    start = threading.Barrier(ATTEMPTS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        activity = ECG if n % 2 else "89.52-v2"  # two activities of the same service, both in the slot's window
        with engine.connect() as connection, Session(bind=connection) as session:  # its own connection
            start.wait()
            try:
                with session.begin():
                    book(session, plan_id, activity, slot_id, author=f"cm{n}", at=NOW)
                result = "booked"
            except SlotTakenError:
                result = "taken"
            except Exception as exc:  # any other failure is the test's finding
                result = f"error: {exc!r}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert Counter(outcomes) == {"booked": 1, "taken": ATTEMPTS - 1}
        with Session(engine) as check:
            live = check.scalars(select(Booking).where(Booking.slot_id == slot_id)).all()
            assert [b.status for b in live] == [BookingStatus.BOOKED]
    finally:
        engine.dispose()
