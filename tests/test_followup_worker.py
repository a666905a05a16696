"""The reminder outbox and ``presa worker``: e-mail to a real local SMTP server (aiosmtpd), SMS to the file gateway;
consent checked again at send time; quiet hours; retries; workers that never take the same row; and a real worker
process killed with SIGKILL mid-batch, after whose restart every reminder was delivered exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from presa.care.service import revoke_pact
from presa.care.store import make_engine, upgrade
from presa.followup.rules import QuietHours
from presa.followup.service.booking import book
from presa.followup.service.reminders import add_contact_point, claim, enqueue, opt_out, outbox_of
from presa.followup.store import ContactPoint, OutboxMessage, OutboxStatus
from presa.followup.transport import FileSmsGateway, Outgoing, SmtpSender, TransportError
from presa.followup.worker import run_worker
from tests.carebuilder import CareRuns
from tests.followupbuilder import Planned, clinic, planned
from tests.pgserver import free_port

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
BEFORE_ECG = datetime(2026, 5, 25, 9, 0, tzinfo=UTC)  # 11:00 in Rome, after both reminders of the 26 May ECG


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts; ``before_accept`` runs before each answer."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.before_accept: Callable[[int], bool] | None = None
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook)
        with self.lock:
            number = len(self.messages) + 1
        if self.before_accept is not None and not await asyncio.to_thread(self.before_accept, number):
            return "451 4.3.0 not accepted"
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=email_policy))
        return "250 OK"

    def keys(self) -> list[str]:
        with self.lock:
            return [str(m["X-Presa-Key"]) for m in self.messages]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def committed_patient(url: str, tmp_path: Path) -> tuple[Engine, Planned]:
    """A fresh database with a patient whose plan is active, committed (the worker has its own connections)."""
    engine = make_engine(url)
    upgrade(engine)
    with Session(engine, expire_on_commit=False) as db, db.begin():
        patient = planned(db, CareRuns(tmp_path / "runs"))
    return engine, patient


# --- in-process -----------------------------------------------------------------------------------------------


def test_the_worker_sends_each_reminder_once_by_email_and_sms(
    empty_database: str, tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    engine, patient = committed_patient(empty_database, tmp_path)
    patient_id = patient.care.patient.id
    with Session(engine) as db, db.begin():
        add_contact_point(db, patient_id, channel="email", address="anna@example.org", name="Anna", author="op")
        add_contact_point(db, patient_id, channel="sms", address="+393331234567", author="op")
        schedules = clinic(db, patient.care.gestore.id, ("89.52",))
        from tests.test_followup_booking import slot_on

        book(db, patient.plan.id, "89.52-01", slot_on(db, schedules["89.52"], date(2026, 5, 26)).id,
             author="cm", at=NOW)  # fmt: skip
    sms = FileSmsGateway(tmp_path / "sms")
    email = SmtpSender("127.0.0.1", port, "promemoria@coop1.example.org")
    quiet = QuietHours(datetime.min.time().replace(hour=20), datetime.min.time().replace(hour=8))

    at_night = run_worker(empty_database, email=email, sms=sms, once=True, quiet_hours=quiet,
                          clock=lambda: datetime(2026, 5, 24, 21, 0, tzinfo=UTC))  # fmt: skip
    early = run_worker(empty_database, email=email, sms=sms, once=True, clock=lambda: NOW)
    report = run_worker(empty_database, email=email, sms=sms, once=True, quiet_hours=quiet, clock=lambda: BEFORE_ECG)
    again = run_worker(empty_database, email=email, sms=sms, once=True, clock=lambda: BEFORE_ECG)

    assert (at_night.sent, early.sent, report.sent, again.sent) == (0, 0, 4, 0)
    assert len(set(inbox.keys())) == len(inbox.keys()) == 2
    mail = inbox.messages[0]
    assert mail["To"] == "anna@example.org" and mail["Message-ID"].startswith("<presa.")
    assert "26 maggio 2026" in str(mail["Subject"])
    assert len(sms.messages()) == 2 and all(m["to"] == "+393331234567" for m in sms.messages())
    with Session(engine) as db:
        rows = outbox_of(db, patient_id)
        assert {r.status for r in rows} == {OutboxStatus.SENT} and all(r.gateway_id for r in rows)
        assert all(r.attempts == 1 and r.sent_at == BEFORE_ECG for r in rows)
    engine.dispose()


def test_consent_is_asked_again_at_send_time(empty_database: str, tmp_path: Path) -> None:
    engine, patient = committed_patient(empty_database, tmp_path)
    patient_id = patient.care.patient.id
    with Session(engine) as db, db.begin():
        sms_point = add_contact_point(db, patient_id, channel="sms", address="+393331234567", author="op")
        email_point = add_contact_point(db, patient_id, channel="email", address="a@example.org", author="op")
        for n, point in enumerate((sms_point, email_point, sms_point)):
            enqueue(db, key=f"note:{n}", point=point, template="activity_todo", subject="s", body="b",
                    not_before=NOW, at=NOW)  # fmt: skip
        opt_out(db, patient_id, "email", author="op", at=NOW)
        # The e-mail was cancelled at once; bring it back as if the opt-out had come after the claim.
        db.execute(OutboxMessage.__table__.update().values(status="pending"))  # type: ignore[attr-defined]
        revoke_pact(db, patient.care.pact.id, reason="consent withdrawn", author="op", at=NOW)
    sms = FileSmsGateway(tmp_path / "sms")

    report = run_worker(empty_database, email=SmtpSender("127.0.0.1", free_port(), "x@y"), sms=sms, once=True,
                        clock=lambda: NOW + timedelta(minutes=1))  # fmt: skip

    assert (report.sent, report.cancelled) == (0, 3) and sms.messages() == []
    with Session(engine) as db:
        reasons = {r.last_error for r in outbox_of(db, patient_id)}
        assert any("revoked" in (r or "") for r in reasons)
    engine.dispose()


def test_a_transport_failure_is_retried_later_and_a_permanent_one_fails(empty_database: str, tmp_path: Path) -> None:
    engine, patient = committed_patient(empty_database, tmp_path)
    with Session(engine) as db, db.begin():
        point = add_contact_point(db, patient.care.patient.id, channel="email", address="a@example.org", author="op")
        enqueue(db, key="note:1", point=point, template="activity_todo", subject="s", body="b", not_before=NOW, at=NOW)
        bad = ContactPoint(patient_id=patient.care.patient.id, channel="sms", address="not-a-number", role="patient",
                           created_at=NOW, created_by="op")  # fmt: skip
        db.add(bad)
        db.flush()
        enqueue(db, key="note:2", point=bad, template="activity_todo", subject="s", body="b", not_before=NOW, at=NOW)
    nobody = SmtpSender("127.0.0.1", free_port(), "x@y", timeout=2)

    report = run_worker(empty_database, email=nobody, sms=FileSmsGateway(tmp_path / "sms"), once=True,
                        clock=lambda: NOW)  # fmt: skip

    assert (report.sent, report.retried, report.failed) == (0, 1, 1)
    with Session(engine) as db:
        rows = {r.key: r for r in db.scalars(select(OutboxMessage))}
        assert rows["note:1"].status is OutboxStatus.PENDING and rows["note:1"].not_before == NOW + timedelta(minutes=2)
        assert rows["note:2"].status is OutboxStatus.FAILED and "not a phone number" in (
            rows["note:2"].last_error or ""
        )
    engine.dispose()
    with pytest.raises(TransportError):
        nobody.send(Outgoing("k", "a@b", "s", "b"))


def test_two_workers_never_claim_the_same_row(db_engine: Engine, empty_database: str, tmp_path: Path) -> None:
    engine, patient = committed_patient(empty_database, tmp_path)
    with Session(engine) as db, db.begin():
        point = add_contact_point(db, patient.care.patient.id, channel="sms", address="+39333", author="op")
        for n in range(30):
            enqueue(db, key=f"note:{n}", point=point, template="activity_todo", subject="s", body="b",
                    not_before=NOW, at=NOW)  # fmt: skip
    lease = timedelta(minutes=5)
    if engine.dialect.name == "postgresql":
        # A claim still open in one transaction is skipped by another, not waited for.
        with Session(engine) as first, first.begin():
            mine = claim(first, "w1", at=NOW, limit=10, lease=lease)
            with Session(engine) as second, second.begin():
                theirs = claim(second, "w2", at=NOW, limit=10, lease=lease)
    else:
        with Session(engine) as first, first.begin():
            mine = claim(first, "w1", at=NOW, limit=10, lease=lease)
        with Session(engine) as second, second.begin():
            theirs = claim(second, "w2", at=NOW, limit=10, lease=lease)
    assert len(mine) == len(theirs) == 10 and not set(mine) & set(theirs)
    with Session(engine) as late, late.begin():  # an expired lease is claimed again
        again = claim(late, "w3", at=NOW + lease + timedelta(seconds=1), limit=100, lease=lease)
    assert set(again) >= set(mine) | set(theirs) and len(again) == 30
    engine.dispose()
    assert db_engine.dialect.name == engine.dialect.name


# --- a real worker process, killed ------------------------------------------------------------------------------

MESSAGES = 24  # e-mails and as many SMS


def seed_outbox(engine: Engine, patient: Planned) -> None:
    due = datetime.now(UTC) - timedelta(minutes=1)
    with Session(engine) as db, db.begin():
        email = add_contact_point(db, patient.care.patient.id, channel="email", address="a@example.org", author="op")
        sms = add_contact_point(db, patient.care.patient.id, channel="sms", address="+393331234567", author="op")
        for n in range(MESSAGES):
            for point in (email, sms):
                enqueue(db, key=f"note:{n:02d}:{point.channel.value}", point=point, template="activity_todo",
                        subject=f"Promemoria {n}", body=f"Messaggio {n}", not_before=due, at=due)  # fmt: skip


def worker_process(url: str, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "presa.cli", "worker", "--database", url, "--batch-size", "10",
               "--lease-seconds", "2", "--poll-seconds", "0.2", "--quiet-hours", "off", "--once", *options]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def statuses(engine: Engine) -> Counter[str]:
    with Session(engine) as db:
        return Counter(m.status.value for m in db.scalars(select(OutboxMessage)))


def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(
    empty_database: str, tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    engine, patient = committed_patient(empty_database, tmp_path)
    seed_outbox(engine, patient)
    sms_dir = tmp_path / "sms"
    options = ("--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--sms-dir", str(sms_dir))
    first = worker_process(engine.url.render_as_string(hide_password=False), *options)

    def kill_on_the_ninth(number: int) -> bool:
        """While the worker waits for the server's answer to its 9th e-mail: kill it; the server takes nothing."""
        if number == 9:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            return False
        return True

    inbox.before_accept = kill_on_the_ninth
    first.wait(timeout=120)
    assert first.returncode == -signal.SIGKILL
    after_kill = statuses(engine)
    assert after_kill["sending"] >= 1 and 0 < after_kill["sent"] < 2 * MESSAGES  # killed mid-batch
    assert len(inbox.keys()) == 8

    inbox.before_accept = None
    time.sleep(2.5)  # the dead worker's lease runs out
    second = worker_process(engine.url.render_as_string(hide_password=False), *options)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err

    assert statuses(engine) == {"sent": 2 * MESSAGES}
    expected_email = {f"note:{n:02d}:email" for n in range(MESSAGES)}
    assert Counter(inbox.keys()) == dict.fromkeys(expected_email, 1)
    sent_sms = FileSmsGateway(sms_dir).messages()
    assert sorted(m["key"] for m in sent_sms) == sorted(f"note:{n:02d}:sms" for n in range(MESSAGES))
    assert "sent" in out
    engine.dispose()


def test_sms_in_doubt_after_a_kill_are_found_at_the_gateway_not_sent_again(empty_database: str, tmp_path: Path) -> None:
    engine, patient = committed_patient(empty_database, tmp_path)
    seed_outbox(engine, patient)
    with Session(engine) as db, db.begin():  # SMS only in this test
        db.execute(OutboxMessage.__table__.delete().where(OutboxMessage.channel == "email"))  # type: ignore[attr-defined]
    sms_dir = tmp_path / "sms"
    gateway = FileSmsGateway(sms_dir)
    # Claimed and written to the gateway, but never marked sent: exactly what a kill between the two leaves.
    with Session(engine) as db, db.begin():
        taken = claim(db, "dead-worker", at=datetime.now(UTC), limit=5, lease=timedelta(seconds=1))
        for message in db.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(taken))):
            gateway.send(Outgoing(message.key, message.recipient, None, message.body))  # fmt: skip
    time.sleep(1.5)
    first = worker_process(engine.url.render_as_string(hide_password=False), "--sms-dir", str(sms_dir))

    deadline = time.monotonic() + 60
    while len(list(sms_dir.glob("*.json"))) < 12 and time.monotonic() < deadline:
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    time.sleep(2.5)
    second = worker_process(engine.url.render_as_string(hide_password=False), "--sms-dir", str(sms_dir))
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err

    assert statuses(engine) == {"sent": MESSAGES}
    keys = [m["key"] for m in gateway.messages()]
    assert sorted(keys) == sorted(f"note:{n:02d}:sms" for n in range(MESSAGES))
    engine.dispose()
