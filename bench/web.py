"""Benchmark: server time of the web pages with a region's population in the care store.

It takes the stratified population of ``bench/data/care-run-<size>`` (made by ``bench/care.py`` from
``store-<size>`` if missing; never deleted), prepares a PostgreSQL database the way ``bench/care.py`` does - the run
loaded with ``load_run``, every eligible patient taken in charge at ``pact_signed`` with a signed pact, one gestore
and one clinical manager per ATS - and adds, through the services, a GP of that ATS with the busiest list (their
own practitioner record and account, their patients' plans generated and most of them activated), a gestore
administrator and the per-ATS clinical manager's account (a list of a whole ATS: the worst case). None of this is
measured.

The app is then served by uvicorn on a free port and each page is requested over loopback, signed in as a browser
is; the time is the server's own, from the ``Server-Timing`` header the pages send (the wall time on the client is
printed beside it). Each page is asked ``--repeat`` times, over different patients for the patient's page, after a
warm-up; the table gives p50 and p95 in milliseconds. Target: under 200 ms for the GP's list and a patient's page.

Usage: ``python -m bench.web [--size 1000000] [--server throwaway|external|auto] [--repeat 40] [--keep]``.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.care import database_server, prepare_database, stratified_run
from bench.stratify import commit, machine
from presa.auth.models import Account
from presa.auth.service import create_account
from presa.care.service import activate_plan, generate_plan
from presa.care.service.organisations import assign_role, register_practitioner
from presa.care.store import make_engine
from presa.care.store.models import CarePlanRecord, Episode, Gestore, Patient, Practitioner
from tests.liveserver import LiveServer
from tests.pgserver import PgServer

console = Console(width=150)
PASSWORD = "bench web pages password"
TARGET_MS = 200.0
TIMING = re.compile(r"app;dur=([0-9.]+)")


@dataclass
class Site:
    url: str
    gp_code: str
    gp_patients: list[int]
    gp_plans: list[int]
    residents: int
    patients: int
    deep: int
    """A patient id some 5,000 patients into ATS 321: the whole-area list's page 100 starts after it."""


def prepared_population(server: PgServer, name: str, run: Path, *, reuse: bool) -> int:
    """The bench/care.py database (kept from an earlier ``--keep`` run when ``reuse``); its population."""
    if reuse:
        try:
            with _connect(server, name) as connection:
                found = connection.execute("SELECT max(population) FROM stratification_runs").fetchone()
            if found and isinstance(found[0], int):
                console.print(f"reusing {name}")
                return found[0]
        except psycopg.Error:
            pass
    started = time.perf_counter()
    prepared = prepare_database(server, name, run)
    console.print(f"prepared {name} in {time.perf_counter() - started:.0f} s: {prepared}")
    return int(prepared["population"])


def _connect(server: PgServer, name: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(host=server.host, port=server.port, user=server.user, dbname=name, autocommit=True)


def prepare(server: PgServer, name: str, run: Path, *, reuse: bool) -> Site:
    """The bench/care.py database, plus the GP with the busiest list of ATS 321 and the accounts (made once)."""
    population = prepared_population(server, name, run, reuse=reuse)
    url = server.url(name)
    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            if session.scalar(select(Account.id).where(Account.username == "gp-bench")) is None:
                _add_gp(session)
            gp = session.scalars(
                select(Practitioner)
                .join(Account, Account.practitioner_id == Practitioner.id)
                .where(Account.username == "gp-bench")
            ).one()
            gp_code = gp.code
            patients = list(
                session.scalars(
                    select(Patient.id)
                    .join(Episode, Episode.patient_id == Patient.id)
                    .where(Patient.gp_id == gp_code, Episode.closed_on.is_(None))
                    .order_by(Patient.id)
                )
            )
            plans = list(
                session.scalars(
                    select(CarePlanRecord.id).where(CarePlanRecord.patient_id.in_(patients)).order_by(CarePlanRecord.id)
                )
            )
            total = session.scalar(select(func.count()).select_from(Patient)) or 0
            deep = session.scalar(
                select(Patient.id).where(Patient.ats_code == "321").order_by(Patient.id).offset(5000).limit(1)
            )
    finally:
        engine.dispose()
    with _connect(server, name) as connection:
        connection.execute("ANALYZE")
    return Site(url, gp_code, patients, plans, population, int(total), int(deep or 0))


def _add_gp(session: Session) -> None:
    """A GP with the busiest list of the ATS, in its gestore, with their patients' plans; the three accounts."""
    ats = "321"
    gestore = session.scalars(select(Gestore).where(Gestore.code == f"COOP{ats}")).one()
    manager = session.scalars(select(Practitioner).where(Practitioner.code == f"CM{ats}")).one()
    gp_code, _ = session.execute(
        select(Patient.gp_id, func.count())
        .where(Patient.ats_code == ats, Patient.eligible.is_(True), Patient.gp_id.is_not(None))
        .group_by(Patient.gp_id)
        .order_by(func.count().desc())
        .limit(1)
    ).one()
    gp = register_practitioner(
        session, code=str(gp_code), family_name="Bianchi", given_name="Luca", profession="gp", ats_code=ats,
        author="bench",
    )  # fmt: skip
    since = datetime(2025, 1, 1, tzinfo=UTC).date()
    assign_role(session, gp.id, gestore.id, "clinical_manager", start_on=since, author="bench")
    accounts = {
        "gp-bench": {"role": "clinician", "gestore_id": gestore.id, "practitioner_id": gp.id},
        "cm-bench": {"role": "clinician", "gestore_id": gestore.id, "practitioner_id": manager.id},
        "admin-bench": {"role": "gestore_admin", "gestore_id": gestore.id},
    }
    for username, scope in accounts.items():
        create_account(session, username=username, display_name=username, password=PASSWORD, author="bench",
                       **scope)  # type: ignore[arg-type]  # fmt: skip
    patients = session.scalars(
        select(Patient.id)
        .join(Episode, Episode.patient_id == Patient.id)
        .where(Patient.gp_id == gp_code, Episode.gestore_id == gestore.id, Episode.closed_on.is_(None))
        .order_by(Patient.id)
    ).all()
    today = datetime.now(UTC).date()
    rng = random.Random(7)
    for patient_id in patients:
        stored = generate_plan(session, patient_id, start=today, author="bench")
        if rng.random() < 0.75:
            activate_plan(session, stored.id, author="bench")


def sign_in(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=120)
    form = client.get("/login").text
    token = re.search(r'name="login_token" value="([0-9a-f]+)"', form)
    assert token is not None
    answer = client.post("/login", data={"username": username, "password": PASSWORD, "login_token": token.group(1)})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in of {username} failed: {answer.status_code}")
    return client


@dataclass(frozen=True)
class Timing:
    page: str
    server_ms: list[float]
    wall_ms: list[float]

    @staticmethod
    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: httpx.Client, page: str, paths: Callable[[int], str], repeat: int, warm: int = 3) -> Timing:
    server, wall = [], []
    for i in range(-warm, repeat):
        started = time.perf_counter()
        answer = client.get(paths(i))
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise RuntimeError(f"{paths(i)}: {answer.status_code} {answer.text[:300]}")
        found = TIMING.search(answer.headers.get("server-timing", ""))
        if i >= 0 and found:
            server.append(float(found.group(1)))
            wall.append(elapsed)
    return Timing(page, server, wall)


def run(site: Site, repeat: int) -> list[Timing]:
    results = []
    with LiveServer(site.url) as live:
        gp = sign_in(live.url, "gp-bench")
        results.append(timed(gp, "GP: my patients", lambda _: "/patients", repeat))
        results.append(timed(gp, "GP: needs my action", lambda _: "/patients?action=any", repeat))
        results.append(
            timed(gp, "GP: level 1, hypertension", lambda _: "/patients?level=1&pathology=hypertension", repeat)
        )
        sample = random.Random(3).sample(site.gp_patients, min(len(site.gp_patients), repeat + 3))
        results.append(timed(gp, "GP: a patient's page", lambda i: f"/patients/{sample[i + 3]}", repeat))
        plans = random.Random(4).sample(site.gp_plans, min(len(site.gp_plans), repeat + 3))
        results.append(timed(gp, "GP: a PAI's page", lambda i: f"/plans/{plans[i + 3]}", repeat))
        cm = sign_in(live.url, "cm-bench")
        results.append(timed(cm, "whole ATS's clinical manager: list", lambda _: "/patients", repeat))
        deep = f"/patients?after={site.deep}"
        results.append(timed(cm, "whole ATS's clinical manager: page 100", lambda _: deep, repeat))
        admin = sign_in(live.url, "admin-bench")
        results.append(timed(admin, "gestore: patients", lambda _: "/patients", repeat))
        results.append(timed(admin, "gestore: enrolment funnel", lambda _: "/gestore", max(5, repeat // 4)))
        for client in (gp, cm, admin):
            client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="residents")
    parser.add_argument("--data", type=Path, default=Path("bench/data"), help="where populations are kept")
    parser.add_argument("--server", choices=("throwaway", "external", "auto"), default="throwaway")
    parser.add_argument("--repeat", type=int, default=40, help="requests per page (after 3 of warm-up)")
    parser.add_argument("--keep", action="store_true", help="keep the prepared database")
    parser.add_argument("--reuse", action="store_true", help="reuse the database an earlier --keep run left")
    args = parser.parse_args()
    run_dir = stratified_run(args.size, args.data)
    name = f"presa_bench_web_{args.size}"
    with database_server(args.server) as server:
        if not args.reuse:
            server.drop_database(name)
        site = prepare(server, name, run_dir, reuse=args.reuse)
        if args.keep and name in server.created:
            server.created.remove(name)  # the server drops what it made when it closes, even after a failure
        console.print(f"machine: {machine()}; commit {commit()}; PostgreSQL {server.origin}")
        console.print(
            f"{site.residents:,} residents, {site.patients:,} patients in the store; the GP {site.gp_code} has "
            f"{len(site.gp_patients):,} patients and {len(site.gp_plans):,} plans"
        )
        results = run(site, args.repeat)
        table = Table(title=f"Web pages, server time (Server-Timing), {args.repeat} requests each, ms")
        for column in ("page", "p50", "p95", "max", "wall p50", f"< {TARGET_MS:.0f} ms (p95)"):
            table.add_column(column, justify="left" if column == "page" else "right")
        for r in results:
            p95 = Timing.p(r.server_ms, 0.95)
            table.add_row(
                r.page,
                f"{statistics.median(r.server_ms):.1f}",
                f"{p95:.1f}",
                f"{max(r.server_ms):.1f}",
                f"{statistics.median(r.wall_ms):.1f}",
                "yes" if p95 < TARGET_MS else "no",
            )
        console.print(table)
        if not args.keep:
            server.drop_database(name)


if __name__ == "__main__":
    main()
