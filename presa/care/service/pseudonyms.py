"""From an analyst's pseudonym back to the patient, by an index lookup instead of a scan of the ATS.

A pseudonym is an HMAC of the resident id (``presa.care.pseudonyms``) and cannot be inverted, so finding its
patient once meant computing the pseudonym of every patient of the ATS. Each patient now carries
``pseudonym_index``, a keyed 64-bit digest of their pseudonym (indexed): a lookup computes the digest of the
pseudonym asked for and reads the few rows that have it (one, unless 64 bits collide; the pseudonym decides).

The digests are kept in step with the patients and the key:

- ``presa load`` indexes the patients it added (:func:`index_pseudonyms`), a chunk at a time: COPY into a
  temporary table and one UPDATE on PostgreSQL, executemany on SQLite;
- a lookup that finds nobody indexes the patients of that ATS that have no digest yet (added by another path; a
  partial index holds just those) and looks again; when every patient has one, a miss costs three small queries,
  never a scan (until autovacuum has passed after a large fill, the partial index still walks its dead entries:
  about 15 ms at a million);
- when the key changes every pseudonym changes, and so must every digest: a miss compares one stored digest with
  the current key's, and if they differ clears them all and indexes the ATS again (the others on their own first
  miss or at the next load). Pseudonyms made under the old key then find nobody, as they should.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, MetaData, Table, bindparam, select, update
from sqlalchemy.orm import Session

from presa.care.pseudonyms import PSEUDONYM, pseudonym, pseudonym_index, resident_index
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import Patient

CHUNK = 50_000
"""Patients indexed per round trip: bounded memory for a region's million."""

_FILL = Table(
    "pseudonym_fill",
    MetaData(),
    Column("patient_id", BigInteger, primary_key=True),
    Column("pseudonym_index", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
)


def patient_of_pseudonym(session: Session, key: bytes, ats_code: str, value: str) -> int | None:
    """The id of the patient of ``ats_code`` whose pseudonym is ``value``, or None."""
    if not PSEUDONYM.fullmatch(value):
        return None
    found = _lookup(session, key, ats_code, value)
    if found is None and index_pseudonyms(session, key, ats_code=ats_code):
        found = _lookup(session, key, ats_code, value)
    return found


def index_pseudonyms(session: Session, key: bytes, *, ats_code: str | None = None) -> int:
    """Give a pseudonym digest to every patient (of ``ats_code``, or of every ATS) that has none, after clearing
    every digest if they were made under another key; how many patients were indexed."""
    if _made_under_another_key(session, key):
        session.execute(
            update(Patient).where(Patient.pseudonym_index.is_not(None)).values(pseudonym_index=None),
            execution_options={"synchronize_session": False},
        )
    count, last = 0, 0
    while rows := _unindexed(session, ats_code, after=last):
        _store(session, [(patient_id, resident_index(key, resident_id)) for patient_id, resident_id in rows])
        count += len(rows)
        last = rows[-1][0]
    return count


def _lookup(session: Session, key: bytes, ats_code: str, value: str) -> int | None:
    # The ATS is checked here, not in SQL: given both conditions, PostgreSQL without fresh statistics (right after
    # a load) combined the ATS index too and read a million entries for a lookup of one row.
    rows = session.execute(
        select(Patient.id, Patient.resident_id, Patient.ats_code).where(
            Patient.pseudonym_index == pseudonym_index(key, value)
        )
    )
    for patient_id, resident_id, ats in rows:
        if ats == ats_code and hmac.compare_digest(pseudonym(key, resident_id), value):
            return int(patient_id)
    return None


def _made_under_another_key(session: Session, key: bytes) -> bool:
    sample = session.execute(
        select(Patient.resident_id, Patient.pseudonym_index).where(Patient.pseudonym_index.is_not(None)).limit(1)
    ).first()
    return sample is not None and resident_index(key, sample[0]) != sample[1]


def _unindexed(session: Session, ats_code: str | None, *, after: int) -> Sequence[tuple[int, str]]:
    query = (
        select(Patient.id, Patient.resident_id)
        .where(Patient.pseudonym_index.is_(None), Patient.id > after)
        .order_by(Patient.id)
        .limit(CHUNK)
    )
    if ats_code is not None:
        query = query.where(Patient.ats_code == ats_code)
    return [(int(patient_id), str(resident_id)) for patient_id, resident_id in session.execute(query)]


def _store(session: Session, rows: Sequence[tuple[int, int]]) -> None:
    connection = session.connection()
    patients = table_of(Patient)
    if connection.dialect.name == "postgresql":
        _FILL.create(connection)
        try:
            bulk_insert(connection, _FILL, ("patient_id", "pseudonym_index"), rows)
            connection.execute(
                update(patients)
                .where(patients.c.id == _FILL.c.patient_id)
                .values(pseudonym_index=_FILL.c.pseudonym_index)
            )
        finally:
            _FILL.drop(connection)
        return
    statement = (
        update(patients).where(patients.c.id == bindparam("row_id")).values(pseudonym_index=bindparam("row_index"))
    )
    connection.execute(statement, [{"row_id": patient_id, "row_index": index} for patient_id, index in rows])
