"""The care store's commands: ``presa load`` (a stratification run into the store), ``presa pseudonyms`` (the
analysts' lookups indexed ahead), ``presa invite`` (a batch of letters for an ATS, as PDFs), ``presa serve`` (the
API) and ``presa plan`` (every due plan, in bulk).

Each migrates the store to the latest revision first (the embedded SQLite default works from an empty directory)
and runs in one transaction: a failure leaves the store as it was. The author recorded in the history and the
audit trail is ``--author``, by default the operating-system user.
"""

from __future__ import annotations

import csv
import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from presa.cli.app import app, parse_date
from presa.cli.console import console, fail_cleanly, progress_bar

if TYPE_CHECKING:  # SQLAlchemy and the store are imported when a command runs, not when the CLI starts
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

AUDIT_FLUSH = 1_000

DatabaseOption = Annotated[
    str | None, typer.Option("--database", help="Care store URL; default: PRESA_DATABASE_URL or presa.sqlite3.")
]
AuthorOption = Annotated[
    str | None, typer.Option("--author", help="Who the history and audit trail name; default: the system user.")
]


def author_of(author: str | None) -> str:
    name = (author or getpass.getuser()).strip()
    if not name or len(name) > 100:
        raise ValueError("--author: give a name of 1 to 100 characters")
    return name


@contextmanager
def store(database: str | None) -> Iterator[Engine]:
    """The migrated store; an unreachable database is a one-line error, not a traceback."""
    from sqlalchemy.exc import OperationalError

    from presa.care.store.database import database_url, make_engine, normalise_url, upgrade

    url = normalise_url(database) if database else database_url()
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield engine
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ValueError(
            f"the care store at {url.render_as_string(hide_password=True)} is unreachable: {reason}"
        ) from None
    finally:
        engine.dispose()


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    from presa.care.store.database import session_factory

    with session_factory(engine)() as session, session.begin():
        yield session


@app.command()
@fail_cleanly
def load(
    run: Annotated[Path, typer.Argument(help="Stratification run directory (written by 'presa stratify').")],
    database: DatabaseOption = None,
    author: AuthorOption = None,
) -> None:
    """Load a stratification run into the care store: eligible patients, levels and episodes, keeping history."""
    from presa.care.pseudonyms import secret_key
    from presa.care.service.population import load_run
    from presa.care.service.pseudonyms import index_pseudonyms

    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    key = secret_key()
    with store(database) as engine, transaction(engine) as session:
        with console.status("Loading the run"):
            loaded = load_run(session, run, author=author_of(author))
        with console.status("Indexing the new patients' pseudonyms"):
            indexed = index_pseudonyms(session, key)  # so that analysts' lookups need no scan
    console.print(
        f"Run {loaded.run_id} ({loaded.reference_date.isoformat()}) loaded in {loaded.seconds:.1f} s: "
        f"{loaded.population:,} residents, {loaded.eligible:,} eligible, {loaded.new_patients:,} new patients, "
        f"{loaded.level_changes:,} level changes, {loaded.no_longer_eligible:,} no longer eligible; "
        f"{loaded.episodes_opened:,} episodes opened, {loaded.episodes_ended:,} ended; "
        f"{indexed:,} pseudonyms indexed.",
        soft_wrap=True,
    )


@app.command()
@fail_cleanly
def pseudonyms(database: DatabaseOption = None) -> None:
    """Index every patient's pseudonym for the analysts' lookups, ahead of them: after the secret key changed (all
    digests are then made again) or to finish what a load left. Otherwise the first lookup that finds nobody
    indexes its ATS inside a request."""
    from presa.care.pseudonyms import secret_key
    from presa.care.service.pseudonyms import index_pseudonyms

    key = secret_key()
    with store(database) as engine, transaction(engine) as session, console.status("Indexing the pseudonyms"):
        indexed = index_pseudonyms(session, key)
    console.print(f"{indexed:,} pseudonyms indexed.")


@app.command()
@fail_cleanly
def invite(
    ats: Annotated[str, typer.Option("--ats", help="ATS code, 321 to 328.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the letters (created; must not hold files).")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many patients.")] = None,
    letter_date: Annotated[
        str | None, typer.Option("--letter-date", help="Date on the letters; default today.")
    ] = None,
    database: DatabaseOption = None,
    author: AuthorOption = None,
) -> None:
    """Invite the eligible patients of an ATS: one batch, a PDF per patient, one merged PDF, and letters.csv.

    letters.csv joins each letter (its file and invitation code) to the patient's resident id, for whoever
    addresses the envelopes; the letters themselves carry no resident id.
    """
    from presa.care.documents import invitation_letter_pdf
    from presa.care.pdfjoin import PdfJoiner
    from presa.care.pseudonyms import secret_key
    from presa.care.service.invitations import invite as invite_patients
    from presa.care.service.letters import batch_title, letter_entries
    from presa.care.store.audit import record

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty directory")
    day = parse_date(letter_date, "--letter-date") if letter_date else None
    who = author_of(author)
    key = secret_key()
    with store(database) as engine, transaction(engine) as session:
        done = invite_patients(session, ats, author=who, letter_date=day, limit=limit)
        total = len(done.patient_ids)
        (out / "letters").mkdir(parents=True, exist_ok=True)
        merged = out / f"lettere-lotto-{done.batch.id}.pdf"
        # Each letter is drawn once, for its own file and for the merged PDF, which grows letter by letter:
        # memory stays the same whatever the batch's size.
        with (
            merged.open("wb") as merged_file,
            (out / "letters.csv").open("w", newline="", encoding="utf-8") as index,
            progress_bar("Writing letters") as advance,
        ):
            joiner = PdfJoiner(merged_file, title=batch_title(done.batch.id), lang="it-IT")
            writer = csv.writer(index)
            writer.writerow(["invitation_id", "invitation_code", "resident_id", "municipality", "file"])
            for number, entry in enumerate(letter_entries(session, done.batch.id, key), start=1):
                name = f"letters/invito-{entry.invitation_id}.pdf"
                pdf = invitation_letter_pdf(entry.letter, title=batch_title(done.batch.id))
                (out / name).write_bytes(pdf)
                joiner.append(pdf)
                writer.writerow([entry.invitation_id, entry.code, entry.resident_id, entry.municipality or "", name])
                record(session, actor=who, action="print_letter", entity="invitation", entity_id=entry.invitation_id,
                       patient_id=entry.patient_id)  # fmt: skip
                if number % AUDIT_FLUSH == 0:
                    session.flush()  # written audit rows leave the session's memory
                advance("letters", number, total)
            joiner.close()
    names = ", ".join(g.name for g in done.gestori)
    console.print(
        f"Batch {done.batch.id}: {total:,} patients of ATS {ats} invited on "
        f"{done.batch.letter_date.isoformat()}; letters list {len(done.gestori)} gestori ({names}). "
        f"Merged PDF: {merged}",
        soft_wrap=True,
    )


@app.command()
@fail_cleanly
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    database: DatabaseOption = None,
) -> None:
    """Serve the web application and the REST API (under /api; OpenAPI at /api/openapi.json, docs at /api/docs)."""
    import uvicorn

    from presa.care.store.database import database_url, normalise_url
    from presa.web.app import create_app

    url = normalise_url(database) if database else database_url()
    with store(database):
        pass  # migrated; the app opens its own engine
    console.print(
        f"presa on http://{host}:{port}/ (web pages; the API under /api; store: "
        f"{url.render_as_string(hide_password=True)})",
        soft_wrap=True,
    )
    uvicorn.run(create_app(url.render_as_string(hide_password=False)), host=host, port=port, proxy_headers=True)


@app.command()
@fail_cleanly
def plan(
    start: Annotated[str | None, typer.Option("--start", help="First day of the plans; default today.")] = None,
    database: DatabaseOption = None,
    author: AuthorOption = None,
) -> None:
    """Generate and store the draft plan of every patient with a signed pact and no plan for those 12 months.

    On PostgreSQL a batch of 50,000 patients or more checks the plans' references once at its end and holds the
    plan tables until it commits: run it when the service centre is closed.
    """
    from presa.care.service.bulk import BulkPlanReport, generate_all_plans

    day: date | None = parse_date(start, "--start") if start else None
    with store(database) as engine, transaction(engine) as session, progress_bar("Generating plans") as advance:

        def progress(report: BulkPlanReport) -> None:
            advance(f"{report.activities:,} activities", report.plans, report.plans)

        done = generate_all_plans(session, author=author_of(author), on_progress=progress, start=day)
    rate = done.plans / done.seconds if done.seconds else 0.0
    console.print(
        f"{done.plans:,} plans with {done.activities:,} activities from {done.start} in {done.seconds:.1f} s "
        f"({rate:,.0f} plans/s); {len(done.skipped):,} patients skipped.",
        soft_wrap=True,
    )
    for skipped in done.skipped[:20]:
        console.print(f"  skipped patient {skipped.patient_id}: {skipped.reason}")
