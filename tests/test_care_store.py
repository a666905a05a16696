"""The care store itself: migrations up and down, the append-only audit trail, bulk loads, column types, URLs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from presa.care.enrolment import EpisodeState
from presa.care.store import current_revision, database_url, downgrade, make_engine, normalise_url, upgrade
from presa.care.store.audit import AuditTrailError, record, trail
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import (
    Ats,
    AuditEvent,
    Episode,
    Patient,
    PatientStratum,
    StratificationRun,
)
from presa.care.store.schema import metadata

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
HEAD = "0014"
STORE_TABLES = set(metadata.tables)


def add_run(db: Session, digest: str = "d1") -> StratificationRun:
    run = StratificationRun(
        source="/runs/r1",
        run_digest=digest,
        catalog_name="c",
        catalog_version="1",
        catalog_digest="x",
        reference_date=date(2025, 12, 31),
        population=0,
        eligible=0,
        loaded_at=T0,
        loaded_by="loader",
    )
    db.add(run)
    db.flush()
    return run


def add_patient(db: Session, run: StratificationRun, resident_id: str = "R1", **fields: Any) -> Patient:
    values: dict[str, Any] = {
        "sex": "F",
        "birth_date": date(1950, 5, 1),
        "municipality": "015146",
        "ats_code": "321",
        "gp_id": "GP1",
        "level": 2,
        "pathologies": ["hypertension", "diabetes_type2"],
        "eligible": True,
        "created_at": T0,
        "updated_at": T0,
    }
    patient = Patient(resident_id=resident_id, run_id=run.id, **(values | fields))
    db.add(patient)
    db.flush()
    return patient


# --- migrations ----------------------------------------------------------------------------------------------


def test_migrations_upgrade_to_the_models_and_downgrade_to_nothing(empty_database: str) -> None:
    engine = make_engine(empty_database)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == HEAD
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == STORE_TABLES | {"alembic_version"}
            # The migrated schema is exactly what the models declare: no column, index or constraint differs.
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            codes = connection.execute(text("SELECT code FROM ats ORDER BY code")).scalars().all()
            assert codes == ["321", "322", "323", "324", "325", "326", "327", "328"]
            if engine.dialect.name == "postgresql":  # what the models cannot declare (migration 0013)
                statistics = connection.execute(text("SELECT stxname FROM pg_statistic_ext")).scalars().all()
                assert "st_followup_work_items_owner_gestore" in statistics

        downgrade(engine, "base")
        assert current_revision(engine) is None
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {"alembic_version"}
            if engine.dialect.name == "postgresql":
                functions = connection.execute(
                    text("SELECT count(*) FROM pg_proc WHERE proname = 'presa_refuse_audit_change'")
                ).scalar_one()
                assert functions == 0

        upgrade(engine)  # the downgrade left nothing behind that a new upgrade trips over
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_each_revision_upgrades_and_downgrades_on_its_own(empty_database: str) -> None:
    engine = make_engine(empty_database)
    try:
        upgrade(engine, "0001")
        with engine.connect() as connection:
            assert "accounts" not in inspect(connection).get_table_names()
        upgrade(engine)
        with engine.connect() as connection:
            assert {"accounts", "api_tokens"} <= set(inspect(connection).get_table_names())
        downgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
        assert "accounts" not in tables and "api_tokens" not in tables and "patients" in tables
    finally:
        engine.dispose()


def test_migrations_ship_as_package_data() -> None:
    import presa.care.migrations

    root = Path(presa.care.migrations.__file__).parent
    assert (root / "env.py").is_file() and (root / "script.py.mako").is_file()
    assert [p.name for p in sorted((root / "versions").glob("r*.py"))] == [
        "r0001_initial_care_store.py",
        "r0002_accounts_and_api_tokens.py",
        "r0003_followup.py",
        "r0004_web_sessions.py",
        "r0005_followup_at_scale.py",
        "r0006_executions_lean.py",
        "r0007_sign_in_address_failures.py",
        "r0008_patient_pseudonym_index.py",
        "r0009_caregiver_reminders_scope.py",
        "r0010_patients_without_pseudonym_index.py",
        "r0011_executions_without_foreign_keys.py",
        "r0012_shared_plan_calendars.py",
        "r0013_work_items_owner_queue.py",
        "r0014_work_items_kind_queue.py",
    ]


# --- audit trail ---------------------------------------------------------------------------------------------


def test_audit_rows_are_written_and_read_back_in_order(db: Session) -> None:
    record(db, actor="anna", action="read", entity="patient", entity_id=7, patient_id=7, at=T0, remote_addr="10.0.0.1")
    record(db, actor="bruno", action="update", entity="care_plan", entity_id=3, patient_id=7, at=T0 + timedelta(1))
    record(db, actor="anna", action="read", entity="patient", entity_id=8, patient_id=8, at=T0 + timedelta(2))
    db.flush()

    rows = trail(db, patient_id=7)
    assert [(r.actor, r.action, r.entity, r.entity_id) for r in rows] == [
        ("anna", "read", "patient", "7"),
        ("bruno", "update", "care_plan", "3"),
    ]
    assert rows[0].at == T0 and rows[0].at.tzinfo is not None and rows[0].remote_addr == "10.0.0.1"
    assert [r.patient_id for r in trail(db, actor="anna")] == [7, 8]
    assert [r.patient_id for r in trail(db, since=T0 + timedelta(1))] == [7, 8]
    with pytest.raises(ValueError, match="actor"):
        record(db, actor=" ", action="read", entity="patient")


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events"],
    ids=["update", "delete"],
)
def test_the_database_refuses_to_change_or_delete_audit_rows(db: Session, statement: str) -> None:
    record(db, actor="anna", action="read", entity="patient", patient_id=1, at=T0)
    db.flush()
    with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
        db.execute(text(statement))
    assert db.execute(text("SELECT actor FROM audit_events")).scalars().all() == ["anna"]


def test_truncating_the_audit_trail_is_refused(db: Session, backend: str) -> None:
    record(db, actor="anna", action="read", entity="patient", at=T0)
    db.flush()
    if backend == "sqlite":
        # SQLite has no TRUNCATE; its DELETE without WHERE is refused by the trigger of the test above.
        with pytest.raises(DBAPIError), db.begin_nested():
            db.execute(text("TRUNCATE audit_events"))
    else:
        with pytest.raises(DBAPIError, match="append-only: TRUNCATE refused"), db.begin_nested():
            db.execute(text("TRUNCATE audit_events"))
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 1


def test_the_orm_refuses_to_change_or_delete_audit_rows(db: Session) -> None:
    row = record(db, actor="anna", action="read", entity="patient", at=T0)
    db.flush()
    with pytest.raises(AuditTrailError, match="append-only"), db.begin_nested():
        row.actor = "mallory"
        db.flush()
    assert row.actor == "anna"  # the savepoint's rollback expired the change
    with pytest.raises(AuditTrailError, match="append-only"), db.begin_nested():
        db.delete(row)
        db.flush()
    assert db.scalars(select(AuditEvent.actor)).all() == ["anna"]


# --- constraints the schema enforces ------------------------------------------------------------------------


def test_one_open_episode_per_patient(db: Session) -> None:
    patient = add_patient(db, add_run(db))

    def episode(closed_on: date | None) -> Episode:
        return Episode(
            patient_id=patient.id,
            state=EpisodeState.ENDED if closed_on else EpisodeState.ELIGIBLE,
            state_since=date(2026, 1, 1),
            level_at_opening=2,
            opened_at=T0,
            closed_on=closed_on,
        )

    db.add_all([episode(date(2025, 1, 1)), episode(date(2025, 6, 1)), episode(None)])
    db.flush()  # any number of closed episodes, one open
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(episode(None))
        db.flush()


def test_enumerated_and_checked_columns_refuse_bad_values(db: Session) -> None:
    run = add_run(db)
    with pytest.raises(IntegrityError), db.begin_nested():
        add_patient(db, run, "R9", level=7)
    with pytest.raises(IntegrityError), db.begin_nested():
        add_patient(db, run, "R9", sex="X")
    with pytest.raises(IntegrityError), db.begin_nested():
        add_patient(db, run, "R9", ats_code="999")  # not one of the 8 ATS: foreign key
    with pytest.raises(IntegrityError), db.begin_nested():
        db.execute(text("INSERT INTO gestori (code, name, kind, accredited_from, capacity, created_at) "
                        "VALUES ('G', 'G', 'hospital_chain', '2026-01-01', 10, CURRENT_TIMESTAMP)"))  # fmt: skip


# --- types ---------------------------------------------------------------------------------------------------


def test_instants_come_back_timezone_aware_in_utc(db: Session) -> None:
    rome = timezone(timedelta(hours=1))
    run = add_run(db)
    run.loaded_at = datetime(2026, 3, 2, 10, 30, tzinfo=rome)
    db.flush()
    db.expire_all()
    loaded = db.get(StratificationRun, run.id)
    assert loaded is not None and loaded.loaded_at == T0 and loaded.loaded_at.utcoffset() == timedelta(0)

    run.loaded_at = datetime(2026, 3, 2, 10, 30)  # naive: refused, it would be ambiguous
    with pytest.raises(StatementError, match="timezone-aware"), db.begin_nested():
        db.flush()


def test_json_lists_round_trip(db: Session) -> None:
    patient = add_patient(db, add_run(db), pathologies=["heart_failure", "copd", "ipertensione_è"])
    db.expire_all()
    assert db.get(Patient, patient.id).pathologies == ["heart_failure", "copd", "ipertensione_è"]  # type: ignore[union-attr]


# --- bulk loads ----------------------------------------------------------------------------------------------


def test_bulk_insert_copies_on_postgresql_and_executes_many_on_sqlite(
    db: Session, db_engine: Engine, backend: str
) -> None:
    run = add_run(db)
    rows = [
        (run.id, f"R{n:05d}", "M" if n % 2 else "F", date(1940, 1, 1) + timedelta(days=n), 80, "325", None,
         "016024" if n % 3 else None, 1 + n % 5, ["copd", "heart_failure"][: n % 3], n % 5 < 3)
        for n in range(2500)
    ]  # fmt: skip
    columns = ("run_id", "resident_id", "sex", "birth_date", "age", "ats_code", "gp_id", "municipality", "level")
    columns += ("pathologies", "eligible")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db_engine, "before_cursor_execute", seen)
    try:
        count = bulk_insert(db.connection(), table_of(PatientStratum), columns, iter(rows))
    finally:
        event.remove(db_engine, "before_cursor_execute", seen)
    assert count == 2500
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    # COPY goes straight to psycopg, below SQLAlchemy: no INSERT at all. SQLite: one executemany per chunk.
    assert len(inserts) == (0 if backend == "postgresql" else 1)

    stored = db.execute(
        select(PatientStratum.resident_id, PatientStratum.municipality, PatientStratum.pathologies)
        .where(PatientStratum.run_id == run.id)
        .order_by(PatientStratum.resident_id)
    ).all()
    assert len(stored) == 2500
    assert [tuple(r) for r in stored[:3]] == [
        ("R00000", None, []),
        ("R00001", "016024", ["copd"]),
        ("R00002", "016024", ["copd", "heart_failure"]),
    ]
    assert db.scalar(select(func.count()).where(PatientStratum.eligible)) == 1500


def test_bulk_insert_names_unknown_columns(db: Session) -> None:
    with pytest.raises(ValueError, match="patient_strata has no column"):
        bulk_insert(db.connection(), table_of(PatientStratum), ("run_id", "shoe_size"), [])


def test_bulk_insert_is_part_of_the_callers_transaction(db_engine: Engine) -> None:
    with db_engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection)
        run = add_run(session, digest="rolled-back")
        bulk_insert(connection, table_of(Ats), ("code", "name"), [("399", "not an ATS")])
        assert connection.execute(select(func.count()).select_from(Ats)).scalar_one() == 9
        session.close()
        transaction.rollback()
        assert connection.execute(select(func.count()).select_from(Ats)).scalar_one() == 8
        assert connection.execute(select(StratificationRun).where(StratificationRun.id == run.id)).first() is None


# --- the database URL ----------------------------------------------------------------------------------------


def test_database_url_defaults_to_a_sqlite_file_and_speaks_psycopg_to_postgresql(tmp_path: Path) -> None:
    default = database_url({})
    assert default.get_backend_name() == "sqlite" and default.database is not None
    assert default.database.endswith("presa.sqlite3")
    given = database_url({"PRESA_DATABASE_URL": "postgresql://care@db.example:5433/presa"})
    assert (given.drivername, given.host, given.port, given.database) == (
        "postgresql+psycopg",
        "db.example",
        5433,
        "presa",
    )
    assert normalise_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert database_url({"PRESA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}).database == str(tmp_path / "x.db")
    with pytest.raises(ValueError, match="SQLite or PostgreSQL, not 'mysql'"):
        database_url({"PRESA_DATABASE_URL": "mysql://u@h/d"})
