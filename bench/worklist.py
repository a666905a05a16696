"""Benchmark: the case manager's work list served over HTTP, and a month of flows reconciled, at a million residents.

The population is a stratified run (``bench/data/care-run-<size>``, made by ``bench/care.py``'s ``stratified_run``
when absent). A base database on the PostgreSQL server at 127.0.0.1:5432 is built once with the bulk services and
bulk SQL and kept (``--rebuild`` builds it afresh): the run loaded, every eligible patient taken in charge (a
gestore per ATS, a signed pact: ``bench/care.py``), every PAI generated (``generate_all_plans``) and activated,
a case manager per ``PATIENTS_PER_CASE_MANAGER`` patients. Each run clones it into a fresh database and, in child
processes timed with ``bench/measure.py``:

1. reconciles the flows of March 2026, then of April 2026 (``reconcile_flows`` end to end: validation by the
   loader, executions, outcomes, transitions of care). The flows are the synthetic population's flows of March
   and April 2025 moved a year on (every resident of the region, as shipped), plus, for the enrolled patients,
   the services their plans asked for, most of them done around the planned day, some late, some never;
2. refreshes the work lists as of 20 April 2026 (``refresh_worklist``, the daily job);
3. serves the API with uvicorn (``--workers`` processes, a child process) and loads it for ``--seconds`` with
   ``--clients`` concurrent connections from ``wrk`` (Debian's package, installed here when missing; two threads),
   for as many case managers with their own tokens, each request carrying the next of them in turn: the first
   page of their own items, of the whole gestore's list, of one kind, and the next page after a cursor.
   Requests/s and p50/p95/p99 latency are printed; beside them ``GET /api/me`` under the same load (sign-in check
   and framework, no list) and the floor: the very SQL of each kind of page (the gestore's list, the own items,
   two kinds) run directly over one connection, sequentially. The database's CPU is that of the backends connected
   during the load (the server keeps its connections: a backend that ended meanwhile would go uncounted). The
   list is loaded twice: at saturation (each
   client sends its next request the moment the answer comes, so latency is mostly queueing for the CPU) and
   paced (each client pauses ``--think-ms`` on average between requests, as a person reading the page does).

Usage: ``python -m bench.worklist [--size 1000000] [--seconds 30] [--clients 20] [--workers 2] [--think-ms 500]
[--rebuild] [--keep] [--reuse-run]``; ``--keep`` then ``--reuse-run`` repeats only the HTTP loads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psutil
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from bench.care import AT, START, clone, prepare_database, stratified_run
from bench.measure import Measurement, measure
from bench.stratify import commit, machine
from presa.care.store import make_engine, upgrade
from tests.pgserver import PgServer, acquire, free_port

BASE = "presa_bench_worklist_{size}"
RUN = "presa_bench_worklist_{size}_run"
PATIENTS_PER_CASE_MANAGER = 400
MONTHS = (date(2026, 3, 1), date(2026, 4, 1))
REFRESH_ON = date(2026, 4, 20)
SECRET = "presa-bench-worklist-secret-key-0123456789"
TARGET_P95_MS = 50
console = Console(width=150)


# --- the base database ---------------------------------------------------------------------------------------


def _connect(server: PgServer, database: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(host=server.host, port=server.port, user=server.user, dbname=database, autocommit=autocommit)


def _exists(server: PgServer, database: str) -> bool:
    with _connect(server, server.maintenance_db) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None


def _ready(server: PgServer, database: str) -> bool:
    if not _exists(server, database):
        return False
    with _connect(server, database) as connection:
        row = connection.execute("SELECT to_regclass('bench_worklist_ready')").fetchone()
        return row is not None and row[0] is not None


def build_base(server: PgServer, size: int, data: Path, *, rebuild: bool) -> str:
    """The base database: taken in charge, plans generated and activated, case managers named (kept between runs)."""
    name = BASE.format(size=size)
    if not rebuild and _ready(server, name):
        console.print(f"base database {name} reused (--rebuild builds it afresh)")
        return name
    run = stratified_run(size, data)
    started = time.perf_counter()
    prepared = prepare_database(server, name, run)
    server.created.remove(name)  # kept for the next runs
    console.print(f"{size:,}: loaded and taken in charge {json.dumps({k: round(v, 1) for k, v in prepared.items()})}")
    engine = make_engine(server.url(name))
    try:
        from presa.care.service.bulk import generate_all_plans

        with Session(engine) as session, session.begin():
            report = generate_all_plans(session, author="bench", start=START, at=AT)
        console.print(f"{size:,}: {report.plans:,} plans, {report.activities:,} activities in {report.seconds:.0f} s")
        with Session(engine) as session, session.begin():
            managers = _case_managers(session, server, name)
        with engine.begin() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            with driver.cursor() as cursor:
                _activate_and_assign(cursor, managers)
                cursor.execute("CREATE TABLE bench_worklist_ready (built_at timestamptz)")
                cursor.execute("INSERT INTO bench_worklist_ready VALUES (now())")
    finally:
        engine.dispose()
    with _connect(server, name, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    console.print(f"{size:,}: base database {name} built in {time.perf_counter() - started:.0f} s")
    return name


def _case_managers(session: Session, server: PgServer, name: str) -> list[tuple[int, int, int]]:
    """Nurses with the case-manager role, one per PATIENTS_PER_CASE_MANAGER patients of each gestore:
    (gestore id, number within the gestore, practitioner id)."""
    from sqlalchemy import text

    from presa.care.service.organisations import assign_role, register_practitioner

    counts = session.execute(
        text(
            "SELECT g.id, g.code, count(e.id) FROM gestori g "
            "JOIN enrolment_episodes e ON e.gestore_id = g.id AND e.closed_on IS NULL GROUP BY g.id, g.code"
        )
    ).all()
    out = []
    for gestore_id, code, patients in counts:
        ats = code.removeprefix("COOP")
        for number in range(max(1, -(-patients // PATIENTS_PER_CASE_MANAGER))):
            nurse = register_practitioner(
                session,
                code=f"CM{ats}N{number:04d}",
                family_name=f"Infermiere{number}",
                given_name="Case",
                profession="nurse",
                ats_code=ats,
                author="bench",
            )
            assign_role(session, nurse.id, gestore_id, "case_manager", start_on=date(2025, 1, 1), author="bench")
            out.append((gestore_id, number, nurse.id))
    session.flush()
    return out


def _activate_and_assign(cursor: psycopg.Cursor[Any], managers: list[tuple[int, int, int]]) -> None:
    """Every draft plan active and its episode at ``pai_active``; each patient's case manager by id modulo."""
    at, day = AT, START
    cursor.execute("UPDATE care_plans SET status = 'active', activated_at = %(at)s, activated_by = 'bench'", {"at": at})
    cursor.execute(
        """
        INSERT INTO enrolment_events (episode_id, seq, from_state, to_state, effective_on, recorded_at, author, reason)
        SELECT e.id, 5, 'pact_signed', 'pai_active', %(day)s, %(at)s, 'bench', 'care plan ' || p.id || ' v1 activated'
        FROM enrolment_episodes e JOIN care_plans p ON p.episode_id = e.id WHERE e.state = 'pact_signed'
        """,
        {"day": day, "at": at},
    )
    cursor.execute(
        "UPDATE enrolment_episodes e SET state = 'pai_active', state_since = %(day)s WHERE state = 'pact_signed' "
        "AND EXISTS (SELECT 1 FROM care_plans p WHERE p.episode_id = e.id)",
        {"day": day},
    )
    cursor.execute("CREATE TEMP TABLE bench_cm (gestore_id int, number int, practitioner_id int)")
    with cursor.copy("COPY bench_cm FROM STDIN") as copy:
        for row in managers:
            copy.write_row(row)
    cursor.execute(
        """
        WITH sizes AS (SELECT gestore_id, count(*) AS n FROM bench_cm GROUP BY gestore_id)
        UPDATE enrolment_episodes e SET case_manager_id = c.practitioner_id
        FROM sizes s JOIN bench_cm c USING (gestore_id)
        WHERE e.gestore_id = s.gestore_id AND e.closed_on IS NULL AND c.number = e.patient_id % s.n
        """
    )


# --- a month of flows ----------------------------------------------------------------------------------------


def month_flows(server: PgServer, database: str, size: int, month: date, data: Path) -> Path:
    """The flows of ``month`` as shipped (Parquet): the synthetic region's flows of the same month a year before,
    moved on, plus the services the enrolled patients' plans asked for (kept under bench/data)."""
    directory = data / f"worklist-flows-{size}-{month:%Y-%m}"
    if (directory / "outpatient.parquet").is_file():
        return directory
    synth = next(p for p in (data / f"synth-{size}", data / f"care-synth-{size}") if (p / "synth.json").is_file())
    shutil.rmtree(directory, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix="presa-worklist-flows-", dir=data))
    try:
        planned = scratch / "planned.csv"
        end = (month + timedelta(days=32)).replace(day=1)
        with _connect(server, database) as connection, connection.cursor() as cursor, planned.open("wb") as out:
            query = sql.SQL(
                "COPY (SELECT p.resident_id, a.day, a.code, a.times_per_year FROM care_plans c "
                "JOIN care_plan_versions v ON v.plan_id = c.id AND v.version = c.current_version "
                "JOIN plan_calendar_activities a ON a.calendar_id = v.calendar_id "
                "JOIN patients p ON p.id = c.patient_id "
                "WHERE a.code IS NOT NULL AND a.day >= {} AND a.day < {}) TO STDOUT WITH (FORMAT csv, HEADER)"
            ).format(sql.Literal(month - timedelta(days=60)), sql.Literal(end + timedelta(days=30)))
            with cursor.copy(query) as copy:
                for block in copy:
                    out.write(block)
        directory.mkdir(parents=True)
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        con.execute("SELECT setseed(0.42)")
        shift = "INTERVAL 365 DAY"
        first, last = month - timedelta(days=365), end - timedelta(days=365)
        con.execute(f"COPY (SELECT * FROM '{synth}/residents.parquet') TO '{directory}/residents.parquet'")
        for table, column in (
            ("prescriptions", "dispensing_date"),
            ("discharges", "discharge_date"),
            ("er_visits", "visit_date"),
        ):
            moved = {
                "discharges": "* REPLACE (CAST(admission_date + INTERVAL 365 DAY AS DATE) AS admission_date, "
                f"CAST(discharge_date + {shift} AS DATE) AS discharge_date)",
            }.get(table, f"* REPLACE (CAST({column} + {shift} AS DATE) AS {column})")
            con.execute(
                f"COPY (SELECT {moved} FROM '{synth}/{table}.parquet' WHERE {column} >= DATE '{first}' "
                f"AND {column} < DATE '{last}') TO '{directory}/{table}.parquet'"
            )
        con.execute(f"COPY (SELECT * FROM '{synth}/exemptions.parquet' LIMIT 0) TO '{directory}/exemptions.parquet'")
        # The plans' services: 80 % done, most within a week of the day, some 3 to 8 weeks late; a third coded
        # by their DM 1996 stem (two segments), as regional flows still do.
        con.execute(
            f"""
            COPY (
              WITH planned AS (SELECT *, random() AS r, random() AS s, random() AS t FROM read_csv('{planned}')),
              done AS (
                SELECT resident_id,
                       CAST(day + CAST(CASE WHEN s < 0.85 THEN round((t - 0.5) * 14) ELSE 20 + round(t * 40) END
                                       AS INTEGER) AS DATE) AS service_date,
                       CASE WHEN r < 0.27 AND len(string_split(code, '.')) > 2
                            THEN array_to_string(string_split(code, '.')[1:2], '.') ELSE code END AS service_code
                FROM planned WHERE r < 0.8)
              SELECT resident_id, service_date, service_code, '08' AS discipline, 'STR321001' AS provider_id FROM done
              WHERE service_date >= DATE '{month}' AND service_date < DATE '{end}'
              UNION ALL
              SELECT resident_id, CAST(service_date + {shift} AS DATE), service_code, discipline, provider_id
              FROM '{synth}/outpatient.parquet' WHERE service_date >= DATE '{first}' AND service_date < DATE '{last}'
            ) TO '{directory}/outpatient.parquet'
            """
        )
        con.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


# --- the measured steps --------------------------------------------------------------------------------------


def run_reconcile(url: str, flows: Path, month: date) -> Measurement:
    at = datetime.combine((month + timedelta(days=32)).replace(day=5), datetime.min.time(), UTC).replace(hour=6)
    return measure(
        "import json, time; from datetime import datetime; from pathlib import Path; "
        "from sqlalchemy.orm import Session; from presa.care.store import make_engine; "
        "from presa.followup.service.reconcile import reconcile_flows; "
        "import psutil; from sqlalchemy import text; "
        f"engine = make_engine({url!r}); session = Session(engine); "
        "backend = psutil.Process(session.execute(text('SELECT pg_backend_pid()')).scalar()); session.commit(); "
        "me = psutil.Process(); cpu = lambda p: sum(p.cpu_times()[:2]); c0, b0 = cpu(me), cpu(backend); "
        "t = time.perf_counter()\n"
        "with session.begin():\n"
        f"    r = reconcile_flows(session, Path({str(flows)!r}), author='bench', "
        f"at=datetime.fromisoformat({at.isoformat()!r}))\n"
        "elapsed = time.perf_counter() - t\n"
        "print(json.dumps({'elapsed': elapsed, 'python_cpu': cpu(me) - c0, 'database_cpu': cpu(backend) - b0, "
        "'executions': r.executions, 'outcome_changes': r.outcome_changes, "
        "'transitions': r.transitions, 'rejected': r.rejected, 'covered_until': str(r.covered_until), "
        "'seconds': r.seconds}))"
    )


def run_refresh(url: str) -> Measurement:
    at = datetime.combine(REFRESH_ON, datetime.min.time(), UTC).replace(hour=4)
    return measure(
        "import json, time; from datetime import date, datetime; "
        "from sqlalchemy.orm import Session; from presa.care.store import make_engine; "
        "from presa.followup.service.worklist import refresh_worklist; "
        f"engine = make_engine({url!r}); session = Session(engine); session.connection(); session.commit(); "
        "import psutil; from sqlalchemy import text; "
        "backend = psutil.Process(session.execute(text('SELECT pg_backend_pid()')).scalar()); session.commit(); "
        "me = psutil.Process(); cpu = lambda p: sum(p.cpu_times()[:2]); c0, b0 = cpu(me), cpu(backend); "
        "t = time.perf_counter()\n"
        "with session.begin():\n"
        f"    r = refresh_worklist(session, today=date.fromisoformat({REFRESH_ON.isoformat()!r}), "
        f"at=datetime.fromisoformat({at.isoformat()!r}))\n"
        "elapsed = time.perf_counter() - t\n"
        "print(json.dumps({'elapsed': elapsed, 'python_cpu': cpu(me) - c0, 'database_cpu': cpu(backend) - b0, "
        "'created': r.created, 'reopened': r.reopened, 'closed': r.closed, "
        "'rescored': r.rescored}))"
    )


@dataclass(frozen=True)
class Client:
    username: str
    token: str
    gestore_id: int
    practitioner_id: int


def bench_accounts(url: str, clients: int) -> list[Client]:
    """One case-manager account per client, each for a different case manager (spread over the gestori)."""
    from sqlalchemy import select, text

    from presa.auth.models import Account
    from presa.auth.service import create_account, issue_token

    engine = make_engine(url)
    out = []
    try:
        with Session(engine) as session, session.begin():
            rows = session.execute(
                text(
                    "SELECT r.gestore_id, r.practitioner_id FROM practitioner_roles r "
                    "WHERE r.role = 'case_manager' ORDER BY r.practitioner_id % 97, r.practitioner_id LIMIT :n"
                ),
                {"n": clients},
            ).all()
            for number, (gestore_id, practitioner_id) in enumerate(rows):
                username = f"bench_cm{number:02d}"
                known = session.scalars(select(Account).where(Account.username == username)).first()
                if known is not None:  # a kept run database (--reuse-run): a new token for the same account
                    out.append(Client(username, issue_token(session, known.id).token, gestore_id, practitioner_id))
                    continue
                account = create_account(
                    session,
                    username=username,
                    display_name=username,
                    role="case_manager",
                    gestore_id=gestore_id,
                    practitioner_id=practitioner_id,
                    external_subject=f"bench|{username}",
                    author="bench",
                )
                out.append(Client(username, issue_token(session, account.id).token, gestore_id, practitioner_id))
    finally:
        engine.dispose()
    return out


FLOOR_PAGES = ("gestore's list", "own items", "two kinds")
"""The pages of the floor: three of the four requests the load sends (the fourth, the page after a cursor, is the
gestore's list again)."""


def floor_queries(url: str, clients: list[Client], repeat: int) -> dict[str, dict[str, float]]:
    """The SQL of one page of each client's lists, compiled by the service and run directly: ms per page, for each
    of :data:`FLOOR_PAGES` and for all of them together ("all")."""
    from presa.followup.service import worklist
    from presa.followup.store import ItemKind
    from presa.web.access import Visibility

    def filters(client: Client, page: str) -> worklist.WorkListFilter:
        if page == "own items":
            return worklist.WorkListFilter(gestore_id=client.gestore_id, owner_id=client.practitioner_id)
        if page == "two kinds":
            kinds = (ItemKind.OVERDUE, ItemKind.NOT_BOOKED)
            return worklist.WorkListFilter(gestore_id=client.gestore_id, kinds=kinds)
        return worklist.WorkListFilter(gestore_id=client.gestore_id)

    engine = make_engine(url)
    timings: dict[str, list[float]] = {page: [] for page in FLOOR_PAGES}
    try:
        with Session(engine) as session:
            statements = []
            for client in clients:
                for page in FLOOR_PAGES:
                    wanted = filters(client, page)
                    scope = Visibility("gestore", {"scope_gestore": client.gestore_id})
                    query = worklist.row_page_statement(wanted, after=False, scope=scope, dialect="postgresql")
                    values = worklist.row_page_values(wanted, datetime.now(UTC), 50, None, "postgresql")
                    query = query.params({**values, **scope.values})
                    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
                    statements.append((page, str(compiled)))
            connection = session.connection().connection.driver_connection
            assert connection is not None
            with connection.cursor() as cursor:
                for _, statement in statements:  # warm
                    cursor.execute(statement).fetchall()
                for _ in range(repeat):
                    for page, statement in statements:
                        started = time.perf_counter()
                        cursor.execute(statement).fetchall()
                        timings[page].append((time.perf_counter() - started) * 1000)
            session.rollback()
    finally:
        engine.dispose()
    out = {page: _figures(values) for page, values in timings.items()}
    out["all"] = _figures([v for values in timings.values() for v in values])
    return out


def _figures(timings: list[float]) -> dict[str, float]:
    timings = sorted(timings)
    return {
        "p50": statistics.median(timings),
        "p95": timings[int(len(timings) * 0.95)],
        "p99": timings[int(len(timings) * 0.99)],
        "per_s": 1000 / statistics.mean(timings),
    }


WRK_SCRIPT = """
local tokens = {{{tokens}}}
local threads = {threads}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("first", counter)
end
function init(args)
  -- this thread's clients: every threads-th token from its own; each request goes to the next of them in turn
  mine = {{}}
  for i = first, #tokens, threads do table.insert(mine, tokens[i]) end
  cursor = nil
  step = 0
  mode = "{mode}"
end
function request()
  step = step + 1
  local token = mine[(step - 1) % #mine + 1]
  local headers = {{["Authorization"] = "Bearer " .. token}}
  if mode == "me" then
    return wrk.format("GET", "/api/me", headers)
  end
  local which = math.floor((step - 1) / #mine) % 4
  local path
  if which == 0 and cursor then
    path = "/api/work-items?after=" .. cursor
  elseif which == 1 then
    path = "/api/work-items?mine=true"
  elseif which == 2 then
    path = "/api/work-items?kind=overdue&kind=not_booked"
  else
    path = "/api/work-items"
  end
  return wrk.format("GET", path, headers)
end
function response(status, headers, body)
  if status ~= 200 then
    errors_seen = (errors_seen or 0) + 1
  end
  -- the cursor closes the answer: look for it in its last bytes, not in the whole page
  local found = string.match(body, '"next_cursor":"([%w_-]+)"', -160)
  if found then cursor = found end
end
{pacing}
function done(summary, latency, requests)
  io.write(string.format('{{"requests": %d, "seconds": %.3f, "errors": %d, "non2xx": %d, ' ..
    '"p50": %.3f, "p95": %.3f, "p99": %.3f, "max": %.3f}}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    console.print("installing wrk (Debian package)")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:  # pragma: no cover - the package puts it on PATH
        raise RuntimeError("wrk is not installed")
    return found


@contextmanager
def served(url: str, workers: int) -> Iterator[tuple[str, int]]:
    """uvicorn with the app, in a child process (its own process group), on a free port of 127.0.0.1."""
    port = free_port()
    env = {**os.environ, "PRESA_DATABASE_URL": url, "PRESA_SECRET_KEY": SECRET}
    command = [sys.executable, "-m", "uvicorn", "--factory", "presa.web.app:create_app", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    child = subprocess.Popen(command, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("the API server did not start")
            time.sleep(0.2)
        yield base, child.pid
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def cpu_seconds(server_pid: int, database: str) -> dict[int, float]:
    """CPU seconds used so far by each process serving the bench: the server's process tree and the PostgreSQL
    backends connected to the database (same machine)."""
    pids = [server_pid, *(c.pid for c in psutil.Process(server_pid).children(recursive=True))]
    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres") as connection:
        pids += [
            pid for (pid,) in connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))
        ]
    used = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        used[pid] = times.user + times.system
    return used


WRK_THREADS = 2
"""wrk's threads: each drives several connections (the clients) with its event loop, as its manual advises; one
thread per client cost the server a share of the 2 cores."""
PACING = """
function delay()
  return math.random({low}, {high})
end
"""


def load(
    wrk: str,
    base: str,
    clients: list[Client],
    seconds: int,
    mode: str,
    accounted: tuple[int, str],
    think_ms: int = 0,
) -> dict[str, Any]:
    """``wrk`` for ``seconds``; its figures, the load average, and the CPU milliseconds each request cost the server
    and the database (whatever else the machine runs). With ``think_ms`` each client waits between its requests
    (uniformly 0.5 to 1.5 times that long), as a person reading the page does; without, it sends the next request
    as soon as the answer comes (saturation: the latency is then mostly queueing for the CPU)."""
    pacing = PACING.format(low=think_ms // 2, high=think_ms * 3 // 2) if think_ms else ""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        tokens = ", ".join(json.dumps(c.token) for c in clients)
        script.write(WRK_SCRIPT.format(tokens=tokens, threads=WRK_THREADS, mode=mode, pacing=pacing))
    try:
        load_before = os.getloadavg()[0]
        before = cpu_seconds(*accounted)
        client_before = _children_cpu()
        result = subprocess.run(
            [wrk, "-t", str(WRK_THREADS), "-c", str(len(clients)), "-d", f"{seconds}s", "--timeout", "10s",
             "-s", script.name, base],
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip
        after = cpu_seconds(*accounted)
        client = _children_cpu() - client_before
        figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        server = set(cpu_seconds(accounted[0], "-"))
        spent = {pid: used - before.get(pid, 0.0) for pid, used in after.items()}
        requests = max(1, figures["requests"])
        figures["server_cpu_ms"] = 1000 * sum(v for k, v in spent.items() if k in server) / requests
        figures["database_cpu_ms"] = 1000 * sum(v for k, v in spent.items() if k not in server) / requests
        figures["client_cpu_ms"] = 1000 * client / requests
        figures["load"] = load_before
        figures["load_after"] = os.getloadavg()[0]
        return figures
    finally:
        Path(script.name).unlink()


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (wrk's, once it ended)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


# --- main ----------------------------------------------------------------------------------------------------


def reconciled_run(
    server: PgServer,
    base: str,
    flows: list[Path],
    size: int,
    steps: list[tuple[str, Measurement, float]],
    *,
    keep: bool,
) -> str:
    """A fresh run database cloned from the base: the two months reconciled and the work lists refreshed, each step
    timed into ``steps``; its URL."""
    url = clone(server, base, RUN.format(size=size))
    engine = make_engine(url)
    try:
        upgrade(engine)  # a base built by an older commit
    finally:
        engine.dispose()
    if keep:
        server.created.remove(RUN.format(size=size))
    for month, directory in zip(MONTHS, flows, strict=True):
        before = os.getloadavg()[0]
        step = run_reconcile(url, directory, month)
        console.print(f"reconcile {month:%B %Y}: {json.dumps(step.result)} (load average before {before:.2f})")
        steps.append((f"reconcile {month:%B %Y}", step, before))
    before = os.getloadavg()[0]
    step = run_refresh(url)
    console.print(f"refresh on {REFRESH_ON}: {json.dumps(step.result)} (load average before {before:.2f})")
    steps.append((f"refresh work lists on {REFRESH_ON}", step, before))
    with _connect(server, RUN.format(size=size), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        counts = connection.execute(
            "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM care_plans WHERE status = 'active'), "
            "(SELECT count(*) FROM care_plans c JOIN care_plan_versions v "
            "ON v.plan_id = c.id AND v.version = c.current_version "
            "JOIN plan_calendar_activities a ON a.calendar_id = v.calendar_id), "
            "(SELECT count(*) FROM followup_work_items WHERE status <> 'closed'), "
            "(SELECT count(*) FROM followup_executions), "
            "(SELECT count(*) FROM followup_activity_outcomes)"
        ).fetchone()
    assert counts is not None
    console.print(
        f"database: {counts[0]:,} patients, {counts[1]:,} active plans, {counts[2]:,} planned activities, "
        f"{counts[3]:,} open work items, {counts[4]:,} executions, {counts[5]:,} activity outcomes"
    )
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="residents of the population")
    parser.add_argument("--data", type=Path, default=Path("bench/data"), help="where populations are kept")
    parser.add_argument("--seconds", type=int, default=30, help="length of the load")
    parser.add_argument("--clients", type=int, default=20, help="concurrent connections (one case manager each)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--think-ms", type=int, default=500, help="a paced client's mean pause between requests (second load)"
    )
    parser.add_argument("--rebuild", action="store_true", help="build the base database afresh")
    parser.add_argument("--keep", action="store_true", help="keep the run's database afterwards")
    parser.add_argument("--prepare", action="store_true", help="only build the base database and the flows")
    parser.add_argument(
        "--reuse-run",
        action="store_true",
        help="serve the run database a --keep run left (reconciled and refreshed): only the HTTP loads",
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    server = acquire("external")
    try:
        console.print(f"machine: {machine()}; commit {commit()}; load average {os.getloadavg()}")
        with _connect(server, server.maintenance_db) as connection:
            settings = {
                name: connection.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchall()[0][0]
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_wal_size")
            }
        console.print(f"PostgreSQL: {server.origin}; {json.dumps(settings)}")
        base = build_base(server, args.size, args.data, rebuild=args.rebuild)
        flows = [month_flows(server, base, args.size, month, args.data) for month in MONTHS]
        if args.prepare:
            return
        steps: list[tuple[str, Measurement, float]] = []
        if args.reuse_run:
            url = server.url(RUN.format(size=args.size))
            console.print(f"run database {RUN.format(size=args.size)} reused: reconciliation and refresh not run")
            engine = make_engine(url)
            try:
                upgrade(engine)  # kept by an older commit
            finally:
                engine.dispose()
        else:
            url = reconciled_run(server, base, flows, args.size, steps, keep=args.keep)
        clients = bench_accounts(url, args.clients)
        floors = floor_queries(url, clients, repeat=20)
        for page, floor in floors.items():
            rounded = {k: round(v, 2) for k, v in floor.items()}
            console.print(f"floor (one page's SQL, sequential), {page}: {json.dumps(rounded)}")
        database = RUN.format(size=args.size)
        with served(url, args.workers) as (base_url, pid):
            accounted = (pid, database)
            # warm up: each way to the database opens its connections (the list its own, presa.web.reads)
            load(wrk, base_url, clients, 5, "list", accounted)
            load(wrk, base_url, clients, 5, "me", accounted)
            me = load(wrk, base_url, clients, min(args.seconds, 15), "me", accounted)
            console.print(f"GET /api/me: {json.dumps(me)}")
            listed = load(wrk, base_url, clients, args.seconds, "list", accounted)
            console.print(f"GET /api/work-items: {json.dumps(listed)}")
            paced = load(wrk, base_url, clients, args.seconds, "list", accounted, think_ms=args.think_ms)
            console.print(f"GET /api/work-items, paced: {json.dumps(paced)}")
        table = Table(title=f"Follow-up at {args.size:,} residents: reconciliation, refresh, the work list over HTTP")
        for column in ("step", "wall s", "CPU s (Python + PostgreSQL)", "peak", "load"):
            table.add_column(column, justify="right")
        for name, measured, before in steps:
            r = measured.result
            table.add_row(
                name,
                f"{r['elapsed']:.1f}",
                f"{r['python_cpu']:.1f} + {r['database_cpu']:.1f}",
                f"{measured.peak_gb:.2f} GB",
                f"{before:.1f}",
            )
        console.print(table)
        http = Table(title=f"HTTP: {args.clients} clients, {args.workers} uvicorn workers, wrk on loopback")
        columns = ("what", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors", "CPU ms/request", "wrk's", "load")
        for column in columns:
            http.add_column(column, justify="right")
        rows = (
            ("GET /api/work-items", listed),
            (f"GET /api/work-items, ~{args.think_ms} ms pauses", paced),
            ("GET /api/me", me),
        )
        for name, figures in rows:
            http.add_row(
                name,
                f"{figures['requests'] / figures['seconds']:,.0f}",
                f"{figures['p50']:.1f}",
                f"{figures['p95']:.1f}",
                f"{figures['p99']:.1f}",
                str(figures["non2xx"] + figures["errors"]),
                f"{figures['server_cpu_ms']:.1f} + {figures['database_cpu_ms']:.1f} db",
                f"{figures['client_cpu_ms']:.2f}",
                f"{figures['load']:.1f}",
            )
        for page, floor in floors.items():
            http.add_row(
                f"floor: one page's SQL, {page}", f"{floor['per_s']:,.0f}", f"{floor['p50']:.1f}",
                f"{floor['p95']:.1f}", f"{floor['p99']:.1f}", "0", "", "", "",
            )  # fmt: skip
        for name, figures in rows[:2]:
            target = "met" if figures["p95"] < TARGET_P95_MS else "NOT met"
            console.print(f"{name}: p95 {figures['p95']:.1f} ms, target of {TARGET_P95_MS} ms {target}")
        cpu_ms = listed["server_cpu_ms"] + listed["database_cpu_ms"] + listed["client_cpu_ms"]
        cores = psutil.cpu_count() or 1
        console.print(
            f"capacity: {cpu_ms:.1f} ms of CPU per work-list request on {cores} cores, wrk's included: at most "
            f"{1000 * cores / cpu_ms:,.0f} requests/s, so {args.clients} clients without pauses wait about "
            f"{args.clients * cpu_ms / cores:.0f} ms each in the queue"
        )
        console.print(http)
        console.print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
