"""Analysts' pseudonyms back to patients by an index lookup, on SQLite and PostgreSQL: filled after a load and on
a miss, refilled when the key changes, never a scan of the ATS, the pseudonym (not the 64-bit digest) decides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from presa.care.pseudonyms import pseudonym, resident_index
from presa.care.service import pseudonyms as service
from presa.care.service.pseudonyms import index_pseudonyms, patient_of_pseudonym
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import Patient, StratificationRun

KEY = b"presa-tests-pseudonym-key-0123456789"
OTHER_KEY = b"presa-tests-another-key-9876543210ab"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
COLUMNS = ("resident_id", "sex", "birth_date", "ats_code", "level", "pathologies", "eligible", "run_id",
           "created_at", "updated_at")  # fmt: skip


def add_patients(db: Session, residents: dict[str, str]) -> dict[str, int]:
    """Patients by bulk load, as ``load_run`` adds them (no digest): resident id → ATS; their ids."""
    run = StratificationRun(source="/runs/r1", run_digest="d1", catalog_name="c", catalog_version="1",
                            catalog_digest="x", reference_date=date(2025, 12, 31), population=0, eligible=0,
                            loaded_at=T0, loaded_by="loader")  # fmt: skip
    db.add(run)
    db.flush()
    rows = [(r, "F", date(1950, 1, 1), ats, 2, ["copd"], True, run.id, T0, T0) for r, ats in residents.items()]
    bulk_insert(db.connection(), table_of(Patient), COLUMNS, rows)
    return dict(db.execute(select(Patient.resident_id, Patient.id)).all())  # type: ignore[arg-type]


@contextmanager
def statements(db: Session) -> Iterator[list[str]]:
    """The SQL statements the session's connection runs meanwhile."""
    seen: list[str] = []

    def remember(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    connection = db.connection()
    event.listen(connection, "before_cursor_execute", remember)
    try:
        yield seen
    finally:
        event.remove(connection, "before_cursor_execute", remember)


def digests(db: Session) -> dict[str, int | None]:
    return dict(db.execute(select(Patient.resident_id, Patient.pseudonym_index)).all())  # type: ignore[arg-type]


def test_a_pseudonym_finds_its_patient_within_the_ats_only(db: Session) -> None:
    ids = add_patients(db, {f"R{n:03d}": "321" for n in range(40)} | {"S001": "322"})
    assert index_pseudonyms(db, KEY) == 41
    assert all(value == resident_index(KEY, r) for r, value in digests(db).items())
    assert patient_of_pseudonym(db, KEY, "321", pseudonym(KEY, "R007")) == ids["R007"]
    assert patient_of_pseudonym(db, KEY, "322", pseudonym(KEY, "S001")) == ids["S001"]
    assert patient_of_pseudonym(db, KEY, "321", pseudonym(KEY, "S001")) is None  # another ATS's patient
    assert patient_of_pseudonym(db, KEY, "321", pseudonym(KEY, "R999")) is None  # nobody
    for malformed in ("", "ps_", "PS_" + "a" * 20, "ps_" + "g" * 20, str(ids["R007"]), "ps_" + "a" * 21):
        assert patient_of_pseudonym(db, KEY, "321", malformed) is None
    assert index_pseudonyms(db, KEY) == 0  # nothing left to do


def test_a_lookup_reads_the_index_not_the_ats(db: Session) -> None:
    add_patients(db, {f"R{n:03d}": "321" for n in range(200)})
    index_pseudonyms(db, KEY)
    with statements(db) as hit:
        assert patient_of_pseudonym(db, KEY, "321", pseudonym(KEY, "R150")) is not None
    with statements(db) as miss:
        assert patient_of_pseudonym(db, KEY, "321", pseudonym(KEY, "nobody")) is None
    assert len(hit) == 1 and "pseudonym_index =" in hit[0]
    # A miss looks once, checks one digest against the key, asks for patients without one: three queries, each
    # limited by an index, and no UPDATE.
    assert len(miss) == 3 and all(s.lstrip().upper().startswith("SELECT") for s in miss), miss
    assert "LIMIT" in miss[1].upper() and "IS NULL" in miss[2].upper()


def test_patients_added_without_a_digest_are_indexed_on_the_first_miss(db: Session) -> None:
    ids = add_patients(db, {"R001": "321", "R002": "321", "S001": "322"})
    # Nothing indexed yet (a load by another path): the first lookup indexes that ATS only, then finds.
    assert patient_of_pseudonym(db, KEY, "321", pseudonym(KEY, "R002")) == ids["R002"]
    assert digests(db) == {"R001": resident_index(KEY, "R001"), "R002": resident_index(KEY, "R002"), "S001": None}
    assert patient_of_pseudonym(db, KEY, "322", pseudonym(KEY, "S001")) == ids["S001"]


def test_a_new_key_reindexes_and_old_pseudonyms_find_nobody(db: Session) -> None:
    ids = add_patients(db, {"R001": "321", "R002": "321", "S001": "322"})
    index_pseudonyms(db, KEY)
    old = pseudonym(KEY, "R001")
    assert patient_of_pseudonym(db, OTHER_KEY, "321", pseudonym(OTHER_KEY, "R001")) == ids["R001"]
    after = digests(db)
    assert after["R001"] == resident_index(OTHER_KEY, "R001") and after["R002"] == resident_index(OTHER_KEY, "R002")
    assert after["S001"] is None  # another ATS: re-indexed on its own first miss, or by the next load
    assert patient_of_pseudonym(db, OTHER_KEY, "321", old) is None
    assert index_pseudonyms(db, OTHER_KEY) == 1


def test_the_pseudonym_decides_when_two_digests_collide(db: Session) -> None:
    ids = add_patients(db, {"R001": "321", "R002": "321"})
    index_pseudonyms(db, KEY)
    db.execute(
        update(Patient).where(Patient.resident_id == "R001").values(pseudonym_index=resident_index(KEY, "R002")),
        execution_options={"synchronize_session": False},
    )
    assert db.scalar(select(func.count()).where(Patient.pseudonym_index == resident_index(KEY, "R002"))) == 2
    assert patient_of_pseudonym(db, KEY, "321", pseudonym(KEY, "R002")) == ids["R002"]


@pytest.mark.parametrize("chunk", [7])
def test_indexing_goes_a_chunk_at_a_time(db: Session, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "CHUNK", chunk)
    add_patients(db, {f"R{n:03d}": "321" if n % 3 else "322" for n in range(30)})
    assert index_pseudonyms(db, KEY, ats_code="322") == 10
    assert index_pseudonyms(db, KEY) == 20
    assert all(value == resident_index(KEY, r) for r, value in digests(db).items())
