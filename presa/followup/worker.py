"""The outbox worker behind ``presa worker``: it sends the reminders, never losing one, never sending one twice.

A loop of batches. Each batch is claimed in its own short transaction (``reminders.claim``: ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, one atomic UPDATE on SQLite), which marks the rows ``sending`` with this worker's name and
a lease. Then, one message at a time: a transaction checks that consent, opt-outs and the booking still allow it
(else the row is cancelled); the message goes out; a transaction marks it ``sent`` - only if the row is still this
worker's. Several workers may run side by side.

What a crash (``kill -9``) leaves, and what the next run does:

- rows claimed but not yet sent stay ``sending`` until their lease runs out, then any worker claims them again:
  nothing is lost;
- a row whose send completed but whose ``sent`` mark did not commit is "in doubt". For SMS the gateway is asked
  (``SmsGateway.lookup`` by the outbox key; the gateway's ``send`` is idempotent by key too), so it is marked sent
  without a second SMS. SMTP offers no such question: the e-mail is sent again with the same ``Message-ID``. That
  window is the few milliseconds between the server's "250 OK" and the commit; a message being sent when the
  worker dies before the server's "250 OK" was not accepted, and is sent once by the next run.

Quiet hours are respected at send time as well as when reminders are scheduled: during them the worker sends
nothing. Transport errors are retried with a growing delay, up to :data:`MAX_ATTEMPTS`; a permanent refusal fails
the row at once.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from presa.care.store.database import make_engine
from presa.followup.rules import QuietHours
from presa.followup.service import reminders
from presa.followup.store import Channel, OutboxMessage, OutboxStatus
from presa.followup.transport import EmailSender, Outgoing, SmsGateway, TransportError

MAX_ATTEMPTS = 8
RETRY_BASE = timedelta(minutes=2)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkerReport:
    batches: int = 0
    sent: int = 0
    resolved_in_doubt: int = 0
    cancelled: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(
    database_url: str | URL,
    *,
    email: EmailSender | None,
    sms: SmsGateway | None,
    worker_id: str | None = None,
    batch_size: int = 20,
    lease: timedelta = timedelta(minutes=5),
    poll_seconds: float = 5.0,
    quiet_hours: QuietHours | None = None,
    once: bool = False,
    stop: threading.Event | None = None,
    clock: Clock = utc_now,
    on_sent: Callable[[OutboxMessage], None] | None = None,
) -> WorkerReport:
    """Send due reminders until ``stop`` is set (or, with ``once``, until nothing is due); see the module docstring.

    A channel without a transport (``email`` or ``sms`` None) is left pending for a worker that has one.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    engine = make_engine(database_url)
    worker = worker_id or default_worker_id()
    report = WorkerReport()
    stop = stop or threading.Event()
    try:
        while not stop.is_set():
            now = clock()
            if quiet_hours is not None and quiet_hours.is_quiet(now):
                if once:
                    break
                stop.wait(min(poll_seconds, (quiet_hours.next_allowed(now) - now).total_seconds()))
                continue
            claimed = _claim(engine, worker, now, batch_size, lease, _channels(email, sms))
            if not claimed:
                if once:
                    break
                stop.wait(poll_seconds)
                continue
            report.batches += 1
            for message_id in claimed:
                if stop.is_set():
                    break  # the rest stays claimed until the lease runs out: another run takes it
                _deliver(engine, worker, message_id, email, sms, clock, lease, report, on_sent)
    finally:
        engine.dispose()
    return report


def _channels(email: EmailSender | None, sms: SmsGateway | None) -> tuple[Channel, ...]:
    return tuple(c for c, transport in ((Channel.EMAIL, email), (Channel.SMS, sms)) if transport is not None)


def _claim(
    engine: Engine, worker: str, now: datetime, limit: int, lease: timedelta, channels: tuple[Channel, ...]
) -> list[int]:
    if not channels:
        return []
    with Session(engine) as session, session.begin():
        return reminders.claim(session, worker, at=now, limit=limit, lease=lease, channels=channels)


def _deliver(
    engine: Engine,
    worker: str,
    message_id: int,
    email: EmailSender | None,
    sms: SmsGateway | None,
    clock: Clock,
    lease: timedelta,
    report: WorkerReport,
    on_sent: Callable[[OutboxMessage], None] | None,
) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        message = session.get(OutboxMessage, message_id, with_for_update=True)
        if message is None or message.status is not OutboxStatus.SENDING or message.claimed_by != worker:
            return  # its lease ran out while the batch was being sent, and another worker took it
        message.lease_until = clock() + lease  # the lease covers this message's send, however long the batch
        refusal = reminders.check_deliverable(session, message, at=clock())
        if refusal is not None:
            reminders.give_up(session, message.id, worker, status=OutboxStatus.CANCELLED, reason=refusal)
            report.cancelled += 1
            return
        outgoing = Outgoing(message.key, message.recipient, message.subject, message.body)
        attempts = message.attempts
    try:
        if message.channel is Channel.SMS:
            assert sms is not None
            earlier = sms.lookup(message.key) if attempts > 1 else None
            gateway_id = earlier or sms.send(outgoing)
            report.resolved_in_doubt += earlier is not None
        else:
            assert email is not None
            gateway_id = email.send(outgoing)
    except TransportError as exc:
        _failed(engine, worker, message_id, attempts, exc, clock(), report)
        return
    with Session(engine) as session, session.begin():
        if reminders.mark_sent(session, message_id, worker, gateway_id=gateway_id, at=clock()):
            report.sent += 1
            if on_sent is not None:
                on_sent(message)


def _failed(
    engine: Engine,
    worker: str,
    message_id: int,
    attempts: int,
    exc: TransportError,
    now: datetime,
    report: WorkerReport,
) -> None:
    report.errors.append(f"message {message_id}: {exc}")
    with Session(engine) as session, session.begin():
        if exc.permanent or attempts >= MAX_ATTEMPTS:
            reminders.give_up(session, message_id, worker, status=OutboxStatus.FAILED, reason=str(exc))
            report.failed += 1
        else:
            retry = now + RETRY_BASE * (2 ** (attempts - 1))
            reminders.retry_later(session, message_id, worker, error=str(exc), not_before=retry)
            report.retried += 1
