"""Benchmark: generating and storing the PAI of every chronic patient of a region, against the storage floor.

For each size it takes a stratified population (``bench/data/care-run-<size>``, stratified once from
``store-<size>`` or ``synth-<size>`` when they are there, else from a population made with ``presa synth``), loads it
into a fresh PostgreSQL database with ``load_run``, and takes every eligible patient in charge with bulk SQL: a
gestore per ATS, an episode at ``pact_signed``, a signed care pact with its scopes and signatures. None of this is
measured. The prepared database is then cloned (``CREATE DATABASE ... TEMPLATE``) for each measured step, each in a
fresh process, with the wall time and the peak memory of its process tree (interpreter start-up and imports are not
counted):

- plans: ``generate_all_plans`` end to end - candidates query, merge, calendar, storage, commit;
- floor: the very rows that step stored (plans, calendars and their activities, versions, audit rows), dumped to
  files after it and copied back into a clone with plain COPY in one transaction, the foreign keys dropped before
  and added back after as the plans step does for a region (``presa.care.service.bulk.BULK_FOREIGN_KEYS``) - the cost
  of storing them and nothing else;
- optionally (``--uncached``) the plans step again with the per-combination cache off.

(Until migration 0012 each version stored its own activities; ``--layouts``, at commit 108446e, measured the
layouts that could replace them, and the shared calendars are the one that was adopted: docs/PERFORMANCE.md.)

The server is a throw-away cluster made like the tests' (tests/pgserver.py: fsync off), restarted with more shared
buffers and fewer checkpoints for bulk loads (``BULK_SETTINGS``); ``--server throwaway`` keeps the tests' settings,
``--server external`` uses the one on 127.0.0.1:5432.

Usage: ``python -m bench.care [--sizes 100000,1000000] [--server bulk] [--uncached]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.schema import AddConstraint, DropConstraint

from bench.measure import Measurement, measure
from bench.stratify import commit, machine
from presa.care.service.bulk import AUDIT_COLUMNS, BULK_FOREIGN_KEYS, PLAN_COLUMNS, VERSION_COLUMNS
from presa.care.service.organisations import assign_role, create_gestore, register_practitioner
from presa.care.service.population import load_run
from presa.care.store import make_engine, upgrade
from presa.care.store.calendars import ACTIVITY_COLUMNS
from tests.pgserver import PgServer, acquire, find_initdb

REFERENCE_DATE = date(2025, 12, 31)
START = date(2026, 3, 2)
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ATS_CODES = ("321", "322", "323", "324", "325", "326", "327", "328")
SCOPES = ("care", "data_sharing", "reminders_sms", "reminders_email", "telemonitoring")
DUMPED = {
    "care_plans": ("care_plans", PLAN_COLUMNS, "ORDER BY id"),
    "plan_calendars": ("plan_calendars", ("id", "digest", "activities"), "ORDER BY id"),
    "plan_calendar_activities": ("plan_calendar_activities", ACTIVITY_COLUMNS, "ORDER BY calendar_id, position"),
    "care_plan_versions": ("care_plan_versions", VERSION_COLUMNS, "ORDER BY id"),
    "audit_events": ("audit_events", AUDIT_COLUMNS, "WHERE action = 'generate' ORDER BY id"),
}

console = Console(width=150)

# --- the population ------------------------------------------------------------------------------------------


def stratified_run(size: int, data: Path) -> Path:
    """``care-run-<size>``: stratified once, from the validated store or the raw flows of that size if present."""
    run = data / f"care-run-{size}"
    if (run / "run.json").is_file():
        return run
    for candidate in (data / f"store-{size}", data / f"synth-{size}", data / f"care-synth-{size}"):
        if (candidate / "manifest.json").is_file() or (candidate / "synth.json").is_file():
            flows = candidate
            break
    else:
        flows = data / f"care-synth-{size}"
        shutil.rmtree(flows, ignore_errors=True)
        step = measure(
            "from pathlib import Path; from presa.synth import SynthConfig, generate; "
            f"generate(SynthConfig(residents={size}, seed=1), Path('{flows}')); print('{{}}')"
        )
        console.print(f"{size:,} residents synthesised in {step.seconds:.1f} s")
    step = measure(
        "from datetime import date; from pathlib import Path; from presa.stratify.catalog import load_catalog; "
        "from presa.stratify.pipeline import run_stratification; "
        f"run_stratification(Path('{flows}'), Path('{run}'), load_catalog(), date.fromisoformat('{REFERENCE_DATE}'),"
        " replace=True); print('{}')"
    )
    console.print(f"{size:,} residents stratified from {flows} in {step.seconds:.1f} s")
    return run


def prepare_database(server: PgServer, name: str, run: Path) -> dict[str, Any]:
    """A database holding the run, every eligible patient at ``pact_signed`` with a signed pact; its figures."""
    url = server.create_database(name)
    engine = make_engine(url)
    try:
        started = time.perf_counter()
        upgrade(engine)
        with Session(engine) as session, session.begin():
            loaded = load_run(session, run, author="bench", at=AT, today=START)
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            managers = _gestori(session)
        with engine.begin() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            with driver.cursor() as cursor:
                _take_in_charge(cursor, managers)
        enrol_seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    with _connect(server, name, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        [(pacts,)] = connection.execute("SELECT count(*) FROM care_pacts WHERE status = 'signed'").fetchall()
    return {
        "population": loaded.population,
        "eligible": loaded.eligible,
        "pacts": pacts,
        "load_s": load_seconds,
        "enrol_s": enrol_seconds,
    }


def _gestori(session: Session) -> dict[str, tuple[int, int]]:
    """One gestore per ATS with one clinical manager: ATS code → (gestore id, practitioner id)."""
    managers = {}
    for ats in ATS_CODES:
        gestore = create_gestore(
            session,
            code=f"COOP{ats}",
            name=f"Cooperativa MMG {ats}",
            kind="gp_cooperative",
            ats_codes=(ats,),
            accredited_from=date(2025, 1, 1),
            accredited_until=None,
            capacity=10_000_000,
            phone="02 0000000",
            email=f"coop{ats}@example.org",
            author="bench",
            at=AT,
        )
        gp = register_practitioner(
            session,
            code=f"CM{ats}",
            family_name="Rossi",
            given_name="Maria",
            profession="gp",
            ats_code=ats,
            author="bench",
        )
        assign_role(session, gp.id, gestore.id, "clinical_manager", start_on=date(2025, 1, 1), author="bench")
        managers[ats] = (gestore.id, gp.id)
    session.flush()
    return managers


def _take_in_charge(cursor: psycopg.Cursor[Any], managers: dict[str, tuple[int, int]]) -> None:
    """Every open eligible episode to ``pact_signed``, with its history, a signed pact, its scopes and signatures."""
    cursor.execute("CREATE TEMP TABLE bench_managers (ats_code text, gestore_id int, manager_id int)")
    with cursor.copy("COPY bench_managers FROM STDIN") as copy:
        for ats, (gestore_id, manager_id) in managers.items():
            copy.write_row((ats, gestore_id, manager_id))
    at, day = AT, START
    cursor.execute(
        """
        UPDATE enrolment_episodes e SET state = 'pact_signed', state_since = %(day)s,
               gestore_id = m.gestore_id, clinical_manager_id = m.manager_id
        FROM patients p JOIN bench_managers m ON m.ats_code = p.ats_code
        WHERE p.id = e.patient_id AND e.closed_on IS NULL AND e.state = 'eligible'
        """,
        {"day": day},
    )
    cursor.execute(
        """
        INSERT INTO enrolment_events (episode_id, seq, from_state, to_state, effective_on, recorded_at, author, reason)
        SELECT e.id, s.seq, s.from_state, s.to_state, %(day)s, %(at)s, 'bench', s.reason
        FROM enrolment_episodes e
        CROSS JOIN (VALUES (2, 'eligible', 'invited', 'invitation letter'),
                           (3, 'invited', 'gestore_chosen', 'the patient''s choice'),
                           (4, 'gestore_chosen', 'pact_signed', 'care pact v1 signed'))
             AS s(seq, from_state, to_state, reason)
        WHERE e.state = 'pact_signed'
        """,
        {"day": day, "at": at},
    )
    cursor.execute(
        """
        INSERT INTO care_pacts (episode_id, patient_id, gestore_id, clinical_manager_id, version, status,
                                drafted_at, drafted_by, signed_at)
        SELECT id, patient_id, gestore_id, clinical_manager_id, 1, 'signed', %(at)s, 'bench', %(at)s
        FROM enrolment_episodes WHERE state = 'pact_signed'
        """,
        {"at": at},
    )
    cursor.execute(
        "INSERT INTO care_pact_scopes (pact_id, scope) SELECT p.id, s.scope FROM care_pacts p "
        "CROSS JOIN unnest(%(scopes)s::text[]) AS s(scope)",
        {"scopes": list(SCOPES)},
    )
    cursor.execute(
        """
        INSERT INTO care_pact_signatures (pact_id, signer_role, signer_name, signed_at, recorded_at, recorded_by)
        SELECT p.id, r.role, r.name, %(at)s, %(at)s, 'bench' FROM care_pacts p
        CROSS JOIN (VALUES ('patient', 'Paziente'), ('clinical_manager', 'Maria Rossi')) AS r(role, name)
        """,
        {"at": at},
    )


# --- the measured steps --------------------------------------------------------------------------------------


def run_plans(url: str, *, cache: bool) -> Measurement:
    """``generate_all_plans`` in one transaction, committed; templates are loaded inside the measured time."""
    return measure(
        "import json, time; from datetime import date; from sqlalchemy.orm import Session; "
        "from presa.care.store import make_engine; from presa.care.service.bulk import generate_all_plans; "
        f"engine = make_engine({url!r}); session = Session(engine); session.connection(); session.commit(); "
        "t = time.perf_counter()\n"
        "with session.begin():\n"
        f"    r = generate_all_plans(session, author='bench', start=date.fromisoformat('{START}'), cache={cache})\n"
        "elapsed = time.perf_counter() - t\n"
        "print(json.dumps({'elapsed': elapsed, 'plans': r.plans, 'activities': r.activities, "
        "'distinct': r.distinct_plans, 'chunks': r.chunks, 'skipped': len(r.skipped), 'inner_s': r.seconds}))"
    )


def dump_rows(server: PgServer, database: str, directory: Path) -> dict[str, int]:
    """The rows the plans step stored, in COPY text format, one file per table; their counts."""
    counts = {}
    with _connect(server, database) as connection, connection.cursor() as cursor:
        for name, (table, columns, where) in DUMPED.items():
            query = sql.SQL("COPY (SELECT {} FROM {} " + where + ") TO STDOUT").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(table)
            )
            rows = 0
            with (directory / f"{name}.copy").open("wb") as out, cursor.copy(query) as copy:
                for block in copy:
                    out.write(block)
                    rows += bytes(block).count(b"\n")
            counts[name] = rows
    return counts


Load = list[tuple[str, list[str], str]]
"""COPY steps: table, columns, file."""


def floor_loads(directory: Path) -> Load:
    return [(table, list(columns), str(directory / f"{name}.copy")) for name, (table, columns, _) in DUMPED.items()]


def run_copy(url: str, loads: Load, before: Sequence[str] = (), after: Sequence[str] = ()) -> Measurement:
    """Plain COPY of files into tables in one transaction, committed, between ``before`` and ``after``."""
    return measure(
        "import json, time, psycopg; from psycopg import sql; "
        f"c = psycopg.connect({_libpq(url)!r}); loads = {loads!r}\n"
        "c.commit(); t = time.perf_counter()\n"
        "with c.transaction():\n"
        f"    for statement in {list(before)!r}: c.execute(statement)\n"
        "    for table, columns, path in loads:\n"
        "        q = sql.SQL('COPY {} ({}) FROM STDIN').format(sql.Identifier(table), "
        "sql.SQL(', ').join(map(sql.Identifier, columns)))\n"
        "        with c.cursor() as cur, cur.copy(q) as copy, open(path, 'rb') as f:\n"
        "            while block := f.read(1 << 20): copy.write(block)\n"
        f"    for statement in {list(after)!r}: c.execute(statement)\n"
        "print(json.dumps({'elapsed': time.perf_counter() - t}))"
    )


def references_checked_once() -> tuple[list[str], list[str]]:
    """The foreign keys ``generate_all_plans`` drops and adds back for a region's load, as SQL."""
    dialect = create_engine("postgresql+psycopg://").dialect  # not connected: only to write the SQL
    return (
        [str(DropConstraint(fk).compile(dialect=dialect)) for fk in BULK_FOREIGN_KEYS],
        [str(AddConstraint(fk).compile(dialect=dialect)) for fk in BULK_FOREIGN_KEYS],
    )


# --- plumbing ------------------------------------------------------------------------------------------------


def _connect(server: PgServer, database: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(host=server.host, port=server.port, user=server.user, dbname=database, autocommit=autocommit)


def _libpq(url: str) -> str:
    """A libpq connection string from a SQLAlchemy URL."""
    rest = url.split("://", 1)[1]
    credentials, location = rest.split("@", 1)
    hostport, database = location.split("/", 1)
    host, port = hostport.split(":")
    return f"host={host} port={port} user={credentials} dbname={database}"


def clone(server: PgServer, template: str, name: str) -> str:
    server.drop_database(name)
    with _connect(server, server.maintenance_db, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    server.created.append(name)
    return server.url(name)


BULK_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}
"""``--server bulk``: a throw-away cluster as the tests make it, with memory and checkpoints set for bulk loads."""


@contextmanager
def database_server(mode: str) -> Iterator[PgServer]:
    server = acquire("throwaway" if mode == "bulk" else mode)
    try:
        if mode == "bulk":
            _restart_with(server, BULK_SETTINGS)
        yield server
    finally:
        server.close()


def _restart_with(server: PgServer, settings: dict[str, str]) -> None:
    """Write ``settings`` with ALTER SYSTEM and restart the (throw-away) server with them."""
    with _connect(server, server.maintenance_db, autocommit=True) as connection:
        for name, value in settings.items():
            connection.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        [(data,)] = connection.execute("SHOW data_directory").fetchall()
    initdb = find_initdb()
    assert initdb is not None  # the throw-away cluster was made with it
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    log = Path(str(data)).parent / "server.log"
    command = [*as_server, str(initdb.parent / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-m", "fast"]
    subprocess.run([*command, "restart"], check=True, capture_output=True, timeout=120)


def bench_size(server: PgServer, size: int, run: Path, data: Path, *, uncached: bool) -> list[Step]:
    """The measured steps of one population size."""
    template = f"presa_bench_care_{size}"
    prepared = prepare_database(server, template, run)
    console.print(f"{size:,}: prepared {json.dumps({k: round(v, 1) for k, v in prepared.items()})}")

    def step(name: str, database: str, action: Callable[[str], Measurement]) -> Measurement:
        load = os.getloadavg()[0]
        measured = action(clone(server, template, database))
        console.print(f"{size:,}: {name}: {json.dumps(measured.result)} (load average before: {load:.2f})")
        steps.append(Step(name, measured, load))
        return measured

    steps: list[Step] = []
    step("plans", f"{template}_plans", lambda url: run_plans(url, cache=True))
    with tempfile.TemporaryDirectory(prefix="presa-care-floor-", dir=data) as scratch:
        directory = Path(scratch)
        counts = dump_rows(server, f"{template}_plans", directory)
        server.drop_database(f"{template}_plans")
        console.print(f"{size:,}: rows stored {json.dumps(counts)}")
        before, after = references_checked_once()
        floor = "floor: COPY of those rows, foreign keys checked once"
        step(floor, f"{template}_floor", lambda url: run_copy(url, floor_loads(directory), before, after))
        server.drop_database(f"{template}_floor")
    if uncached:
        step("plans, no cache", f"{template}_uncached", lambda url: run_plans(url, cache=False))
        server.drop_database(f"{template}_uncached")
    server.drop_database(template)
    return steps


@dataclass(frozen=True)
class Step:
    name: str
    measurement: Measurement
    load: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000", help="comma-separated population sizes (residents)")
    parser.add_argument("--data", type=Path, default=Path("bench/data"), help="where populations are kept")
    parser.add_argument(
        "--server",
        choices=("bulk", "throwaway", "external", "auto"),
        default="bulk",
        help="bulk: a throw-away cluster with BULK_SETTINGS (default); throwaway: as the tests make it; "
        "external: the server on 127.0.0.1:5432",
    )
    parser.add_argument("--uncached", action="store_true", help="also measure the plans step without the cache")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = {size: stratified_run(size, args.data) for size in sizes}
    with database_server(args.server) as server:
        with _connect(server, server.maintenance_db) as connection:
            settings = {
                name: connection.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchall()[0][0]
                for name in (
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "shared_buffers",
                    "max_wal_size",
                    "work_mem",
                )
            }
        console.print(f"machine: {machine()}; commit {commit()}")
        console.print(f"PostgreSQL: {server.origin}; {json.dumps(settings)}")
        table = Table(title="Care plans: generate_all_plans end to end, and plain COPY of the same rows")
        for column in ("residents", "plans", "activities", "step", "wall s", "plans/s", "activities/s", "peak", "load"):
            table.add_column(column, justify="right")
        for size in sizes:
            steps = bench_size(server, size, runs[size], args.data, uncached=args.uncached)
            plans = steps[0].measurement.result
            for step in steps:
                elapsed = step.measurement.result["elapsed"]
                table.add_row(
                    f"{size:,}",
                    f"{plans['plans']:,}",
                    f"{plans['activities']:,}",
                    step.name,
                    f"{elapsed:.1f}",
                    f"{plans['plans'] / elapsed:,.0f}",
                    f"{plans['activities'] / elapsed:,.0f}",
                    f"{step.measurement.peak_gb:.2f} GB",
                    f"{step.load:.1f}",
                )
            floor = steps[1].measurement.result["elapsed"]
            console.print(f"{size:,}: plans step / floor = {plans['elapsed'] / floor:.2f}x")
        console.print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        console.print(table)


if __name__ == "__main__":
    main()
