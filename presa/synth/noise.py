"""What makes the synthetic flows look like real ones: coding slips and malformed rows.

Coding slips swap a diagnosis for a neighbouring code of the same category and pathology (see
reference._icd9_neighbours), so they change codes, not who is chronic. Malformed rows are extra rows, copies of
real ones with one field broken (an impossible date, a malformed code, an unknown or missing resident id) or exact
duplicates; the residents table gets broken rows for residents that do not otherwise exist. Because the original
rows stay, a loader that rejects the broken rows sees the same ground truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from presa.synth.records import SECONDARY_DX, Flows
from presa.synth.reference import Reference
from presa.synth.tables import BAD_DATE_FIRST, BAD_DATE_TEXTS, RawTable, concat

CODING_SLIP = 0.02
# A chunk's id array holds its residents, then UNKNOWN_IDS ids that exist nowhere, then the ghost residents of
# broken residents rows. Index -1 is a missing id.
UNKNOWN_IDS = 1000
MISSING_ID = -1
MALFORMED_KINDS = ("bad_date", "bad_code", "unknown_id", "missing_id", "duplicate")
RESIDENT_MALFORMED_KINDS = ("bad_date", "bad_code", "missing_id", "duplicate")
# The column a "bad code" row breaks, per table: a code column of flows.yaml or a number out of range.
BROKEN_CODE_COLUMN = {
    "residents": "municipality",
    "prescriptions": "atc",
    "outpatient": "service_code",
    "discharges": "dx_main",
    "er_visits": "triage",
    "exemptions": "exemption_code",
}
OUT_OF_RANGE_PACKS = (0, 150)
PAIRED_DATES = {"discharges": ("admission_date", "discharge_date"), "exemptions": ("start_date", "end_date")}


def coding_slips(rng: np.random.Generator, ref: Reference, discharges: RawTable) -> RawTable:
    table = discharges
    for name in ("dx_main", *SECONDARY_DX):
        codes = table.columns[name].values.astype(np.int32)
        slip = (codes >= 0) & (rng.random(len(codes)) < CODING_SLIP)
        table = table.with_column(
            name, np.where(slip, ref.icd9_neighbour[np.maximum(codes, 0)], codes).astype(np.int32)
        )
    return table


def _bad_dates(rng: np.random.Generator, table: RawTable) -> RawTable:
    dates = [k for k, c in table.columns.items() if c.kind == "date"]
    out = table
    if table.name in PAIRED_DATES and rng.random() < 0.5:
        first, second = PAIRED_DATES[table.name]
        # The second date before the first: the rule `not_before` of flows.yaml catches it.
        start = table.columns[first].values.astype(np.int32)
        return out.with_column(second, (start - 1 - rng.integers(1, 30, table.rows)).astype(np.int32))
    target = dates[int(rng.integers(0, len(dates)))] if table.name != "residents" else "birth_date"
    bad = (BAD_DATE_FIRST + rng.integers(0, len(BAD_DATE_TEXTS), table.rows)).astype(np.int32)
    return out.with_column(target, bad)


def _bad_codes(rng: np.random.Generator, ref: Reference, table: RawTable) -> RawTable:
    name = BROKEN_CODE_COLUMN[table.name]
    column = table.columns[name]
    assert isinstance(column.vocabulary, str)
    options = ref.malformed[column.vocabulary]
    out = table.with_column(name, options[rng.integers(0, len(options), table.rows)].astype(np.int32))
    if table.name == "prescriptions":
        # A third of the broken prescriptions keep their code and get an impossible number of packs instead.
        packs_instead = rng.random(table.rows) < 0.3
        packs = np.array(OUT_OF_RANGE_PACKS, dtype=np.int32)[rng.integers(0, 2, table.rows)]
        out = out.with_column(name, np.where(packs_instead, column.values, out.columns[name].values).astype(np.int32))
        out = out.with_column("packs", np.where(packs_instead, packs, table.columns["packs"].values).astype(np.int32))
    return out


def _with_ids(table: RawTable, ids: npt.NDArray[np.integer[Any]]) -> RawTable:
    return table.with_column("resident_id", ids.astype(np.int32))


def malformed_rows(rng: np.random.Generator, ref: Reference, table: RawTable, rate: float, chunk_size: int) -> RawTable:
    """Copies of about `rate` x rows, each broken in one way; returned rows keep their original sort position."""
    count = int(rng.binomial(table.rows, rate)) if table.rows else 0
    if count == 0:
        return table.take(np.zeros(0, dtype=np.int64))
    source = table.take(rng.integers(0, table.rows, count))
    kinds = RESIDENT_MALFORMED_KINDS if table.name == "residents" else MALFORMED_KINDS
    kind = rng.integers(0, len(kinds), count)
    parts: list[RawTable] = []
    for k, name in enumerate(kinds):  # five kinds of fault
        rows = source.take(np.flatnonzero(kind == k))
        if rows.rows == 0:
            continue
        if table.name == "residents" and name != "duplicate":
            # A broken row of a resident that exists nowhere else, so rejecting it changes nothing.
            rows = _with_ids(rows, chunk_size + UNKNOWN_IDS + np.arange(rows.rows))
        if name == "bad_date":
            rows = _bad_dates(rng, rows)
        elif name == "bad_code":
            rows = _bad_codes(rng, ref, rows)
        elif name == "unknown_id":
            rows = _with_ids(rows, chunk_size + rng.integers(0, UNKNOWN_IDS, rows.rows))
        elif name == "missing_id":
            rows = _with_ids(rows, np.full(rows.rows, MISSING_ID))
        parts.append(rows)
    return concat(parts)


def add_malformed_rows(rng: np.random.Generator, ref: Reference, flows: Flows, rate: float, chunk_size: int) -> Flows:
    out: dict[str, RawTable] = {}
    for table in flows.tables():
        if rate <= 0:
            out[table.name] = table
            continue
        broken = malformed_rows(rng, ref, table, rate, chunk_size)
        merged = concat([table, broken]) if broken.rows else table
        order = np.argsort(merged.person, kind="stable")
        out[table.name] = merged.take(order)
    return Flows(**out)
