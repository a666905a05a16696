"""What the stratification said of a patient: the levels and pathologies of every run loaded, and the criteria
that fired in the latest one.

The history comes from the store (``patient_strata``). The criteria are read from the run directory the latest
run was loaded from, through ``presa.stratify.runview`` (the one way to read a run); when that directory is gone
or unreadable the summary says so instead of failing. The run's DuckDB views are made once per run directory and
kept (:data:`OPEN_RUNS` of them; made again when its ``run.json`` changes), with the residents' keys and the
evidence copied into memory sorted by resident (:data:`KEPT_TABLES`: 1.4 s and about 100 MB for a million
residents, once): a patient's page then asks one query through a cursor of its own, about 15 ms, instead of
opening the run's files and scanning them, about 100 ms.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.service.common import get
from presa.care.store.models import Patient, PatientStratum, StratificationRun
from presa.stratify.runview import RunError, open_run

OPEN_RUNS = 4
_runs: OrderedDict[tuple[str, int], duckdb.DuckDBPyConnection] = OrderedDict()
_runs_lock = threading.Lock()

KEPT_TABLES = (
    "CREATE TABLE resident_keys AS SELECT resident_id, resident_key FROM flow_residents ORDER BY resident_id",
    "CREATE TABLE evidence_by_key AS SELECT * FROM run_evidence ORDER BY resident_key",
)
"""What a kept run holds in memory: a lookup of one resident then reads a row group of each, not whole files."""
KEPT_QUERY = """
SELECT c.pathology_id, c.criterion_id, c.source, e.n_records, e.ddd, e.first_date, e.last_date, e.assigned
FROM evidence_by_key AS e JOIN criteria AS c ON c.criterion_no = e.criterion_no
WHERE e.resident_key = (SELECT resident_key FROM resident_keys WHERE resident_id = ?)
ORDER BY c.pathology_id, c.criterion_id
"""


@dataclass(frozen=True, slots=True)
class Stratum:
    run_id: int
    reference_date: date
    level: int
    pathologies: tuple[str, ...]
    eligible: bool


@dataclass(frozen=True, slots=True)
class Criterion:
    pathology_id: str
    criterion_id: str
    source: str
    n_records: int
    ddd: float | None
    first_date: date | None
    last_date: date | None
    assigned: bool


@dataclass(frozen=True, slots=True)
class StratificationSummary:
    run_id: int
    reference_date: date
    history: tuple[Stratum, ...]
    criteria: tuple[Criterion, ...] | None
    note: str | None


def stratification_summary(session: Session, patient: Patient) -> StratificationSummary:
    run = get(session, StratificationRun, patient.run_id, "stratification run")
    rows = session.execute(
        select(PatientStratum, StratificationRun.reference_date)
        .join(StratificationRun, StratificationRun.id == PatientStratum.run_id)
        .where(PatientStratum.resident_id == patient.resident_id)
        .order_by(StratificationRun.reference_date, StratificationRun.id)
    )
    history = tuple(Stratum(s.run_id, reference, s.level, tuple(s.pathologies), s.eligible) for s, reference in rows)
    criteria, note = _criteria(Path(run.source), patient.resident_id)
    return StratificationSummary(run.id, run.reference_date, history, criteria, note)


def run_cursor(run_dir: Path) -> duckdb.DuckDBPyConnection:
    """A cursor (a connection of its own, for this thread) on the run's views, opened once per run directory."""
    key = (str(run_dir.resolve()), (run_dir / "run.json").stat().st_mtime_ns)
    with _runs_lock:
        con = _runs.get(key)
        if con is None:
            con = open_run(run_dir)
            for statement in KEPT_TABLES:
                con.execute(statement)
            _runs[key] = con
            while len(_runs) > OPEN_RUNS:
                _runs.popitem(last=False)[1].close()
        _runs.move_to_end(key)
        return con.cursor()


def _criteria(run_dir: Path, resident_id: str) -> tuple[tuple[Criterion, ...] | None, str | None]:
    try:
        con = run_cursor(run_dir)
    except (RunError, OSError, duckdb.Error):
        return None, "the run directory is no longer readable: criteria not available"
    try:
        found = con.execute(KEPT_QUERY, [resident_id]).fetchall()
    except duckdb.Error:
        return None, "the run's evidence could not be read: criteria not available"
    finally:
        con.close()
    return (
        tuple(
            Criterion(str(p), str(c), str(s), int(n), None if d is None else float(d), first, last, bool(a))
            for p, c, s, n, d, first, last, a in found
        ),
        None,
    )
