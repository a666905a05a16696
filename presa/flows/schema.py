"""The flows schema (data/flows.yaml) as a typed model: tables, their columns and cross-column checks."""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from presa.codes import CODE_LISTS
from presa.yamlfile import read_yaml

SCHEMA_FILE = Path(__file__).parent / "data" / "flows.yaml"

ColumnType = Literal["id", "date", "code", "enum", "integer", "decimal"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    name: str
    type: ColumnType
    required: bool = False
    may_be_future: bool = False
    pattern: str | None = None
    codelist: str | None = None
    normalise: Literal["strip_dots"] | None = None
    values: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    references: Literal["residents"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.type == "code" and not (self.pattern or self.codelist):
            raise ValueError(f"code column {self.name} needs a pattern or a codelist")
        if self.type == "enum" and not self.values:
            raise ValueError(f"enum column {self.name} needs values")
        if self.codelist is not None and self.codelist not in CODE_LISTS:
            raise ValueError(f"column {self.name}: unknown codelist {self.codelist}")
        if self.pattern is not None:
            re.compile(self.pattern)
        return self


class Check(_Strict):
    column: str
    rule: Literal["not_before"]
    other: str


class TableSpec(_Strict):
    name: str = ""
    description: str
    date_column: str | None = None
    columns: tuple[ColumnSpec, ...]
    checks: tuple[Check, ...] = ()
    unique: str | None = None

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @model_validator(mode="after")
    def _names_exist(self) -> TableSpec:
        names = {c.name for c in self.columns}
        wanted = [self.date_column, self.unique, *(c.column for c in self.checks), *(c.other for c in self.checks)]
        missing = sorted(n for n in wanted if n is not None and n not in names)
        if missing:
            raise ValueError(f"names columns it does not have: {', '.join(missing)}")
        return self


class FlowSchema(_Strict):
    version: int
    date_range: dict[str, date] = Field(default_factory=dict)
    tables: dict[str, TableSpec]

    @property
    def min_date(self) -> date:
        return self.date_range.get("min", date(1900, 1, 1))

    @property
    def event_tables(self) -> list[TableSpec]:
        return [t for name, t in self.tables.items() if name != "residents"]


@cache
def load_schema(path: Path = SCHEMA_FILE) -> FlowSchema:
    """The flows schema; a broken schema file is a bug in presa, reported with the field at fault."""
    raw = read_yaml(path)
    for name, table in raw.get("tables", {}).items():
        table["name"] = name
    try:
        return FlowSchema.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None
