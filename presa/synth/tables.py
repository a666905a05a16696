"""Generated tables before they become files: integer columns plus the vocabulary that spells them.

A RawTable keeps each column as numbers (days, vocabulary indices, counts) and the resident each row belongs to,
so that noise can be injected and rows sorted without touching strings. `to_arrow` turns it into the typed
Parquet layout; `to_csv_arrow` into the text layout of a CSV export (DD/MM/YYYY dates, ',' decimals).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from presa.synth.reference import Reference
from presa.synth.sampling import IntArray

EPOCH = date(1970, 1, 1)
NO_DATE = np.iinfo(np.int32).min
NO_CODE = -1
# Impossible dates as clerks and broken exports write them. In Parquet, where a date column cannot hold an
# impossible date, the same rows carry a date before 1900, which flows.yaml rejects.
BAD_DATE_TEXTS = ("31/02/2024", "30/02/2025", "31/04/2024", "00/01/2024", "15/13/2024", "2024-02-30")
BAD_DATE_FIRST = (date(1800, 1, 1) - EPOCH).days

ColumnKind = Literal["id", "date", "code", "int", "decimal"]


@dataclass(frozen=True)
class Column:
    kind: ColumnKind
    values: npt.NDArray[np.int32] | npt.NDArray[np.float64]
    vocabulary: str | tuple[str, ...] = ""  # a Vocabularies field name, or the strings themselves


@dataclass(frozen=True)
class RawTable:
    name: str
    person: IntArray  # chunk-local resident each row sorts with
    columns: dict[str, Column] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.person)

    def take(self, rows: npt.NDArray[np.int64] | IntArray) -> RawTable:
        return RawTable(
            self.name, self.person[rows], {k: replace(c, values=c.values[rows]) for k, c in self.columns.items()}
        )

    def with_column(self, name: str, values: npt.NDArray[np.int32] | npt.NDArray[np.float64]) -> RawTable:
        columns = dict(self.columns)
        columns[name] = replace(columns[name], values=values)
        return RawTable(self.name, self.person, columns)


def concat(tables: list[RawTable]) -> RawTable:
    first = tables[0]
    return RawTable(
        first.name,
        np.concatenate([t.person for t in tables]).astype(np.int32),
        {k: replace(c, values=np.concatenate([t.columns[k].values for t in tables])) for k, c in first.columns.items()},
    )


def sort_by_resident(table: RawTable) -> RawTable:
    # Parts are each already in resident order: a stable merge of a few runs is cheap and keeps it deterministic.
    order = np.argsort(table.person, kind="stable")
    return table.take(order)


def _strings(ref: Reference, column: Column, chunk_ids: pa.Array) -> pa.Array:
    values = column.values
    mask = values < 0
    indices = pa.array(values.astype(np.int32), mask=mask if mask.any() else None)
    if column.kind == "id":
        vocab = chunk_ids
    elif isinstance(column.vocabulary, tuple):
        vocab = pa.array(column.vocabulary, type=pa.string())
    else:
        vocab = pa.array(getattr(ref.vocab, column.vocabulary).values, type=pa.string())
    return vocab.take(indices)


def to_arrow(ref: Reference, table: RawTable, chunk_ids: pa.Array) -> pa.Table:
    """Typed columns: strings for ids and codes, date32 for dates, int32 and float64 for numbers."""
    arrays: list[pa.Array] = []
    for column in table.columns.values():
        if column.kind in ("id", "code"):
            arrays.append(_strings(ref, column, chunk_ids))
        elif column.kind == "date":
            days = column.values.astype(np.int32)
            missing = days == NO_DATE
            arrays.append(pa.array(days, type=pa.date32(), mask=missing if missing.any() else None))
        elif column.kind == "int":
            arrays.append(pa.array(column.values.astype(np.int32)))
        else:
            arrays.append(pa.array(column.values.astype(np.float64)))
    return pa.Table.from_arrays(arrays, names=list(table.columns))


class DateText:
    """DD/MM/YYYY strings for a span of days, built once per run and reused for every date column."""

    def __init__(self, first_day: int, last_day: int) -> None:
        self.first = first_day
        days = np.arange(first_day, last_day + 1, dtype="int64").astype("datetime64[D]")
        iso = pa.array(np.datetime_as_string(days, unit="D"))  # YYYY-MM-DD
        self.text = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(iso, 8, 10),
            pc.utf8_slice_codeunits(iso, 5, 7),
            pc.utf8_slice_codeunits(iso, 0, 4),
            "/",
        )
        self.bad = pa.array(BAD_DATE_TEXTS, type=pa.string())

    def render(self, days: IntArray) -> pa.Array:
        missing = days == NO_DATE
        bad = (days >= BAD_DATE_FIRST) & (days < BAD_DATE_FIRST + len(BAD_DATE_TEXTS))
        good_index = np.where(missing | bad, 0, days - self.first).astype(np.int32)
        good = self.text.take(pa.array(good_index))
        if not bad.any() and not missing.any():
            return good
        bad_text = self.bad.take(pa.array(np.where(bad, days - BAD_DATE_FIRST, 0).astype(np.int32)))
        chosen = pc.if_else(pa.array(bad), bad_text, good)
        return pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), chosen)


def to_csv_arrow(ref: Reference, table: RawTable, chunk_ids: pa.Array, dates: DateText) -> pa.Table:
    """All-text columns as a regional CSV export writes them: DD/MM/YYYY dates, ',' as decimal separator."""
    arrays: list[pa.Array] = []
    for column in table.columns.values():
        if column.kind in ("id", "code"):
            arrays.append(_strings(ref, column, chunk_ids))
        elif column.kind == "date":
            arrays.append(dates.render(column.values.astype(np.int32)))
        elif column.kind == "int":
            arrays.append(pc.cast(pa.array(column.values.astype(np.int32)), pa.string()))
        else:
            text = pc.cast(pa.array(np.round(column.values.astype(np.float64), 3)), pa.string())
            arrays.append(pc.replace_substring(text, ".", ","))
    return pa.Table.from_arrays(arrays, names=list(table.columns))
