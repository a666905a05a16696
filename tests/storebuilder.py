"""Build small validated flow stores and catalogs by hand, for tests of what reads them.

Keyword-only builders: a test names only the fields it cares about; the rest get plausible defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from presa.flows.layout import FlowPaths

COLUMNS: dict[str, list[tuple[str, pa.DataType]]] = {
    "residents": [
        ("resident_id", pa.string()),
        ("birth_date", pa.date32()),
        ("sex", pa.string()),
        ("municipality", pa.string()),
        ("ats", pa.string()),
        ("gp_id", pa.string()),
        ("registration_date", pa.date32()),
        ("death_date", pa.date32()),
        ("last_service_date", pa.date32()),
    ],
    "prescriptions": [
        ("dispensing_date", pa.date32()),
        ("atc", pa.string()),
        ("aic", pa.string()),
        ("packs", pa.int64()),
        ("ddd", pa.float64()),
    ],
    "outpatient": [
        ("service_date", pa.date32()),
        ("service_code", pa.string()),
        ("discipline", pa.string()),
        ("provider_id", pa.string()),
    ],
    "discharges": [
        ("admission_date", pa.date32()),
        ("discharge_date", pa.date32()),
        ("dx_main", pa.string()),
        ("dx_2", pa.string()),
        ("dx_3", pa.string()),
        ("dx_4", pa.string()),
        ("dx_5", pa.string()),
        ("dx_6", pa.string()),
        ("procedure_main", pa.string()),
        ("drg", pa.string()),
        ("regime", pa.string()),
        ("admission_type", pa.string()),
        ("discharge_mode", pa.string()),
    ],
    "er_visits": [("visit_date", pa.date32()), ("triage", pa.string()), ("outcome", pa.string())],
    "exemptions": [("exemption_code", pa.string()), ("start_date", pa.date32()), ("end_date", pa.date32())],
}
CODE_COLUMNS = {
    "prescriptions": ["atc"],
    "outpatient": ["service_code"],
    "exemptions": ["exemption_code"],
    "discharges": ["dx_main", "dx_2", "dx_3", "dx_4", "dx_5", "dx_6"],
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "residents": {
        "birth_date": date(1950, 6, 1),
        "sex": "F",
        "municipality": "015146",
        "ats": "321",
        "gp_id": "GP1",
        "registration_date": date(2000, 1, 1),
        "death_date": None,
    },
    "prescriptions": {"aic": "012345678", "packs": 1, "ddd": 28.0},
    "outpatient": {"discipline": "08", "provider_id": "P1"},
    "discharges": {
        "dx_2": None,
        "dx_3": None,
        "dx_4": None,
        "dx_5": None,
        "dx_6": None,
        "procedure_main": None,
        "drg": "127",
        "regime": "1",
        "admission_type": "2",
        "discharge_mode": "2",
    },
    "er_visits": {"triage": "4", "outcome": "1"},
    "exemptions": {"end_date": None},
}


@dataclass
class StoreBuilder:
    """Collects residents and their records, then writes a validated store (presa/flows/layout.py)."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in COLUMNS})

    def resident(self, resident_id: str, **fields: Any) -> StoreBuilder:
        self.rows["residents"].append({"resident_id": resident_id, **DEFAULTS["residents"], **fields})
        return self

    def record(self, table: str, resident_id: str, **fields: Any) -> StoreBuilder:
        if table == "discharges" and "admission_date" not in fields:
            fields["admission_date"] = fields["discharge_date"]
        self.rows[table].append({"resident_id": resident_id, **DEFAULTS[table], **fields})
        return self

    def drug(self, resident_id: str, day: date, atc: str, **fields: Any) -> StoreBuilder:
        return self.record("prescriptions", resident_id, dispensing_date=day, atc=atc, **fields)

    def discharge(self, resident_id: str, day: date, dx_main: str, **fields: Any) -> StoreBuilder:
        return self.record("discharges", resident_id, discharge_date=day, dx_main=dx_main, **fields)

    def exemption(self, resident_id: str, code: str, start: date, end: date | None = None) -> StoreBuilder:
        return self.record("exemptions", resident_id, exemption_code=code, start_date=start, end_date=end)

    def service(self, resident_id: str, day: date, code: str) -> StoreBuilder:
        return self.record("outpatient", resident_id, service_date=day, service_code=code)

    def er(self, resident_id: str, day: date) -> StoreBuilder:
        return self.record("er_visits", resident_id, visit_date=day)

    def write(self, directory: Path) -> FlowPaths:
        directory.mkdir(parents=True, exist_ok=True)
        paths = FlowPaths(directory)
        keys = {r["resident_id"]: n for n, r in enumerate(self.rows["residents"], start=1)}
        last_service = self._last_service_dates()
        for row in self.rows["residents"]:
            row["last_service_date"] = last_service.get(row["resident_id"])
        for table, columns in COLUMNS.items():
            schema = pa.schema(
                [
                    ("resident_key", pa.int64()),
                    *columns,
                    ("source_file", pa.string()),
                    ("source_line", pa.int64()),
                ]
            )
            rows = [
                {
                    **row,
                    "resident_key": keys[row["resident_id"]],
                    "source_file": f"{table}.csv",
                    "source_line": line,
                }
                for line, row in enumerate(self.rows[table], start=2)
            ]
            if table != "residents":
                for row in rows:
                    row.pop("resident_id")
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), paths.table(table))
        self._write_codes(paths)
        last_record = max(last_service.values(), default=None)
        manifest = {
            "schema_version": 1,
            "tables": {},
            "last_record_date": last_record.isoformat() if last_record else None,
        }
        paths.manifest.write_text(json.dumps(manifest), encoding="utf-8")
        return paths

    def _last_service_dates(self) -> dict[str, date]:
        """Latest record date per resident over every flow but exemptions (an exemption is not a service)."""
        date_column = {
            "prescriptions": "dispensing_date",
            "outpatient": "service_date",
            "discharges": "discharge_date",
            "er_visits": "visit_date",
        }
        last: dict[str, date] = {}
        for table, column in date_column.items():
            for row in self.rows[table]:
                day = row[column]
                if row["resident_id"] not in last or day > last[row["resident_id"]]:
                    last[row["resident_id"]] = day
        return last

    def _write_codes(self, paths: FlowPaths) -> None:
        con = duckdb.connect()
        selects = [
            f"SELECT '{table}' AS table_name, '{column}' AS column_name, {column} AS code "
            f"FROM read_parquet('{paths.table(table)}') WHERE {column} IS NOT NULL"
            for table, columns in CODE_COLUMNS.items()
            for column in columns
        ]
        con.execute(
            f"COPY (SELECT table_name, column_name, code, COUNT(*) AS n FROM ({' UNION ALL '.join(selects)}) "
            f"GROUP BY ALL) TO '{paths.codes}' (FORMAT parquet)"
        )
        con.close()


HEADER = {
    "name": "test catalog",
    "version": "t1",
    "description": "catalog for tests",
    "default_windows_months": {
        "exemption": 12,
        "drug": 12,
        "discharge": 24,
        "outpatient": 12,
        "service_use": 12,
    },
    "macro_areas": [{"id": "area", "name_it": "Area", "name_en": "Area"}],
    "levels": [
        {"level": 1, "name_it": "L1", "name_en": "L1", "min_pathologies": 4, "source": "test source"},
        {
            "level": 2,
            "name_it": "L2",
            "name_en": "L2",
            "min_pathologies": 2,
            "max_pathologies": 3,
            "source": "test source",
        },
        {
            "level": 3,
            "name_it": "L3",
            "name_en": "L3",
            "min_pathologies": 1,
            "max_pathologies": 1,
            "source": "test source",
        },
        {
            "level": 4,
            "name_it": "L4",
            "name_en": "L4",
            "min_pathologies": 0,
            "max_pathologies": 0,
            "uses_services": True,
            "source": "test source",
        },
        {
            "level": 5,
            "name_it": "L5",
            "name_en": "L5",
            "min_pathologies": 0,
            "max_pathologies": 0,
            "uses_services": False,
            "source": "test source",
        },
    ],
    "sources": [{"key": "t", "title": "test"}],
}


def pathology(pid: str, criteria: dict[str, Any], priority: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "name_it": pid,
        "name_en": pid,
        "macro_area": "area",
        "priority": priority,
        "criteria": criteria,
        "source": "written for the tests",
        "confidence": "inferred",
        **extra,
    }


def write_catalog(directory: Path, entries: list[dict[str, Any]], header: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "catalog.yaml").write_text(yaml.safe_dump(header or HEADER, allow_unicode=True), encoding="utf-8")
    (directory / "area.yaml").write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")
    return directory
