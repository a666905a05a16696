"""Loading a stratification run: who is eligible, at which level, with which pathologies - keeping history.

:func:`load_run` reads the run through ``presa.stratify.runview.open_run`` and, in the caller's transaction:

1. records the run (refusing one already loaded, or one older than the latest loaded);
2. bulk-loads one ``patient_strata`` row per resident who is eligible now (levels 1-3: the chronic patients) or
   was a patient already: COPY on PostgreSQL, executemany on SQLite;
3. then, set-based in SQL: adds the new patients; brings the known ones to this run's level, pathologies, ATS and
   GP (earlier values stay in ``patient_strata``); marks as not eligible the patients the run does not find
   eligible, or does not find at all;
4. ends the open episodes of patients no longer eligible that nobody has taken in charge yet (``eligible`` or
   ``invited``; see ``presa.care.enrolment.NO_LONGER_ELIGIBLE_ENDS``), and opens an ``eligible`` episode for
   every eligible patient without an open one, each with its history row.

One audit row records the load and its figures; a run is a population-level input, not a user's access to a
patient.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import and_, exists, func, insert, literal, not_, select, update
from sqlalchemy.orm import Session

from presa.care.enrolment import NO_LONGER_ELIGIBLE_ENDS, TRANSITIONS, EpisodeState
from presa.care.service.common import CareError, now, today_in_italy
from presa.care.service.episodes import record_transitions
from presa.care.store.audit import record
from presa.care.store.bulk import bulk_insert, counted, table_of
from presa.care.store.models import Episode, EpisodeEvent, Patient, PatientStratum, StratificationRun
from presa.stratify.layout import RunPaths
from presa.stratify.runview import open_run, run_info

ELIGIBLE_LEVELS = (1, 2, 3)
"""The chronic levels: 1 high clinical frailty, 2 polypathology, 3 initial chronicity (docs/GLOSSARY.md)."""
BATCH_ROWS = 50_000
STRATUM_COLUMNS = (
    "run_id",
    "resident_id",
    "sex",
    "birth_date",
    "age",
    "ats_code",
    "gp_id",
    "municipality",
    "level",
    "pathologies",
    "eligible",
)
STRATA_QUERY = """
SELECT resident_id, sex, birth_date, age, ats, gp_id, municipality, level,
       coalesce(pathologies, []::VARCHAR[]) AS pathologies, level IN (1, 2, 3) AS eligible
FROM residents
WHERE level IN (1, 2, 3) OR resident_id IN (SELECT resident_id FROM known_patients)
ORDER BY resident_id
"""

assert all(EpisodeState.ENDED in TRANSITIONS[s] for s in NO_LONGER_ELIGIBLE_ENDS)


@dataclass(frozen=True, slots=True)
class RunLoad:
    """What loading a run changed."""

    run_id: int
    reference_date: date
    population: int
    strata: int
    eligible: int
    new_patients: int
    level_changes: int
    no_longer_eligible: int
    episodes_opened: int
    episodes_ended: int
    seconds: float


def load_run(
    session: Session, run_dir: Path, *, author: str, at: datetime | None = None, today: date | None = None
) -> RunLoad:
    """Load the run in ``run_dir`` into the care store (see the module docstring); nothing is committed."""
    started = time.perf_counter()
    at = at or now()
    today = today or today_in_italy(at)
    paths = RunPaths(run_dir)
    info = run_info(paths)
    digest = hashlib.sha256(paths.run_json.read_bytes()).hexdigest()
    reference = date.fromisoformat(info["reference_date"])
    _check_new_and_recent(session, digest, reference, run_dir)
    catalog = info.get("catalog", {})
    run = StratificationRun(
        source=str(run_dir.resolve()),
        run_digest=digest,
        catalog_name=str(catalog.get("name", "")),
        catalog_version=str(catalog.get("version", "")),
        catalog_digest=str(catalog.get("digest", "")),
        reference_date=reference,
        population=0,
        eligible=0,
        loaded_at=at,
        loaded_by=author,
    )
    session.add(run)
    session.flush()

    known = pa.table({"resident_id": pa.array(session.scalars(select(Patient.resident_id)).all(), pa.string())})
    duck = open_run(run_dir)
    try:
        duck.register("known_patients", known)
        [population_row] = duck.execute("SELECT count(*) FROM residents").fetchall()
        population = _scalar_int(population_row)
        reader = duck.sql(STRATA_QUERY).to_arrow_reader(BATCH_ROWS)
        connection = session.connection()
        strata = bulk_insert(connection, table_of(PatientStratum), STRATUM_COLUMNS, _stratum_rows(run.id, reader))
    finally:
        duck.close()

    changes = _apply_strata(session, run.id, at)
    ended = _end_no_longer_eligible(session, run.id, reference, author, at, today)
    opened = _open_episodes(session, run.id, reference, author, at, today)
    eligible = _count(session, PatientStratum, PatientStratum.run_id == run.id, PatientStratum.eligible)
    run.population, run.eligible = population, eligible
    load = RunLoad(
        run_id=run.id,
        reference_date=reference,
        population=population,
        strata=strata,
        eligible=eligible,
        new_patients=changes["new"],
        level_changes=changes["level_changes"],
        no_longer_eligible=changes["no_longer_eligible"],
        episodes_opened=opened,
        episodes_ended=ended,
        seconds=time.perf_counter() - started,
    )
    detail = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(load).items() if k != "seconds"}
    record(
        session, actor=author, action="load_run", entity="stratification_run", entity_id=run.id, detail=detail, at=at
    )
    session.flush()
    return load


def _check_new_and_recent(session: Session, digest: str, reference: date, run_dir: Path) -> None:
    loaded = session.scalars(select(StratificationRun).where(StratificationRun.run_digest == digest)).first()
    if loaded is not None:
        raise CareError(f"run {run_dir} is already loaded (run {loaded.id}, on {loaded.loaded_at:%Y-%m-%d %H:%M})")
    latest = session.scalars(select(StratificationRun).order_by(StratificationRun.reference_date.desc())).first()
    if latest is not None and reference < latest.reference_date:
        raise CareError(
            f"run {run_dir} has reference date {reference.isoformat()}, before the latest loaded run "
            f"{latest.id} ({latest.reference_date.isoformat()}): load runs in date order"
        )


def _stratum_rows(run_id: int, reader: pa.RecordBatchReader) -> Iterator[tuple[Any, ...]]:
    for batch in reader:
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for resident_id, sex, birth, age, ats, gp, municipality, level, pathologies, eligible in zip(
            *columns, strict=True
        ):
            yield (run_id, resident_id, sex, birth, age, ats, gp, municipality, level, pathologies, eligible)


def _apply_strata(session: Session, run_id: int, at: datetime) -> dict[str, int]:
    s = PatientStratum
    in_run = and_(s.run_id == run_id, s.resident_id == Patient.resident_id)
    level_changes = _count(session, Patient, exists().where(in_run, s.level != Patient.level))
    no_longer = _count(session, Patient, Patient.eligible, ~exists().where(in_run, s.eligible))
    new = counted(
        session,
        (
            insert(Patient).from_select(
                [
                    "resident_id",
                    "sex",
                    "birth_date",
                    "municipality",
                    "ats_code",
                    "gp_id",
                    "level",
                    "pathologies",
                    "eligible",
                    "run_id",
                    "created_at",
                    "updated_at",
                ],
                select(
                    s.resident_id,
                    s.sex,
                    s.birth_date,
                    s.municipality,
                    s.ats_code,
                    s.gp_id,
                    s.level,
                    s.pathologies,
                    s.eligible,
                    s.run_id,
                    literal(at, Patient.created_at.type),
                    literal(at, Patient.updated_at.type),
                ).where(
                    s.run_id == run_id,
                    s.eligible,
                    ~exists().where(Patient.resident_id == s.resident_id),
                ),
            )
        ),
    )
    session.execute(
        update(Patient)
        .where(in_run, Patient.run_id != run_id)
        .values(
            sex=s.sex,
            birth_date=s.birth_date,
            municipality=s.municipality,
            ats_code=s.ats_code,
            gp_id=s.gp_id,
            level=s.level,
            pathologies=s.pathologies,
            eligible=s.eligible,
            run_id=run_id,
            updated_at=at,
        )
    )
    # Patients the run does not see at all (moved away, died): no longer eligible, last known level kept.
    session.execute(
        update(Patient).where(Patient.run_id != run_id, Patient.eligible).values(eligible=False, updated_at=at)
    )
    return {"new": new, "level_changes": level_changes, "no_longer_eligible": no_longer}


def _end_no_longer_eligible(
    session: Session, run_id: int, reference: date, author: str, at: datetime, today: date
) -> int:
    """End the open, not yet taken-in-charge episodes of patients who are no longer eligible."""
    e = Episode
    target = and_(
        e.closed_on.is_(None),
        e.state.in_(NO_LONGER_ELIGIBLE_ENDS),
        exists().where(Patient.id == e.patient_id, not_(Patient.eligible)),
    )
    reason = f"no longer eligible in stratification run {run_id} (reference date {reference.isoformat()})"
    record_transitions(session, target, EpisodeState.ENDED, reason=reason, author=author, at=at, effective_on=today)
    return counted(
        session, (update(e).where(target).values(state=EpisodeState.ENDED, state_since=today, closed_on=today))
    )


def _open_episodes(session: Session, run_id: int, reference: date, author: str, at: datetime, today: date) -> int:
    opened = counted(
        session,
        (
            insert(Episode).from_select(
                ["patient_id", "state", "state_since", "opened_run_id", "level_at_opening", "opened_at"],
                select(
                    Patient.id,
                    literal(EpisodeState.ELIGIBLE, Episode.state.type),
                    literal(today, Episode.state_since.type),
                    literal(run_id),
                    Patient.level,
                    literal(at, Episode.opened_at.type),
                ).where(
                    Patient.run_id == run_id,
                    Patient.eligible,
                    ~exists().where(Episode.patient_id == Patient.id, Episode.closed_on.is_(None)),
                ),
            )
        ),
    )
    reason = f"eligible in stratification run {run_id} (reference date {reference.isoformat()})"
    fresh = and_(Episode.opened_run_id == run_id, ~exists().where(EpisodeEvent.episode_id == Episode.id))
    record_transitions(
        session, fresh, EpisodeState.ELIGIBLE, reason=reason, author=author, at=at, effective_on=today, first=True
    )
    return opened


def _count(session: Session, model: type[Any], *conditions: Any) -> int:
    return _scalar_int((session.scalar(select(func.count()).select_from(model).where(*conditions)),))


def _scalar_int(row: tuple[Any, ...] | None) -> int:
    if row is None or row[0] is None:
        return 0
    return int(row[0])
