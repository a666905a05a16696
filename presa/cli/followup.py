"""The follow-up's commands: ``presa worker`` (the reminder outbox), ``presa reconcile`` (later months' flows) and
``presa worklist-refresh`` (the daily work-list job, with the reminders of things to do)."""

from __future__ import annotations

import signal
import threading
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from presa.cli.app import app, parse_date
from presa.cli.console import console, fail_cleanly

if TYPE_CHECKING:  # the store and the follow-up are imported when a command runs, not when the CLI starts
    from presa.followup.rules import QuietHours

DatabaseOption = Annotated[
    str | None, typer.Option("--database", help="Care store URL; default: PRESA_DATABASE_URL or presa.sqlite3.")
]


def parse_quiet_hours(value: str) -> QuietHours | None:
    """``off``, ``config`` (the settings file's) or ``HH:MM-HH:MM``."""
    from presa.followup.config import default_config
    from presa.followup.rules import QuietHours

    if value == "off":
        return None
    if value == "config":
        return default_config().quiet_hours.hours()
    try:
        starts, ends = (time.fromisoformat(part) for part in value.split("-"))
    except ValueError:
        raise ValueError(f"--quiet-hours: '{value}' is not off, config or HH:MM-HH:MM") from None
    return QuietHours(starts, ends)


@app.command()
@fail_cleanly
def worker(
    database: DatabaseOption = None,
    smtp_host: Annotated[str | None, typer.Option("--smtp-host", help="SMTP relay for e-mail reminders.")] = None,
    smtp_port: Annotated[int, typer.Option("--smtp-port", help="SMTP port.")] = 25,
    smtp_from: Annotated[str, typer.Option("--smtp-from", help="Sender address.")] = "promemoria@presa.local",
    sms_dir: Annotated[Path | None, typer.Option("--sms-dir", help="Directory of the file SMS gateway.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Messages claimed at a time.")] = 20,
    lease_seconds: Annotated[int, typer.Option("--lease-seconds", min=1, help="How long a claim lasts.")] = 600,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", help="Pause when nothing is due.")] = 5.0,
    quiet_hours: Annotated[str, typer.Option("--quiet-hours", help="config, off or HH:MM-HH:MM.")] = "config",
    once: Annotated[bool, typer.Option("--once", help="Stop when nothing is due.")] = False,
) -> None:
    """Send the reminders in the outbox (e-mail over SMTP, SMS through the gateway); stop with Ctrl-C."""
    from presa.care.store.database import database_url
    from presa.followup.transport import FileSmsGateway, SmtpSender
    from presa.followup.worker import run_worker

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    email = SmtpSender(smtp_host, smtp_port, smtp_from) if smtp_host else None
    sms = FileSmsGateway(sms_dir) if sms_dir else None
    if email is None and sms is None:
        raise ValueError("give --smtp-host, --sms-dir or both: the worker has nothing to send with")
    report = run_worker(
        database or database_url(),
        email=email,
        sms=sms,
        batch_size=batch_size,
        lease=timedelta(seconds=lease_seconds),
        poll_seconds=poll_seconds,
        quiet_hours=parse_quiet_hours(quiet_hours),
        once=once,
        stop=stop,
    )
    console.print(
        f"{report.sent:,} sent ({report.resolved_in_doubt:,} found already delivered), {report.cancelled:,} "
        f"cancelled, {report.retried:,} to retry, {report.failed:,} failed, in {report.batches:,} batches"
    )


@app.command()
@fail_cleanly
def reconcile(
    flows: Annotated[Path, typer.Argument(help="Later months' flows, as shipped or validated by 'presa validate'.")],
    database: DatabaseOption = None,
    author: Annotated[str, typer.Option("--author", help="Who runs it, for the audit trail.")] = "presa-cli",
    max_date: Annotated[str | None, typer.Option("--max-date", help="Latest valid date; default today.")] = None,
) -> None:
    """Match the planned PAI activities with the services delivered: done on time, done late, missed."""
    from presa.care.store.database import database_url, make_engine, session_factory
    from presa.followup.service.reconcile import reconcile_flows

    engine = make_engine(database or database_url())
    try:
        with session_factory(engine)() as session, session.begin():
            result = reconcile_flows(
                session, flows, author=author, max_date=parse_date(max_date, "--max-date") if max_date else None
            )
    finally:
        engine.dispose()
    if result.already_loaded:
        console.print(f"These flows were reconciled before (load {result.load_id}): nothing changed.")
        return
    console.print(
        f"Load {result.load_id}: {result.executions:,} services stored, {result.outcome_changes:,} activity outcomes "
        f"changed, {result.transitions:,} transitions of care opened; {result.rejected:,} rows rejected; flows "
        f"cover up to {result.covered_until}."
    )


@app.command(name="worklist-refresh")
@fail_cleanly
def worklist_refresh(
    database: DatabaseOption = None,
    today: Annotated[str | None, typer.Option("--today", help="The day to refresh for; default today.")] = None,
) -> None:
    """The daily job: bring the work lists up to date and schedule the reminders of things to do."""
    from presa.care.service.common import today_in_italy
    from presa.care.store.database import database_url, make_engine, session_factory
    from presa.followup.service.reminders import enqueue_todo_reminders
    from presa.followup.service.worklist import refresh_worklist

    day = parse_date(today, "--today") if today else today_in_italy()
    at = datetime.now().astimezone()
    engine = make_engine(database or database_url())
    try:
        with session_factory(engine)() as session, session.begin():
            report = refresh_worklist(session, today=day, at=at)
            todo = enqueue_todo_reminders(session, today=day, at=at)
    finally:
        engine.dispose()
    console.print(
        f"Work list on {day}: {report.created:,} new, {report.reopened:,} reopened, {report.closed:,} closed, "
        f"{report.rescored:,} re-prioritised; {todo:,} reminders of things to do scheduled."
    )
