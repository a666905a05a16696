"""Reconciliation: read later months' flows and decide, for each planned PAI activity, what became of it.

:func:`reconcile_flows` takes the flows as shipped (validated here with ``presa.flows.load.load_flows``: the same
loader, the same rejects as the stratification) or a store already validated, and in the caller's transaction:

1. records the load, with the loader's read / accepted / rejected counts; a store whose accepted rows were already
   read (same content digest) is not read again - loading the same month twice changes nothing;
2. stores the outpatient services, discharges and ER visits of the patients that may be processed (a signed care
   pact in force), once each: a service already stored (same patient, flow, day, code, provider) is skipped;
3. recomputes the outcome of every activity of their active and completed plans with ``presa.followup.rules``
   (rules in its docstring and in docs/FOLLOWUP.md): done on time, done late, missed, or still planned. Outcomes
   typed by a person (:func:`mark_done`) are never overwritten;
4. opens a transition of care (``transitions``) for each discharge or ER visit since the patient's pact was
   signed.

The computation is a function of everything stored, so running it again over the same data gives the same rows.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from presa.care.service.common import CareError, get, now, require_text
from presa.care.service.pacts import require_processing
from presa.care.store.audit import record
from presa.care.store.bulk import table_of
from presa.care.store.models import (
    CarePact,
    CarePlanRecord,
    Episode,
    Patient,
    PlanActivityRecord,
    PlanStatus,
    PlanVersion,
)
from presa.flows.layout import FlowPaths
from presa.flows.load import load_flows
from presa.flows.validate import literal
from presa.followup.config import FollowupConfig
from presa.followup.rules import (
    DeliveredService,
    PlannedOccurrence,
    Reconciled,
    activity_window,
    italian_day,
    manual_outcome,
    reconcile,
)
from presa.followup.service.scope import processable
from presa.followup.service.transitions import open_transition
from presa.followup.store import (
    ActivityOutcome,
    Execution,
    ExecutionSource,
    FlowLoad,
    OutcomeSource,
    TransitionKind,
)

SYSTEM = "system"
RECONCILED_PLANS = (PlanStatus.ACTIVE, PlanStatus.COMPLETED)
PATIENT_BATCH = 2_000
EXECUTION_COLUMNS = (
    "patient_id",
    "source",
    "day",
    "started_on",
    "code",
    "discipline",
    "provider_code",
    "source_file",
    "source_line",
)
EVENTS_SQL = """
SELECT k.patient_id, 'outpatient' AS source, o.service_date AS day, CAST(NULL AS DATE) AS started_on,
       o.service_code AS code, o.discipline, o.provider_id AS provider_code, o.source_file, o.source_line
FROM read_parquet({outpatient}) o JOIN read_parquet({residents}) r USING (resident_key)
JOIN known k ON k.resident_id = r.resident_id
UNION ALL
SELECT k.patient_id, 'discharge', d.discharge_date, d.admission_date, d.dx_main, '', '', d.source_file, d.source_line
FROM read_parquet({discharges}) d JOIN read_parquet({residents}) r USING (resident_key)
JOIN known k ON k.resident_id = r.resident_id
UNION ALL
SELECT k.patient_id, 'er_visit', e.visit_date, NULL, '', '', '', e.source_file, e.source_line
FROM read_parquet({er_visits}) e JOIN read_parquet({residents}) r USING (resident_key)
JOIN known k ON k.resident_id = r.resident_id
ORDER BY 1, 3, 2, 5
"""
DIGEST_SQL = """
SELECT {table!r}, count(*), coalesce(sum(hash(r.resident_id, {columns})::HUGEINT), 0)::VARCHAR
FROM read_parquet({path}) t JOIN read_parquet({residents}) r USING (resident_key)
"""
DIGEST_COLUMNS = {
    "outpatient": "t.service_date, t.service_code, t.discipline, t.provider_id",
    "discharges": "t.admission_date, t.discharge_date, t.dx_main, t.drg, t.regime, t.discharge_mode",
    "er_visits": "t.visit_date, t.triage, t.outcome",
}


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What one reconciliation did; ``already_loaded`` when the same flows had been read before."""

    load_id: int
    already_loaded: bool
    covered_until: date | None
    rejected: int
    executions: int
    outcome_changes: int
    transitions: int
    counts: dict[str, Any]


def reconcile_flows(
    session: Session,
    flows: Path,
    *,
    author: str,
    at: datetime | None = None,
    max_date: date | None = None,
    covered_until: date | None = None,
    config: FollowupConfig | None = None,
) -> Reconciliation:
    """Reconcile the flows in ``flows`` (as shipped, or a validated store); see the module docstring."""
    at = at or now()
    if FlowPaths(flows).is_validated():
        return _reconcile_store(session, flows, author, at, covered_until, config)
    with tempfile.TemporaryDirectory(prefix="presa-reconcile-") as work:
        store = Path(work) / "store"
        load_flows(flows, store, max_date=max_date or italian_day(at))
        return _reconcile_store(session, store, author, at, covered_until, config, source=flows)


def _reconcile_store(
    session: Session,
    store: Path,
    author: str,
    at: datetime,
    covered_until: date | None,
    config: FollowupConfig | None,
    source: Path | None = None,
) -> Reconciliation:
    paths = FlowPaths(store)
    manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    counts = dict(manifest.get("tables", {}))
    rejected = sum(int(c.get("rejected", 0)) for c in counts.values())
    last = manifest.get("last_record_date")
    covered = covered_until or (date.fromisoformat(last) if last else None)
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        digest = _digest(con, paths)
        loaded = session.scalars(select(FlowLoad).where(FlowLoad.digest == digest)).first()
        if loaded is not None:
            return Reconciliation(loaded.id, True, loaded.covered_until, loaded.rejected, 0, 0, 0, loaded.counts)
        load = FlowLoad(
            digest=digest,
            source=str((source or store).resolve()),
            covered_until=covered,
            loaded_at=at,
            loaded_by=author,
            counts=counts,
            rejected=rejected,
            executions=0,
            outcome_changes=0,
            transitions=0,
        )
        session.add(load)
        session.flush()
        scope = _scope(session)
        known = pa.table(
            {
                "patient_id": pa.array([p for p, _, _ in scope], pa.int64()),
                "resident_id": pa.array([r for _, r, _ in scope], pa.string()),
            }
        )
        con.register("known", known)
        names = {t: literal(str(paths.table(t))) for t in ("outpatient", "discharges", "er_visits", "residents")}
        rows = con.execute(EVENTS_SQL.format(**names)).fetchall()
    finally:
        con.close()
    new = _store_executions(session, load.id, rows)
    enrolled_since = {patient_id: since for patient_id, _, since in scope}
    transitions = _open_transitions(session, load.id, enrolled_since, author, at, config)
    changes = recompute_outcomes(session, [p for p, _, _ in scope], at=at)
    load.executions, load.outcome_changes, load.transitions = new, changes, transitions
    session.flush()
    record(
        session,
        actor=author,
        action="reconcile",
        entity="flow_load",
        entity_id=load.id,
        detail={"executions": new, "outcome_changes": changes, "transitions": transitions, "rejected": rejected},
        at=at,
    )
    return Reconciliation(load.id, False, covered, rejected, new, changes, transitions, counts)


def _digest(con: duckdb.DuckDBPyConnection, paths: FlowPaths) -> str:
    """SHA-256 of the accepted rows' content, whatever the files were called or the order they came in."""
    residents = literal(str(paths.table("residents")))
    parts = [
        con.execute(
            DIGEST_SQL.format(table=t, columns=c, path=literal(str(paths.table(t))), residents=residents)
        ).fetchall()
        for t, c in DIGEST_COLUMNS.items()
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _scope(session: Session) -> list[tuple[int, str, date]]:
    """(patient id, resident id, day the pact was first signed in the open episode) of the processable patients."""
    query = (
        select(Patient.id, Patient.resident_id, func.min(CarePact.signed_at))
        .join(Episode, and_(Episode.patient_id == Patient.id, Episode.closed_on.is_(None)))
        .join(CarePact, and_(CarePact.episode_id == Episode.id, CarePact.signed_at.is_not(None)))
        .where(processable(Patient.id))
        .group_by(Patient.id, Patient.resident_id)
    )
    return [(pid, rid, italian_day(signed) if signed else date.min) for pid, rid, signed in session.execute(query)]


def _store_executions(session: Session, load_id: int, rows: Sequence[tuple[Any, ...]]) -> int:
    if not rows:
        return 0
    table = table_of(Execution)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).on_conflict_do_nothing(
        index_elements=["patient_id", "source", "day", "code", "provider_code"]
    )
    values = [{**dict(zip(EXECUTION_COLUMNS, row, strict=True)), "load_id": load_id} for row in rows]
    for start in range(0, len(values), 5_000):
        session.execute(statement, values[start : start + 5_000])
    return int(session.scalar(select(func.count()).select_from(Execution).where(Execution.load_id == load_id)) or 0)


def _open_transitions(
    session: Session,
    load_id: int,
    enrolled_since: dict[int, date],
    author: str,
    at: datetime,
    config: FollowupConfig | None,
) -> int:
    events = session.execute(
        select(Execution.patient_id, Execution.source, Execution.day)
        .where(Execution.load_id == load_id, Execution.source != ExecutionSource.OUTPATIENT)
        .order_by(Execution.patient_id, Execution.day)
    ).all()
    opened = 0
    for patient_id, source, day in events:
        if day < enrolled_since[patient_id]:
            continue
        kind = TransitionKind.DISCHARGE if source is ExecutionSource.DISCHARGE else TransitionKind.ER_VISIT
        open_transition(session, patient_id, kind, day, source="flows", author=author, at=at, config=config)
        opened += 1
    return opened


def covered_until(session: Session) -> date | None:
    """The last day the flows read so far cover: nothing planned before its window closes can be missed."""
    value: date | None = session.scalar(select(func.max(FlowLoad.covered_until)))
    return value


def recompute_outcomes(session: Session, patient_ids: Iterable[int], *, at: datetime | None = None) -> int:
    """Bring the flows' outcomes of these patients' active and completed plans up to date; how many rows changed."""
    at = at or now()
    as_of = covered_until(session)
    ids = sorted(set(patient_ids))
    changed = 0
    for start in range(0, len(ids), PATIENT_BATCH):
        changed += _recompute_batch(session, ids[start : start + PATIENT_BATCH], as_of, at)
    session.flush()
    return changed


def _recompute_batch(session: Session, ids: list[int], as_of: date | None, at: datetime) -> int:
    planned: dict[int, list[PlannedOccurrence]] = defaultdict(list)
    for patient_id, plan_id, activity_id, day, code, per_year in session.execute(
        select(
            CarePlanRecord.patient_id,
            CarePlanRecord.id,
            PlanActivityRecord.activity_id,
            PlanActivityRecord.day,
            PlanActivityRecord.code,
            PlanActivityRecord.times_per_year,
        )
        .join(
            PlanVersion,
            and_(PlanVersion.plan_id == CarePlanRecord.id, PlanVersion.version == CarePlanRecord.current_version),
        )
        .join(PlanActivityRecord, PlanActivityRecord.version_id == PlanVersion.id)
        .where(CarePlanRecord.patient_id.in_(ids), CarePlanRecord.status.in_(RECONCILED_PLANS))
    ):
        planned[patient_id].append(PlannedOccurrence(plan_id, activity_id, day, code, per_year))
    delivered: dict[int, list[DeliveredService]] = defaultdict(list)
    for execution_id, patient_id, day, code in session.execute(
        select(Execution.id, Execution.patient_id, Execution.day, Execution.code).where(
            Execution.patient_id.in_(ids), Execution.source == ExecutionSource.OUTPATIENT
        )
    ):
        delivered[patient_id].append(DeliveredService(execution_id, day, code))
    stored: dict[tuple[int, str], ActivityOutcome] = {
        (o.plan_id, o.activity_id): o
        for o in session.scalars(select(ActivityOutcome).where(ActivityOutcome.patient_id.in_(ids)))
    }
    changed = 0
    for patient_id in ids:
        manual = {key for key, o in stored.items() if o.patient_id == patient_id and o.source is OutcomeSource.MANUAL}
        occurrences = [p for p in planned.get(patient_id, []) if (p.plan_id, p.activity_id) not in manual]
        wanted = {(r.plan_id, r.activity_id): r for r in reconcile(occurrences, delivered.get(patient_id, []), as_of)}
        for key, result in wanted.items():
            changed += _apply(session, patient_id, stored.get(key), result, at)
        for key, row in stored.items():
            if row.patient_id == patient_id and row.source is OutcomeSource.FLOWS and wanted.get(key) is None:
                session.execute(delete(ActivityOutcome).where(ActivityOutcome.id == row.id))
                changed += 1
    return changed


def _apply(session: Session, patient_id: int, row: ActivityOutcome | None, result: Reconciled, at: datetime) -> int:
    if result.outcome is None:
        return 0  # still planned; a stored flows row, if any, is removed by the caller
    values = {
        "outcome": result.outcome,
        "due_on": result.window.due,
        "window_from": result.window.opens,
        "window_until": result.window.closes,
        "done_on": result.done_on,
        "execution_id": result.execution_id,
    }
    if row is None:
        session.add(
            ActivityOutcome(
                plan_id=result.plan_id,
                patient_id=patient_id,
                activity_id=result.activity_id,
                source=OutcomeSource.FLOWS,
                note=None,
                recorded_by=SYSTEM,
                recorded_at=at,
                **values,
            )
        )
        return 1
    if all(getattr(row, k) == v for k, v in values.items()):
        return 0
    for k, v in values.items():
        setattr(row, k, v)
    row.recorded_at = at
    return 1


def mark_done(
    session: Session,
    plan_id: int,
    activity_id: str,
    *,
    done_on: date,
    note: str,
    author: str,
    at: datetime | None = None,
) -> ActivityOutcome:
    """A person records that a planned activity was done on ``done_on``; the flows never overwrite it."""
    at = at or now()
    plan = get(session, CarePlanRecord, plan_id, "care plan")
    require_processing(session, plan.patient_id)
    text = require_text(note, "the note")
    if done_on > italian_day(at):
        raise CareError(f"done on {done_on.isoformat()}: that is in the future")
    activity = session.execute(
        select(PlanActivityRecord.day, PlanActivityRecord.times_per_year)
        .join(PlanVersion, PlanVersion.id == PlanActivityRecord.version_id)
        .where(
            PlanVersion.plan_id == plan.id,
            PlanVersion.version == plan.current_version,
            PlanActivityRecord.activity_id == activity_id,
        )
    ).first()
    if activity is None:
        raise CareError(f"care plan {plan_id} has no activity '{activity_id}' in its current version")
    due, per_year = activity
    window = activity_window(due, per_year)
    outcome = manual_outcome(due, per_year, done_on)
    row = session.scalars(
        select(ActivityOutcome).where(ActivityOutcome.plan_id == plan.id, ActivityOutcome.activity_id == activity_id)
    ).first()
    if row is None:
        row = ActivityOutcome(plan_id=plan.id, patient_id=plan.patient_id, activity_id=activity_id)
        session.add(row)
    row.outcome, row.due_on, row.window_from, row.window_until = outcome, due, window.opens, window.closes
    row.done_on, row.execution_id, row.source, row.note = done_on, None, OutcomeSource.MANUAL, text
    row.recorded_by, row.recorded_at = author, at
    session.flush()
    record(
        session,
        actor=author,
        action="mark_done",
        entity="plan_activity",
        entity_id=f"{plan.id}:{activity_id}",
        patient_id=plan.patient_id,
        detail={"done_on": done_on.isoformat(), "outcome": outcome.value, "note": text},
        at=at,
    )
    return row


def outcomes_of(session: Session, plan_id: int) -> dict[str, ActivityOutcome]:
    rows = session.scalars(select(ActivityOutcome).where(ActivityOutcome.plan_id == plan_id))
    return {r.activity_id: r for r in rows}
