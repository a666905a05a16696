"""Generating the PAI of a whole population in one call: every patient who may be processed gets a draft plan.

:func:`generate_all_plans` applies the rules of ``presa.care.service.plans.generate_plan`` to everyone at once,
set-based: a patient is processed when their open episode is at ``pact_signed``, ``pai_active`` or ``suspended``,
the latest signed-or-revoked version of its care pact is signed (not revoked) and gives consent to care, and no
draft or active plan of the episode overlaps the 12 months from ``start``. Running it twice generates nothing the
second time.

Each plan is the pure core's (``presa.care.calendar.draft_care_plan``: ``merge_pathways``, then ``lay_calendar``),
stored as ``generate_plan`` stores it: one ``care_plans`` row, version 1 in ``care_plan_versions`` naming its
calendar of dated activities (``presa.care.store.calendars``: stored once per distinct calendar), one audit row.
The merge depends only on the set of pathologies, the level, the sex and the templates' age bracket
(``TemplateSet.age_breakpoints``); the calendar only on the merged activities, the start and the patron saint's
day of the municipality. So each distinct merge is made once and rendered once in the database's load format,
each distinct calendar laid and stored once; a patient then costs two dictionary look-ups and a few string joins
(``cache=False`` drafts every patient afresh, to measure what that saves; their calendars are still stored once).

Storage is the database's bulk load, never an ORM INSERT per row. On PostgreSQL plans, versions and audit rows go
in by COPY, as text assembled from those pre-rendered pieces: ``presa.care.store.bulk.bulk_insert`` would convert
every value of every row in Python again, which for a region costs more than the database takes to store them. On
SQLite, executemany (``bulk_insert``). The calendars met for the first time are stored by
``presa.care.store.calendars`` (COPY too). Ids of plans and versions are taken beforehand (from the sequences on
PostgreSQL), so that versions and audit rows can name them. A region's batch (from ``BULK_REFERENCES`` patients,
PostgreSQL) has its foreign keys checked once at the end rather than row by row (``_references_checked_once``).
Candidates stream from one query in chunks of ``chunk_size`` patients, which bound the memory; ``on_progress``
gets the running totals after each chunk.
Everything happens in the caller's transaction; nothing is committed.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Text, and_, cast, exists, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.schema import AddConstraint, DropConstraint

from presa.care.calendar import PatronDay, lay_calendar, patron_day, year_after
from presa.care.pact import ConsentScope, PactStatus
from presa.care.pdta import Sex, TemplateSet, default_templates
from presa.care.plan import MergedPlan, PlanActivity, PlannedActivity, merge_pathways
from presa.care.service.common import now, today_in_italy
from presa.care.service.plans import PLANNABLE
from presa.care.store.audit import origin, record
from presa.care.store.bulk import bulk_insert, copy_text, copy_value, driver_of, table_of
from presa.care.store.calendars import CalendarDigests, store_calendars
from presa.care.store.models import (
    AuditEvent,
    CarePact,
    CarePlanRecord,
    Episode,
    PactScope,
    Patient,
    PlanCalendarActivity,
    PlanStatus,
    PlanVersion,
)

CHUNK_PATIENTS = 20_000
"""Patients per chunk: their candidate rows and plans are in memory at once (the rendered distinct plans are shared)."""
BULK_REFERENCES = 50_000
"""Plans from which, on PostgreSQL, their references are checked once at the end (``_references_checked_once``)."""
BULK_FOREIGN_KEYS = tuple(
    sorted(
        (fk for m in (CarePlanRecord, PlanVersion, PlanCalendarActivity) for fk in table_of(m).foreign_key_constraints),
        key=lambda fk: str(fk.name),
    )
)
"""The foreign keys a region's load checks once: those of the plans, their versions and the calendar activities."""
USUAL_AGES = range(0, 121)
"""Ages keyed by their template bracket; any other age is keyed by itself, so the pure core judges it."""

# Column orders chosen so that the parts shared by a run or by a distinct plan are contiguous.
PLAN_COLUMNS = (
    "id",
    "episode_id",
    "patient_id",
    "pact_id",
    "municipality",
    "age",
    "level",
    "sex",
    "pathologies",
    "pathways",
    "generic_follow_up",
    "start_on",
    "end_on",
    "status",
    "current_version",
    "templates_digest",
    "created_at",
    "created_by",
)
VERSION_COLUMNS = ("id", "plan_id", "calendar_id", "version", "author", "created_at")
AUDIT_COLUMNS = ("at", "actor", "remote_addr", "action", "entity", "entity_id", "patient_id", "detail")


@dataclass(frozen=True, slots=True)
class SkippedPatient:
    """A processable patient whose plan the pure core refused to build, and why."""

    patient_id: int
    resident_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class BulkPlanReport:
    """What :func:`generate_all_plans` did (or, passed to ``on_progress``, has done so far)."""

    plans: int
    activities: int
    seconds: float
    start: date | None = None
    chunks: int = 0
    distinct_plans: int = 0
    """Calendars laid: one per distinct (merged activities, patron saint's day) with the cache, else one per plan."""
    skipped: tuple[SkippedPatient, ...] = ()


ProgressCallback = Callable[[BulkPlanReport], None]


@dataclass(frozen=True, slots=True)
class _Run:
    """What every plan of one call shares."""

    start: date
    end: date
    author: str
    at: datetime
    digest: str
    remote_addr: str | None
    """The session's origin (``presa.care.store.audit.set_origin``), for the audit rows."""


@dataclass(frozen=True, slots=True)
class _Merged:
    """One distinct merge - pathologies, level, sex, age bracket - and its plan row's middle, rendered by the store."""

    merged: MergedPlan
    pathologies: list[str]
    pathways: list[str]
    generic_follow_up: list[str]
    activity_set: int
    """The same number for every merge that plans the same activities (whatever pathologies asked for them)."""
    rendered: Any


@dataclass(frozen=True, slots=True)
class _Laid:
    """One distinct calendar - the merged activities laid from the start, without the patron saint's day - and its
    digest, by which the store knows whether it has stored it."""

    planned: tuple[PlannedActivity, ...]
    digest: str

    @property
    def activities(self) -> int:
        return len(self.planned)


@dataclass(frozen=True, slots=True)
class _Candidate:
    episode_id: int
    patient_id: int
    pact_id: int
    municipality: str | None
    age: int
    merge: _Merged
    laid: _Laid


_MergeKey = tuple[tuple[str, ...], int, int | tuple[str, int], str]


class _Planner:
    """The plans of one call: merges and calendars made once per distinct inputs (unless ``cache`` is off)."""

    def __init__(self, store: _Store, templates: TemplateSet, *, cache: bool) -> None:
        self.store, self.templates, self.cache = store, templates, cache
        self.merges: dict[_MergeKey, _Merged | str] = {}
        self.calendars: dict[tuple[int, PatronDay | None], _Laid | str] = {}
        self.activity_sets: dict[tuple[PlanActivity, ...], int] = {}
        self.pathology_sets: dict[str, tuple[str, ...]] = {}
        self.digests = CalendarDigests()
        self.laid = 0

    def plan(self, pathologies: str, level: int, age: int, sex: str, municipality: str | None) -> Any:
        """The patient's merge and calendar, or why the pure core refuses to build the plan.

        ``pathologies`` is the stored JSON list as text: a region has few distinct sets, each decoded once.
        """
        wanted = self.pathology_sets.get(pathologies)
        if wanted is None:
            wanted = self.pathology_sets[pathologies] = tuple(sorted(set(json.loads(pathologies))))
        key: _MergeKey = (wanted, level, _age_key(self.templates, age), sex)
        merge = self.merges.get(key) if self.cache else None
        if merge is None:
            merge = self._merge(wanted, level, age, sex)
            if self.cache:
                self.merges[key] = merge
        if isinstance(merge, str):
            return merge
        patron = patron_day(municipality)
        laid = self.calendars.get((merge.activity_set, patron)) if self.cache else None
        if laid is None:
            laid = self._lay(merge.merged, municipality)
            if self.cache:
                self.calendars[merge.activity_set, patron] = laid
        return laid if isinstance(laid, str) else (merge, laid)

    def _merge(self, pathologies: tuple[str, ...], level: int, age: int, sex: str) -> _Merged | str:
        if sex not in ("M", "F"):
            return f"sex must be 'M' or 'F', not {sex!r}"
        checked: Sex = "M" if sex == "M" else "F"
        try:
            merged = merge_pathways(pathologies, level=level, age=age, sex=checked, templates=self.templates)
        except ValueError as exc:
            return str(exc)
        activity_set = self.activity_sets.setdefault(merged.activities, len(self.activity_sets))
        lists = list(merged.pathologies), list(merged.pathways), list(merged.generic_follow_up)
        return _Merged(merged, *lists, activity_set, self.store.render_merge(merged))

    def _lay(self, merged: MergedPlan, municipality: str | None) -> _Laid | str:
        """As ``presa.care.calendar.draft_care_plan`` after the merge."""
        try:
            plan = lay_calendar(merged, self.store.run.start, municipality=municipality)
        except ValueError as exc:
            return str(exc)
        self.laid += 1
        return _Laid(plan.activities, self.digests(plan.activities))


def generate_all_plans(
    session: Session,
    *,
    author: str,
    on_progress: ProgressCallback | None = None,
    start: date | None = None,
    at: datetime | None = None,
    templates: TemplateSet | None = None,
    chunk_size: int = CHUNK_PATIENTS,
    cache: bool = True,
    references_checked_once_from: int = BULK_REFERENCES,
) -> BulkPlanReport:
    """Generate and store version 1 of a draft plan from ``start`` (today in Italy by default) for every patient
    who may be processed and has none for those 12 months; see the module docstring. Nothing is committed.

    Patients whose plan the pure core cannot build (an impossible age, say) are reported in ``skipped``. On
    PostgreSQL, from ``references_checked_once_from`` patients the plans' references are checked once at the end,
    the plan tables locked meanwhile (``_references_checked_once``).
    """
    if not author.strip():
        raise ValueError("bulk plan generation needs an author")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if at is not None and at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: give a timezone-aware instant")
    started = time.perf_counter()
    at = at or now()
    start = start or today_in_italy(at)
    template_set = templates or default_templates()
    run = _Run(start, year_after(start), author, at, template_set.digest, origin(session))
    session.flush()
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    store = _PostgresStore(connection, run) if postgres else _SqliteStore(connection, run)
    planner = _Planner(store, template_set, cache=cache)
    plans = activities = chunks = 0
    skipped: list[SkippedPatient] = []

    def report() -> BulkPlanReport:
        seconds = time.perf_counter() - started
        return BulkPlanReport(plans, activities, seconds, start, chunks, planner.laid, tuple(skipped))

    candidates = _candidates_query(run.start, run.end)
    once = postgres and store.expected(candidates) >= references_checked_once_from
    with _references_checked_once(connection, once):
        for rows in store.candidates(candidates, chunk_size):
            chosen: list[_Candidate] = []
            for row in rows:
                episode_id, patient_id, pact_id, resident_id, sex, birth_date, municipality, level, pathologies = row
                age = _age_on(birth_date, start)
                planned = planner.plan(pathologies, level, age, sex, municipality)
                if isinstance(planned, str):
                    skipped.append(SkippedPatient(patient_id, resident_id, planned))
                    continue
                chosen.append(_Candidate(episode_id, patient_id, pact_id, municipality, age, *planned))
            if chosen:
                store.store_chunk(chosen)
            plans += len(chosen)
            activities += sum(c.laid.activities for c in chosen)
            chunks += 1
            if on_progress is not None:
                on_progress(report())
    detail = {"start": start.isoformat(), "plans": plans, "activities": activities, "skipped": len(skipped)}
    record(session, actor=author, action="generate_all", entity="care_plan", detail=detail, at=at)
    session.flush()
    return report()


def _candidates_query(start: date, end: date) -> Any:
    """The patients ``generate_plan`` would accept for the 12 months from ``start``, one row each, by episode."""
    later = aliased(CarePact)
    return (
        select(
            Episode.id,
            Patient.id,
            CarePact.id,
            Patient.resident_id,
            Patient.sex,
            Patient.birth_date,
            Patient.municipality,
            Patient.level,
            cast(Patient.pathologies, Text),
        )
        .join(Patient, Patient.id == Episode.patient_id)
        .join(CarePact, and_(CarePact.episode_id == Episode.id, CarePact.status == PactStatus.SIGNED))
        .where(
            Episode.closed_on.is_(None),
            Episode.state.in_(sorted(PLANNABLE)),
            # the latest signed-or-revoked version rules (presa.care.pact.processing_decision)
            ~exists().where(
                later.episode_id == Episode.id,
                later.status.in_((PactStatus.SIGNED, PactStatus.REVOKED)),
                later.version > CarePact.version,
            ),
            exists().where(PactScope.pact_id == CarePact.id, PactScope.scope == ConsentScope.CARE),
            ~exists().where(
                CarePlanRecord.episode_id == Episode.id,
                CarePlanRecord.status.in_((PlanStatus.DRAFT, PlanStatus.ACTIVE)),
                CarePlanRecord.start_on < end,
                CarePlanRecord.end_on > start,
            ),
        )
        .order_by(Episode.id)
    )


def _age_on(birth_date: date, day: date) -> int:
    """As ``Patient.age_on``."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def _age_key(templates: TemplateSet, age: int) -> int | tuple[str, int]:
    """Patients between two age breakpoints merge alike (``presa.care.plan.merge_pathways``)."""
    if age in USUAL_AGES:
        return bisect_right(templates.age_breakpoints, age)
    return ("age", age)


@contextmanager
def _references_checked_once(connection: Connection, once: bool) -> Iterator[None]:
    """When ``once``, :data:`BULK_FOREIGN_KEYS` (of plans, versions, calendar activities) are dropped for the
    load and added back at its end, in the same transaction: PostgreSQL then checks each with one query over
    the tables instead of a locking look-up per row, which cost more than storing the rows themselves
    (docs/PERFORMANCE.md; PostgreSQL's manual, "Populating a Database": "a foreign key constraint can be checked
    in bulk more efficiently than row-by-row"). The price: until the transaction ends, no one else reads or
    writes the plan tables.
    """
    constraints = BULK_FOREIGN_KEYS if once else ()
    for constraint in constraints:
        connection.execute(DropConstraint(constraint))
    try:
        yield
    except BaseException:
        # Added back even after an error, so that a caller who commits anyway keeps them; when the error aborted
        # the transaction that fails too, and the rollback the caller must make restores them.
        with suppress(SQLAlchemyError):
            _add_back(connection, constraints)
        raise
    _add_back(connection, constraints)


def _add_back(connection: Connection, constraints: Sequence[ForeignKeyConstraint]) -> None:
    for constraint in constraints:
        connection.execute(AddConstraint(constraint))


# --- the two stores ------------------------------------------------------------------------------------------


class _Store:
    """What differs between PostgreSQL and SQLite: streaming the candidates, taking ids, rendering and writing."""

    def __init__(self, connection: Connection, run: _Run) -> None:
        self.connection, self.run = connection, run
        self._calendars: dict[str, int] = {}

    def store_chunk(self, chosen: Sequence[_Candidate]) -> None:
        """Ids taken, new calendars stored, then the plans, their versions and audit rows."""
        plan_ids, version_ids = self.reserve_ids(len(chosen))
        self.write(chosen, plan_ids, version_ids, self.calendar_ids(c.laid for c in chosen))

    def calendar_ids(self, laid: Iterable[_Laid]) -> dict[str, int]:
        """Each calendar's id by its digest, the calendars met for the first time stored (or found stored)."""
        new = {c.digest: c.planned for c in laid if c.digest not in self._calendars}
        if new:
            self._calendars.update(store_calendars(self.connection, new))
        return self._calendars

    def candidates(self, query: Any, chunk_size: int) -> Iterator[Sequence[Any]]:
        raise NotImplementedError

    def expected(self, query: Any) -> int:
        """How many patients the query finds (before the pure core's refusals)."""
        counted = select(func.count()).select_from(query.order_by(None).subquery())
        return int(self.connection.execute(counted).scalar_one())

    def reserve_ids(self, count: int) -> tuple[Sequence[int], Sequence[int]]:
        """Ids for ``count`` new plans and as many versions."""
        raise NotImplementedError

    def render_merge(self, merged: MergedPlan) -> Any:
        raise NotImplementedError

    def write(
        self,
        chosen: Sequence[_Candidate],
        plan_ids: Sequence[int],
        version_ids: Sequence[int],
        calendar_ids: Mapping[str, int],
    ) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _MergeText:
    """A distinct merge's parts of the COPY text: the middle of its plan row, the end of its audit detail."""

    plan: str
    audit: str


class _PostgresStore(_Store):
    """One server-side cursor over the candidates; ids from the sequences; every row by COPY, as text."""

    def __init__(self, connection: Connection, run: _Run) -> None:
        super().__init__(connection, run)
        at, author = copy_value(run.at.isoformat()), copy_value(run.author)
        self._plan_tail = f"\t{run.start.isoformat()}\t{run.end.isoformat()}\t{PlanStatus.DRAFT.value}\t1"
        self._plan_tail += f"\t{copy_value(run.digest)}\t{at}\t{author}\n"
        self._version_tail = f"\t1\t{author}\t{at}\n"
        self._audit_head = f"{at}\t{author}\t{copy_value(run.remote_addr)}\tgenerate\tcare_plan\t"
        self._audit_detail = copy_value('{"start": ' + _json(run.start.isoformat()) + ', "activities": ')

    def candidates(self, query: Any, chunk_size: int) -> Iterator[Sequence[Any]]:
        # A cursor is planned for its first rows (cursor_tuple_fraction 0.1: nested loops); all of them are wanted.
        setting = "cursor_tuple_fraction"
        with driver_of(self.connection).cursor() as cursor:
            cursor.execute("SELECT current_setting(%s), set_config(%s, '1', true)", (setting, setting))
            row = cursor.fetchone()
        previous = str(row[0]) if row else "0.1"
        result = self.connection.execute(query, execution_options={"yield_per": chunk_size})
        try:
            with driver_of(self.connection).cursor() as cursor:
                cursor.execute("SELECT set_config(%s, %s, true)", (setting, previous))
            yield from result.partitions()
        finally:
            result.close()

    def reserve_ids(self, count: int) -> tuple[Sequence[int], Sequence[int]]:
        # The sequences' names are looked up once: pg_get_serial_sequence in the SELECT would run once per id.
        names = (table_of(CarePlanRecord).name, table_of(PlanVersion).name)
        with driver_of(self.connection).cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id'), pg_get_serial_sequence(%s, 'id')", names)
            sequences = cursor.fetchone()
            cursor.execute(
                "SELECT nextval(%s::regclass), nextval(%s::regclass) FROM generate_series(1, %s)", (*sequences, count)
            )
            rows = cursor.fetchall()
        return [int(r[0]) for r in rows], [int(r[1]) for r in rows]

    def render_merge(self, merged: MergedPlan) -> _MergeText:
        lists = (merged.pathologies, merged.pathways, merged.generic_follow_up)
        middle = "\t".join((str(merged.level), copy_value(merged.sex), *(copy_value(_json(v)) for v in lists)))
        return _MergeText(middle, copy_value(', "pathways": ' + _json(merged.pathways) + "}"))

    def write(
        self,
        chosen: Sequence[_Candidate],
        plan_ids: Sequence[int],
        version_ids: Sequence[int],
        calendar_ids: Mapping[str, int],
    ) -> None:
        plan_tail, version_tail = self._plan_tail, self._version_tail
        audit_head, audit_detail = self._audit_head, self._audit_detail

        def plans() -> Iterator[str]:
            for plan_id, c in zip(plan_ids, chosen, strict=True):
                municipality = "\\N" if c.municipality is None else copy_value(c.municipality)
                middle: str = c.merge.rendered.plan
                yield f"{plan_id}\t{c.episode_id}\t{c.patient_id}\t{c.pact_id}\t{municipality}\t{c.age}\t{middle}"
                yield plan_tail

        def versions() -> Iterator[str]:
            for version_id, plan_id, c in zip(version_ids, plan_ids, chosen, strict=True):
                yield f"{version_id}\t{plan_id}\t{calendar_ids[c.laid.digest]}{version_tail}"

        def audit() -> Iterator[str]:
            for plan_id, c in zip(plan_ids, chosen, strict=True):
                end: str = c.merge.rendered.audit
                yield f"{audit_head}{plan_id}\t{c.patient_id}\t{audit_detail}{c.laid.activities}{end}\n"

        self._copy(CarePlanRecord, PLAN_COLUMNS, plans())
        self._copy(PlanVersion, VERSION_COLUMNS, versions())
        self._copy(AuditEvent, AUDIT_COLUMNS, audit())

    def _copy(self, model: type[Any], columns: Sequence[str], lines: Iterator[str]) -> None:
        copy_text(self.connection, table_of(model), columns, lines)


class _SqliteStore(_Store):
    """Candidates page by page (the store is written while they are read); ids after the largest; executemany."""

    def candidates(self, query: Any, chunk_size: int) -> Iterator[Sequence[Any]]:
        after = 0
        while rows := self.connection.execute(query.where(Episode.id > after).limit(chunk_size)).all():
            after = rows[-1][0]
            yield rows

    def reserve_ids(self, count: int) -> tuple[Sequence[int], Sequence[int]]:
        ids = []
        for model in (CarePlanRecord, PlanVersion):
            name = table_of(model).name
            largest = self.connection.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {name}").scalar()
            ids.append(range(int(largest or 0) + 1, int(largest or 0) + 1 + count))
        return ids[0], ids[1]

    def render_merge(self, merged: MergedPlan) -> None:
        return None  # plans and audit rows go through bulk_insert, from the merge's lists

    def write(
        self,
        chosen: Sequence[_Candidate],
        plan_ids: Sequence[int],
        version_ids: Sequence[int],
        calendar_ids: Mapping[str, int],
    ) -> None:
        run, connection = self.run, self.connection
        plans = list(zip(plan_ids, chosen, strict=True))

        def plan_row(plan_id: int, c: _Candidate) -> tuple[Any, ...]:
            m = c.merge
            return (
                *(plan_id, c.episode_id, c.patient_id, c.pact_id, c.municipality, c.age, m.merged.level),
                *(m.merged.sex, m.pathologies, m.pathways, m.generic_follow_up, run.start, run.end),
                *(PlanStatus.DRAFT, 1, run.digest, run.at, run.author),
            )

        def audit_row(plan_id: int, c: _Candidate) -> tuple[Any, ...]:
            detail = {"start": run.start.isoformat(), "activities": c.laid.activities, "pathways": c.merge.pathways}
            return (run.at, run.author, run.remote_addr, "generate", "care_plan", str(plan_id), c.patient_id, detail)

        bulk_insert(connection, table_of(CarePlanRecord), PLAN_COLUMNS, (plan_row(p, c) for p, c in plans))
        bulk_insert(
            connection,
            table_of(PlanVersion),
            VERSION_COLUMNS,
            (
                (v, p, calendar_ids[c.laid.digest], 1, run.author, run.at)
                for v, p, c in zip(version_ids, plan_ids, chosen, strict=True)
            ),
        )
        bulk_insert(connection, table_of(AuditEvent), AUDIT_COLUMNS, (audit_row(p, c) for p, c in plans))


def _json(value: Any) -> str:
    """JSON as ``presa.care.store.bulk`` writes it."""
    return json.dumps(value, ensure_ascii=False)
