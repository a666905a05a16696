"""Reconciliation: read later months' flows and decide, for each planned PAI activity, what became of it.

:func:`reconcile_flows` takes the flows as shipped (validated here with ``presa.flows.load.load_flows``: the same
loader, the same rejects as the stratification) or a store already validated, and in the caller's transaction:

1. records the load, with the loader's read / accepted / rejected counts; a store whose accepted rows were already
   read (same content digest) is not read again - loading the same month twice changes nothing;
2. stores the outpatient services, discharges and ER visits of the patients that may be processed (a signed care
   pact in force), once each: a service already stored (same patient, flow, day, code, provider) is skipped;
3. brings the outcomes of the activities of their active and completed plans up to date with
   ``presa.followup.rules`` (rules in its docstring and in docs/FOLLOWUP.md): done on time, done late, missed, or
   still planned. Outcomes typed by a person (:func:`mark_done`) are never overwritten;
4. opens a transition of care (``transitions``) for each discharge or ER visit since the patient's pact was
   signed.

The outcomes are a function of everything stored: step 3 recomputes, set-based, exactly the (patient, code
family) groups whose inputs changed since they were computed (see "outcomes, set-based and incremental" below),
which gives the rows a recomputation of everything would. Everything goes through the database's bulk load and
set-based statements, never an ORM object per row: a region's month (hundreds of thousands of services, millions
of planned activities) takes seconds, not hours.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
from psycopg import sql as psql
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Date,
    DateTime,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    true,
    union,
    update,
)
from sqlalchemy import literal as sql_literal
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from presa.care.service.common import CareError, get, now, require_text
from presa.care.service.pacts import require_processing
from presa.care.store.audit import record
from presa.care.store.bulk import bulk_insert, counted, driver_of, table_of
from presa.care.store.models import (
    CarePact,
    CarePlanRecord,
    Episode,
    Patient,
    PlanCalendarActivity,
    PlanStatus,
    PlanVersion,
)
from presa.flows.layout import FlowPaths
from presa.flows.load import load_flows
from presa.flows.validate import literal
from presa.followup.config import FollowupConfig
from presa.followup.rules import (
    DAYS_IN_YEAR,
    DeliveredService,
    PlannedOccurrence,
    activity_window,
    code_stem,
    italian_day,
    manual_outcome,
    reconcile,
)
from presa.followup.service.scope import processable
from presa.followup.service.transitions import open_transitions
from presa.followup.store import (
    ActivityOutcome,
    Execution,
    ExecutionSource,
    FlowLoad,
    Outcome,
    OutcomeSource,
    ReconciledPlan,
    TransitionKind,
)

SYSTEM = "system"
RECONCILED_PLANS = (PlanStatus.ACTIVE, PlanStatus.COMPLETED)
EXECUTION_COLUMNS = (
    "patient_id",
    "source",
    "day",
    "started_on",
    "code",
    "stem",
    "discipline",
    "provider_code",
    "source_file",
    "source_line",
)
EXECUTION_KEY = ("patient_id", "source", "day", "code", "provider_code")  # Execution's unique constraint
STEM_SQL = "array_to_string(string_split(upper(trim({})), '.')[1:2], '.')"  # rules.code_stem
EVENTS_SQL = """
SELECT k.patient_id, 'outpatient' AS source, o.service_date AS day, CAST(NULL AS DATE) AS started_on,
       o.service_code AS code, {outpatient_stem} AS stem, o.discipline, o.provider_id AS provider_code,
       o.source_file, o.source_line
FROM read_parquet({outpatient}) o JOIN read_parquet({residents}) r USING (resident_key)
JOIN known k ON k.resident_id = r.resident_id
UNION ALL
SELECT k.patient_id, 'discharge', d.discharge_date, d.admission_date, d.dx_main, d.dx_main, '', '', d.source_file,
       d.source_line
FROM read_parquet({discharges}) d JOIN read_parquet({residents}) r USING (resident_key)
JOIN known k ON k.resident_id = r.resident_id
UNION ALL
SELECT k.patient_id, 'er_visit', e.visit_date, NULL, '', '', '', '', e.source_file, e.source_line
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
    seconds: dict[str, float] = field(default_factory=dict)
    """Where the time went, by step (validation by the loader included when the flows came as shipped)."""


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
        started = time.perf_counter()
        load_flows(flows, store, max_date=max_date or italian_day(at))
        validated = time.perf_counter() - started
        result = _reconcile_store(session, store, author, at, covered_until, config, source=flows)
        result.seconds["validate"] = round(validated, 3)
        return result


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
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="presa-events-")
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        digest = _digest(con, paths)
        loaded = session.scalars(select(FlowLoad).where(FlowLoad.digest == digest)).first()
        if loaded is not None:
            return Reconciliation(loaded.id, True, loaded.covered_until, loaded.rejected, 0, 0, 0, loaded.counts)
        previous = _coverage(session)
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
        events = EVENTS_SQL.format(outpatient_stem=STEM_SQL.format("o.service_code"), **names)
        incoming: Path | list[tuple[Any, ...]]
        if session.get_bind().dialect.name == "postgresql":  # straight from DuckDB to COPY, no Python row
            incoming = Path(scratch.name) / "events.csv"
            con.execute(f"COPY ({events}) TO {literal(str(incoming))} (FORMAT csv, HEADER false, NULLSTR '\\N')")
        else:
            incoming = con.execute(events).fetchall()
    except BaseException:
        scratch.cleanup()
        raise
    finally:
        con.close()
    seconds["read"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    connection = session.connection()
    try:
        new = _store_executions(session, load.id, incoming)
        scratch.cleanup()
        seconds["executions"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        enrolled_since = {patient_id: since for patient_id, _, since in scope}
        transitions = _open_transitions(session, enrolled_since, author, at, config)
        seconds["transitions"] = round(time.perf_counter() - started, 3)
        as_of = max(d for d in (previous, covered) if d is not None) if previous or covered else None
        scope_ids = [p for p, _, _ in scope]
        recompute = _Recompute(session, scope_ids, incoming=True, previous=previous, as_of=as_of, at=at)
        changes = recompute.run()
        seconds.update({f"outcomes_{k}": v for k, v in recompute.seconds.items()})
    finally:
        scratch.cleanup()
        RECON_INCOMING.drop(connection, checkfirst=True)
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
    return Reconciliation(load.id, False, covered, rejected, new, changes, transitions, counts, seconds)


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


RECON_INCOMING = Table(
    "recon_incoming",
    MetaData(),
    Column("patient_id", Integer),
    Column("source", String(16)),
    Column("day", Date),
    Column("started_on", Date),
    Column("code", String(16)),
    Column("stem", String(16)),
    Column("discipline", String(8)),
    Column("provider_code", String(32)),
    Column("source_file", String(200)),
    Column("source_line", BigInteger),
    prefixes=["TEMPORARY"],
)


def _store_executions(session: Session, load_id: int, incoming: Path | Sequence[tuple[Any, ...]]) -> int:
    """Store the services not stored yet: bulk load into a temporary table (``recon_incoming``, kept for the
    transitions and the outcomes of this load; the caller drops it), then one INSERT ... SELECT that skips what is
    there. How many were new."""
    connection = session.connection()
    RECON_INCOMING.drop(connection, checkfirst=True)
    RECON_INCOMING.create(connection)
    if isinstance(incoming, Path):
        driver = driver_of(connection)
        command = psql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, NULL '\\N')").format(
            psql.Identifier(RECON_INCOMING.name), psql.SQL(", ").join(map(psql.Identifier, EXECUTION_COLUMNS))
        )
        with driver.cursor() as cursor, cursor.copy(command) as copy, incoming.open("rb") as lines:
            while block := lines.read(1 << 20):
                copy.write(block)
    else:
        bulk_insert(connection, RECON_INCOMING, EXECUTION_COLUMNS, incoming)
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"ANALYZE {RECON_INCOMING.name}")
    dialect_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    columns = RECON_INCOMING.c
    # Joined to the patients: the table has no foreign keys (checked row by row they were most of this INSERT), so
    # this statement, its only writer, is what guarantees that every execution has its patient. In the unique
    # key's order: the index is then filled page after page, not at random (12.5 s instead of 16.7 s for a
    # region's month of 660,000 services).
    statement = dialect_insert(table_of(Execution)).from_select(
        [*EXECUTION_COLUMNS, "load_id"],
        select(*(columns[c] for c in EXECUTION_COLUMNS), sql_literal(load_id, Integer))
        .join(Patient, Patient.id == columns.patient_id)
        .where(true())
        .order_by(*(columns[c] for c in EXECUTION_KEY)),
    )
    return counted(session, statement.on_conflict_do_nothing(index_elements=list(EXECUTION_KEY)))


def _open_transitions(
    session: Session,
    enrolled_since: dict[int, date],
    author: str,
    at: datetime,
    config: FollowupConfig | None,
) -> int:
    """A transition of care for each discharge and ER visit of this load since the patient's pact was signed
    (those recorded before are skipped by ``open_transitions``)."""
    incoming = RECON_INCOMING.c
    events = [
        (patient_id, TransitionKind.DISCHARGE if source == ExecutionSource.DISCHARGE else TransitionKind.ER_VISIT, day)
        for patient_id, source, day in session.execute(
            select(incoming.patient_id, incoming.source, incoming.day)
            .where(incoming.source != ExecutionSource.OUTPATIENT.value)
            .distinct()
        )
        if day >= enrolled_since[patient_id]
    ]
    return open_transitions(session, events, source="flows", author=author, at=at, config=config)


def covered_until(session: Session) -> date | None:
    """The last day the flows read so far cover: nothing planned before its window closes can be missed."""
    value: date | None = session.scalar(select(func.max(FlowLoad.covered_until)))
    return value


_coverage = covered_until  # for the functions whose parameter has that name


def recompute_outcomes(session: Session, patient_ids: Iterable[int], *, at: datetime | None = None) -> int:
    """Recompute in full the flows' outcomes of these patients' active and completed plans; how many rows changed."""
    at = at or now()
    ids = sorted(set(patient_ids))
    for start in range(0, len(ids), 5_000):
        plans = select(CarePlanRecord.id).where(CarePlanRecord.patient_id.in_(ids[start : start + 5_000]))
        session.execute(delete(ReconciledPlan).where(ReconciledPlan.plan_id.in_(plans)))
    as_of = covered_until(session)
    return _Recompute(session, ids, incoming=False, previous=as_of, as_of=as_of, at=at).run()


# --- outcomes, set-based and incremental ---------------------------------------------------------------------
#
# The matching decomposes by (patient, code family): a service of one family can only fulfil an occurrence of the
# same family (rules.same_family implies equal stems), and the greedy pass takes a patient's occurrences in date
# order, so each (patient, stem) group can be computed on its own with the same result. A reconciliation
# recomputes the groups whose inputs changed since the outcomes were stored:
#
#   (a) the groups of the services this load stored;
#   (b) the groups with an occurrence whose window closes between the coverage before this load and after it
#       (nothing else can turn into "missed");
#   (c) every group of the plans whose current version or status differs from the one their outcomes were
#       computed on (``followup_reconciled_plans``; none yet for a plan never reconciled, and ``mark_done`` clears
#       it, since a person's "done" frees the service the flows had matched).
#
# Of those, the groups with a service (``recon_served``: (a), the served ones of (b), and the served groups of the
# patients of (c)) come back whole and go through rules.reconcile in Python with their services; of the others only
# what can have changed comes back: occurrences whose window has closed (of (c)) or closes now (of (b)), and the
# stored rows of the plans of (c). Each set is one index-driven statement into a temporary table or out of it.

TEMPORARY = MetaData()
RECON_SCOPE = Table("recon_scope", TEMPORARY, Column("patient_id", Integer, primary_key=True), prefixes=["TEMPORARY"])
RECON_PLANS = Table(
    "recon_plans",
    TEMPORARY,
    Column("plan_id", Integer, primary_key=True),
    Column("patient_id", Integer, nullable=False),
    Column("changed", Boolean, nullable=False),
    prefixes=["TEMPORARY"],
)
RECON_CLOSING = Table(
    "recon_closing",
    TEMPORARY,
    Column("patient_id", Integer, primary_key=True),
    Column("stem", String(16), primary_key=True),
    prefixes=["TEMPORARY"],
)
RECON_SERVED = Table(
    "recon_served",
    TEMPORARY,
    Column("patient_id", Integer, primary_key=True),
    Column("stem", String(16), primary_key=True),
    prefixes=["TEMPORARY"],
)
RECON_CODES = Table(
    "recon_codes",
    TEMPORARY,
    Column("code", String(16), primary_key=True),
    Column("stem", String(16), nullable=False),
    prefixes=["TEMPORARY"],
)
RECON_SERVED_CODES = Table(
    "recon_served_codes",
    TEMPORARY,
    Column("patient_id", Integer, primary_key=True),
    Column("code", String(16), primary_key=True),
    prefixes=["TEMPORARY"],
)
OUTCOME_COLUMNS = (
    "plan_id",
    "patient_id",
    "activity_id",
    "outcome",
    "due_on",
    "window_from",
    "window_until",
    "done_on",
    "execution_id",
    "source",
    "note",
    "recorded_by",
    "recorded_at",
)
STORED = ("outcome", "due_on", "window_from", "window_until", "done_on", "execution_id")
WORK_MEM = "256MB"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Stored:
    """An outcome row as stored: its id, source and the values the rules decide (in :data:`STORED` order)."""

    id: int
    source: OutcomeSource
    outcome: Outcome
    due_on: date
    window_from: date
    window_until: date
    done_on: date | None
    execution_id: int | None

    @property
    def values(self) -> tuple[Any, ...]:
        return (self.outcome, self.due_on, self.window_from, self.window_until, self.done_on, self.execution_id)


def _stored(row: Sequence[Any]) -> _Stored | None:
    """The stored outcome of a fetched row (its enumerations may come as text, straight from the driver)."""
    if row[0] is None:
        return None
    row_id, source, outcome, *values = row
    return _Stored(row_id, OutcomeSource(source), Outcome(outcome), *values)


_Occurrence = tuple[int, PlannedOccurrence, str, _Stored | None]


class _Recompute:
    """One recomputation of outcomes (the comment above): build the sets, fetch, match, write the differences."""

    def __init__(
        self,
        session: Session,
        scope: Sequence[int],
        *,
        incoming: bool,
        previous: date | None,
        as_of: date | None,
        at: datetime,
    ) -> None:
        self.session, self.scope, self.incoming = session, scope, incoming
        self.previous, self.as_of, self.at = previous, as_of, at
        self.dialect = session.get_bind().dialect.name
        self.seconds: dict[str, float] = {}
        self.stems: dict[str, str] = {}

    def run(self) -> int:
        if not self.scope:
            return 0
        self.session.flush()
        connection = self.session.connection()
        if self.dialect == "postgresql":  # hash joins and DISTINCT of a region's rows in memory, this transaction only
            connection.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM}'")
        tables = (RECON_SCOPE, RECON_PLANS, RECON_CODES, RECON_CLOSING, RECON_SERVED, RECON_SERVED_CODES)
        for table in tables:
            table.drop(connection, checkfirst=True)
            table.create(connection)
        try:
            self._timed("sets", self._sets)
            occurrences, services, stale = self._timed("fetch", self._fetch)
            changes = self._timed("match", lambda: self._match(occurrences, services, stale))
            changed = self._timed("write", lambda: self._write(*changes))
            self._timed("marks", self._mark)
        finally:
            for table in reversed(tables):
                table.drop(connection, checkfirst=True)
        return changed

    def _timed(self, name: str, step: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return step()
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)

    @property
    def _advanced(self) -> bool:
        return self.as_of is not None and (self.previous is None or self.as_of > self.previous)

    # -- the sets ---------------------------------------------------------------------------------------------

    def _occurrences(self, *columns: Any) -> Select[Any]:
        """The coded activities of the current version of the plans being reconciled."""
        c, a, rp = CarePlanRecord, PlanCalendarActivity, RECON_PLANS.c
        return (
            select(*columns)
            .select_from(c)
            .join(RECON_PLANS, rp.plan_id == c.id)
            .join(PlanVersion, and_(PlanVersion.plan_id == c.id, PlanVersion.version == c.current_version))
            .join(a, a.calendar_id == PlanVersion.calendar_id)
            .where(a.code.is_not(None))
        )

    def _closing_now(self) -> list[ColumnElement[bool]]:
        """Windows that close between the coverage before this load and after it (day first, for its index)."""
        assert self.as_of is not None
        day, closes = PlanCalendarActivity.day, self._closes()
        window = [day < self.as_of, closes < self.as_of]
        if self.previous is not None:
            window += [day >= self.previous - timedelta(days=DAYS_IN_YEAR // 2 + 1), closes >= self.previous]
        return window

    def _sets(self) -> None:
        session, connection = self.session, self.session.connection()
        bulk_insert(connection, RECON_SCOPE, ("patient_id",), ((p,) for p in self.scope))
        mark = aliased(ReconciledPlan)
        changed = or_(mark.plan_id.is_(None), mark.version != CarePlanRecord.current_version,
                      mark.status != CarePlanRecord.status)  # fmt: skip
        session.execute(
            insert(RECON_PLANS).from_select(
                ["plan_id", "patient_id", "changed"],
                select(CarePlanRecord.id, CarePlanRecord.patient_id, changed)
                .join(RECON_SCOPE, RECON_SCOPE.c.patient_id == CarePlanRecord.patient_id)
                .outerjoin(mark, mark.plan_id == CarePlanRecord.id)
                .where(CarePlanRecord.status.in_(RECONCILED_PLANS)),
            )
        )
        # The plans' codes with their stems (a few hundred): every join on a code family is then an equi-join.
        codes = session.scalars(
            select(PlanCalendarActivity.code).where(PlanCalendarActivity.code.is_not(None)).distinct()
        ).all()
        self.stems = {code: code_stem(code) for code in codes if code is not None}
        bulk_insert(connection, RECON_CODES, ("code", "stem"), self.stems.items())
        if self._advanced:  # (b)
            session.execute(
                insert(RECON_CLOSING).from_select(
                    ["patient_id", "stem"],
                    self._occurrences(CarePlanRecord.patient_id, RECON_CODES.c.stem)
                    .join(RECON_CODES, RECON_CODES.c.code == PlanCalendarActivity.code)
                    .where(*self._closing_now())
                    .distinct(),
                )
            )
        e, rc = Execution, RECON_CLOSING.c
        served: list[ColumnElement[bool]] = [
            e.patient_id.in_(select(RECON_PLANS.c.patient_id).where(RECON_PLANS.c.changed)),  # of (c)
            exists().where(rc.patient_id == e.patient_id, rc.stem == e.stem),  # of (b)
        ]
        chosen = select(e.patient_id, e.stem).where(e.source == ExecutionSource.OUTPATIENT, or_(*served))
        if self.incoming:  # (a): the services this load brought (stored now, or before: recomputing them is harmless)
            new = RECON_INCOMING.c
            both = union(
                chosen,
                select(new.patient_id, new.stem).where(new.source == ExecutionSource.OUTPATIENT.value),
            ).subquery()
            session.execute(insert(RECON_SERVED).from_select(["patient_id", "stem"], select(both.c[0], both.c[1])))
        else:
            session.execute(insert(RECON_SERVED).from_select(["patient_id", "stem"], chosen.distinct()))
        session.execute(
            insert(RECON_SERVED_CODES).from_select(
                ["patient_id", "code"],
                select(RECON_SERVED.c.patient_id, RECON_CODES.c.code).join(
                    RECON_CODES, RECON_CODES.c.stem == RECON_SERVED.c.stem
                ),
            )
        )
        if self.dialect == "postgresql":
            for table in (RECON_PLANS, RECON_SERVED, RECON_SERVED_CODES):
                connection.exec_driver_sql(f"ANALYZE {table.name}")  # temporary tables have no statistics else

    def _fetch(
        self,
    ) -> tuple[list[_Occurrence], dict[tuple[int, str], list[DeliveredService]], list[tuple[int, int, str]]]:
        """The occurrences of the served groups, whole; of the other groups, those whose window has closed (plans of
        (c)) or closes now; each with its stored outcome. The services of the served groups. The stored rows of the
        plans of (c), which go when nothing wants them any more."""
        x, sc, o, a = RECON_SERVED.c, RECON_SERVED_CODES.c, aliased(ActivityOutcome), PlanCalendarActivity
        columns = (CarePlanRecord.patient_id, CarePlanRecord.id, a.activity_id, a.day, a.code, a.times_per_year,
                   o.id, o.source, *(getattr(o, k) for k in STORED))  # fmt: skip
        stored = and_(o.plan_id == CarePlanRecord.id, o.activity_id == a.activity_id)
        served = and_(sc.patient_id == CarePlanRecord.patient_id, sc.code == a.code)
        queries = [self._occurrences(*columns).join(RECON_SERVED_CODES, served).outerjoin(o, stored)]
        if self.as_of is not None:
            closed = [a.day < self.as_of, self._closes() < self.as_of]
            newly = and_(*self._closing_now()) if self._advanced else false()
            queries.append(
                self._occurrences(*columns)
                .outerjoin(RECON_SERVED_CODES, served)
                .outerjoin(o, stored)
                .where(sc.patient_id.is_(None), *closed, or_(RECON_PLANS.c.changed, newly))
            )
        occurrences: list[_Occurrence] = []
        stems = self.stems
        for query in queries:
            for patient_id, plan_id, activity_id, day, code, per_year, *row in self._rows(query):
                occurrence = PlannedOccurrence(plan_id, activity_id, day, code, per_year)
                occurrences.append((patient_id, occurrence, stems[code], _stored(row)))
        services: dict[tuple[int, str], list[DeliveredService]] = defaultdict(list)
        for execution_id, patient_id, day, code, group in self._rows(
            select(Execution.id, Execution.patient_id, Execution.day, Execution.code, Execution.stem)
            .join(RECON_SERVED, and_(x.patient_id == Execution.patient_id, x.stem == Execution.stem))
            .where(Execution.source == ExecutionSource.OUTPATIENT)
        ):
            services[(patient_id, group)].append(DeliveredService(execution_id, day, code))
        stale = [
            (row_id, plan_id, activity_id)
            for row_id, plan_id, activity_id in self.session.execute(
                select(ActivityOutcome.id, ActivityOutcome.plan_id, ActivityOutcome.activity_id)
                .join(RECON_PLANS, and_(RECON_PLANS.c.plan_id == ActivityOutcome.plan_id, RECON_PLANS.c.changed))
                .where(ActivityOutcome.source == OutcomeSource.FLOWS)
            )
        ]
        return occurrences, services, stale

    def _match(
        self,
        occurrences: list[_Occurrence],
        services: dict[tuple[int, str], list[DeliveredService]],
        stale: list[tuple[int, int, str]],
    ) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]], list[int]]:
        """What to insert, update and delete so that the stored outcomes are what the rules say."""
        groups: dict[tuple[int, str], list[tuple[PlannedOccurrence, _Stored | None]]] = defaultdict(list)
        for patient_id, occurrence, group, stored in occurrences:
            if stored is not None and stored.source is OutcomeSource.MANUAL:
                continue  # a person's word stands, and takes no service from the others
            groups[(patient_id, group)].append((occurrence, stored))
        inserts: list[tuple[Any, ...]] = []
        updates: list[dict[str, Any]] = []
        deletes: list[int] = []
        kept: set[int] = set()
        for (patient_id, group), members in groups.items():
            stored_of = {(m.plan_id, m.activity_id): row for m, row in members}
            for result in reconcile([m for m, _ in members], services.get((patient_id, group), ()), self.as_of):
                row = stored_of[(result.plan_id, result.activity_id)]
                if result.outcome is None:
                    if row is not None:
                        deletes.append(row.id)
                    continue
                values = (
                    result.outcome,
                    result.window.due,
                    result.window.opens,
                    result.window.closes,
                    result.done_on,
                    result.execution_id,
                )
                if row is None:
                    inserts.append((result.plan_id, patient_id, result.activity_id, *values,
                                    OutcomeSource.FLOWS, None, SYSTEM, self.at))  # fmt: skip
                    continue
                kept.add(row.id)
                if row.values != values:
                    updates.append({"b_id": row.id, **{f"b_{k}": v for k, v in zip(STORED, values, strict=True)},
                                    "b_recorded_at": self.at})  # fmt: skip
        deletes += [row_id for row_id, _, _ in stale if row_id not in kept]
        return inserts, updates, sorted(set(deletes))

    def _write(self, inserts: list[tuple[Any, ...]], updates: list[dict[str, Any]], deletes: list[int]) -> int:
        session = self.session
        table = table_of(ActivityOutcome)
        for start in range(0, len(deletes), 10_000):
            session.execute(delete(table).where(table.c.id.in_(deletes[start : start + 10_000])))
        if updates:
            statement = (
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values({k: bindparam(f"b_{k}") for k in (*STORED, "recorded_at")})
            )
            for start in range(0, len(updates), 10_000):
                session.connection().execute(statement, updates[start : start + 10_000])
        bulk_insert(session.connection(), table, OUTCOME_COLUMNS, inserts)
        session.expire_all()
        return len(inserts) + len(updates) + len(deletes)

    def _mark(self) -> None:
        """The plans recomputed in full now stand as reconciled on their current version and status."""
        changed = select(RECON_PLANS.c.plan_id).where(RECON_PLANS.c.changed)
        self.session.execute(delete(ReconciledPlan).where(ReconciledPlan.plan_id.in_(changed)))
        self.session.execute(
            insert(table_of(ReconciledPlan)).from_select(
                ["plan_id", "version", "status", "reconciled_at"],
                select(
                    CarePlanRecord.id,
                    CarePlanRecord.current_version,
                    CarePlanRecord.status,
                    sql_literal(self.at, DateTime(timezone=True)),
                )
                .join(RECON_PLANS, RECON_PLANS.c.plan_id == CarePlanRecord.id)
                .where(RECON_PLANS.c.changed),
            )
        )

    def _rows(self, query: Any) -> Sequence[Sequence[Any]]:
        """The rows of a big SELECT: on PostgreSQL straight from the driver (dates already dates, enumerations left
        as their text, which compares equal to the members), without SQLAlchemy's per-row processing."""
        connection = self.session.connection()
        if self.dialect != "postgresql":
            return self.session.execute(query).all()
        compiled = query.compile(dialect=connection.dialect)
        with driver_of(connection).cursor() as cursor:
            rows: list[Any] = cursor.execute(str(compiled), compiled.params).fetchall()
            return rows

    def _closes(self) -> ColumnElement[date]:
        return window_closes_sql(PlanCalendarActivity.day, PlanCalendarActivity.times_per_year, self.dialect)


# --- the rules as SQL, for choosing rows (the rules themselves run in Python) -------------------------------------


def window_closes_sql(day: Any, times_per_year: Any, dialect: str) -> ColumnElement[date]:
    """The last day of an occurrence's window (``rules.activity_window``) in SQL: day + (365 // n) // 2."""
    per_year = times_per_year - 1e-9
    if dialect == "postgresql":
        occurrences: ColumnElement[int] = cast(func.greatest(1, func.ceil(per_year)), Integer)
        return cast(day + sql_literal(DAYS_IN_YEAR) // occurrences // 2, Date)
    whole = cast(per_year, Integer)  # SQLite truncates; it may lack ceil()
    occurrences = cast(func.max(1, whole + case((per_year > whole, 1), else_=0)), Integer)
    half = sql_literal(DAYS_IN_YEAR) // occurrences // 2
    return func.date(day, "+" + cast(half, String) + " days")


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
        select(PlanCalendarActivity.day, PlanCalendarActivity.times_per_year)
        .join(PlanVersion, PlanVersion.calendar_id == PlanCalendarActivity.calendar_id)
        .where(
            PlanVersion.plan_id == plan.id,
            PlanVersion.version == plan.current_version,
            PlanCalendarActivity.activity_id == activity_id,
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
    session.execute(delete(ReconciledPlan).where(ReconciledPlan.plan_id == plan.id))  # its groups, recomputed
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
