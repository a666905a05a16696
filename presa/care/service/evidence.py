"""What the stratification said of a patient: the levels and pathologies of every run loaded, and the criteria
that fired in the latest one.

The history comes from the store (``patient_strata``). The criteria are read from the run directory the latest
run was loaded from, through ``presa.stratify.runview`` (the one way to read a run); when that directory is gone
or unreadable the summary says so instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.service.common import get
from presa.care.store.models import Patient, PatientStratum, StratificationRun
from presa.stratify.runview import RunError, open_run

EVIDENCE_QUERY = """
SELECT pathology_id, criterion_id, source, n_records, ddd, first_date, last_date, assigned
FROM evidence WHERE resident_id = ? ORDER BY pathology_id, criterion_id
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


def _criteria(run_dir: Path, resident_id: str) -> tuple[tuple[Criterion, ...] | None, str | None]:
    try:
        con = open_run(run_dir)
    except (RunError, OSError, duckdb.Error):
        return None, "the run directory is no longer readable: criteria not available"
    try:
        found = con.execute(EVIDENCE_QUERY, [resident_id]).fetchall()
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
