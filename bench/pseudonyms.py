"""Benchmark: an ATS analyst's pseudonym back to the patient, by scan (before) and by index (now).

It fills a fresh care store with ``--patients`` patients of one ATS (by bulk load, as ``load_run`` adds them),
then measures, in this process:

- **scan** (the lookup before ``patients.pseudonym_index``, reproduced here as the peer): read every patient of the
  ATS and compute pseudonyms until one matches - for a few existing pseudonyms (on average half the ATS) and for
  one that names nobody (all of it);
- **index**: ``index_pseudonyms`` once (what ``presa load`` now adds), then ``patient_of_pseudonym`` for
  ``--lookups`` existing pseudonyms and as many that name nobody, p50 and p95;
- **re-key**: ``index_pseudonyms`` under another key (every digest cleared and made again).

Usage: ``python -m bench.pseudonyms [--patients 1000000] [--backend postgresql|sqlite] [--lookups 1000]``.
PostgreSQL is the one on 127.0.0.1:5432 when it answers, else a throw-away cluster (tests/pgserver.py).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bench.stratify import commit, machine
from presa.care.pseudonyms import pseudonym
from presa.care.service.pseudonyms import index_pseudonyms, patient_of_pseudonym
from presa.care.store import make_engine, upgrade
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import Patient, StratificationRun
from tests.pgserver import acquire

KEY = b"bench-pseudonyms-key-0123456789abcdef"
OTHER_KEY = b"bench-pseudonyms-another-key-987654321"
ATS = "321"
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
COLUMNS = ("resident_id", "sex", "birth_date", "ats_code", "level", "pathologies", "eligible", "run_id",
           "created_at", "updated_at")  # fmt: skip
SCAN_LOOKUPS = 3

console = Console(width=150)


@contextmanager
def store(backend: str) -> Iterator[Engine]:
    """A fresh, migrated care store, dropped afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="presa-pseudonyms-") as directory:
            engine = make_engine(f"sqlite:///{Path(directory) / 'bench.sqlite3'}")
            try:
                upgrade(engine)
                yield engine
            finally:
                engine.dispose()
        return
    server = acquire()
    name = f"presa_bench_pseudonyms_{os.getpid()}"
    engine = make_engine(server.create_database(name))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        server.drop_database(name)
        server.close()


def fill(engine: Engine, count: int) -> list[str]:
    """``count`` patients of the ATS; their resident ids."""
    residents = [f"RES{n:010d}" for n in range(1, count + 1)]
    with Session(engine) as session, session.begin():
        run = StratificationRun(source="/bench", run_digest="bench", catalog_name="c", catalog_version="1",
                                catalog_digest="x", reference_date=date(2025, 12, 31), population=count,
                                eligible=count, loaded_at=AT, loaded_by="bench")  # fmt: skip
        session.add(run)
        session.flush()
        rows = ((r, "F", date(1950, 1, 1), ATS, 2, ["copd"], True, run.id, AT, AT) for r in residents)
        bulk_insert(session.connection(), table_of(Patient), COLUMNS, rows)
    return residents


def scan_lookup(session: Session, key: bytes, ats_code: str, value: str) -> int | None:
    """The lookup as it was: the pseudonym of every patient of the ATS until one matches."""
    rows = session.execute(select(Patient.id, Patient.resident_id).where(Patient.ats_code == ats_code))
    for patient_id, resident_id in rows:
        if pseudonym(key, resident_id) == value:
            return int(patient_id)
    return None


T = TypeVar("T")


def timed(step: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, result


def milliseconds(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


def run(backend: str, patients: int, lookups: int) -> None:
    chooser = random.Random(1)
    with store(backend) as engine:
        seconds, residents = timed(lambda: fill(engine, patients))
        console.print(f"{backend}: {patients:,} patients of ATS {ATS} loaded in {seconds:.1f} s (not measured)")
        wanted = [pseudonym(KEY, r) for r in chooser.sample(residents, lookups)]
        nobody = [pseudonym(KEY, f"NOBODY{n:07d}") for n in range(lookups)]

        with Session(engine) as session:
            scans = [timed(partial(scan_lookup, session, KEY, ATS, v))[0] for v in wanted[:SCAN_LOOKUPS]]
            miss, _ = timed(lambda: scan_lookup(session, KEY, ATS, nobody[0]))
        console.print(
            f"scan (before): an existing pseudonym {statistics.mean(scans):.2f} s on average over {SCAN_LOOKUPS}, "
            f"one that names nobody {miss:.2f} s"
        )

        with Session(engine) as session, session.begin():
            seconds, indexed = timed(lambda: index_pseudonyms(session, KEY))
        console.print(f"index_pseudonyms: {indexed:,} patients indexed in {seconds:.1f} s (once, after a load)")

        with Session(engine) as session:
            hits = [timed(partial(patient_of_pseudonym, session, KEY, ATS, v)) for v in wanted]
            misses = [timed(partial(patient_of_pseudonym, session, KEY, ATS, v)) for v in nobody]
            session.rollback()
        assert all(found is not None for _, found in hits) and all(found is None for _, found in misses)
        console.print(f"index (now): {lookups:,} existing pseudonyms {milliseconds([s for s, _ in hits])}")
        console.print(f"index (now): {lookups:,} pseudonyms that name nobody {milliseconds([s for s, _ in misses])}")

        with Session(engine) as session, session.begin():
            seconds, indexed = timed(lambda: index_pseudonyms(session, OTHER_KEY))
        console.print(f"re-key: {indexed:,} patients indexed again under another key in {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1_000_000, help="patients of the ATS (default 1,000,000)")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--lookups", type=int, default=1_000, help="indexed lookups of each kind (default 1,000)")
    args = parser.parse_args()
    console.print(
        f"machine: {machine()}; commit {commit()}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    run(args.backend, args.patients, args.lookups)
    console.print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
