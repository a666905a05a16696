"""The flow loader on hand-written deliveries: every fault rejected with its place and reason, counts reconciled."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from presa.flows.load import FlowError, LoadReport, load_flows
from presa.flows.schema import load_schema

HEADERS = {name: table.column_names for name, table in load_schema().tables.items()}
TODAY = date(2026, 1, 31)

RESIDENTS = [
    "R1;1950-06-01;F;015146;321;GP1;2000-01-01;",
    "R2;12/03/1940;M;015146;321;GP1;01/01/2000;2025-06-30",
    "R3;1990-01-01;F;015146;322;GP2;2000-01-01;",
]
PRESCRIPTION = "R1;2025-03-01;C09AA05;012345678;1;28"
OUTPATIENT = "R1;2025-04-01;89.7A.3;08;P1"
DISCHARGE = "R1;2025-05-01;2025-05-04;428.0;401.9;;;;;;127;1;2;2"
ER_VISIT = "R1;2025-05-01;3;1"
EXEMPTION = "R1;0A31.401;2020-01-01;2030-12-31"
SHORT_LINE = "R1;2025-03-01;C09AA05;012345678;1"
BACKWARDS_STAY = "R1;2025-05-04;2025-05-01;4280;;;;;;;127;1;2;2"


def write_flows(
    directory: Path,
    rows: dict[str, list[str]] | None = None,
    *,
    separator: str = ";",
    encoding: str = "utf-8",
) -> Path:
    """Write one ';' text file per table: the given lines after the header, a minimal valid delivery by default."""
    content = {
        "residents": RESIDENTS,
        "prescriptions": [PRESCRIPTION],
        "outpatient": [OUTPATIENT],
        "discharges": [DISCHARGE],
        "er_visits": [ER_VISIT],
        "exemptions": [EXEMPTION],
        **(rows or {}),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for table, lines in content.items():
        text = "\n".join([";".join(HEADERS[table]), *lines]) + "\n"
        (directory / f"{table}.csv").write_bytes(text.replace(";", separator).encode(encoding))
    return directory


def load(tmp_path: Path, flows: Path) -> LoadReport:
    return load_flows(flows, tmp_path / "store", max_date=TODAY)


def rejects(report: LoadReport) -> list[tuple[str, str, int, str | None, str | None, str]]:
    rows = duckdb.execute(
        "SELECT table_name, source_file, source_line, column_name, value, reason FROM read_parquet(?) ORDER BY ALL",
        [str(report.out_dir / "rejects.parquet")],
    ).fetchall()
    return [tuple(r) for r in rows]


def table(report: LoadReport, name: str) -> list[dict[str, object]]:
    result = pq.read_table(report.out_dir / f"{name}.parquet").to_pylist()
    return list(result)


def test_a_clean_delivery_is_accepted_whole_and_typed(tmp_path: Path) -> None:
    report = load(tmp_path, write_flows(tmp_path / "in"))
    assert all(c.rejected == 0 and c.read == c.accepted for c in report.counts)
    residents = table(report, "residents")
    assert [r["resident_key"] for r in residents] == [1, 2, 3]
    assert residents[1]["birth_date"] == date(1940, 3, 12), "DD/MM/YYYY dates are read"
    assert residents[0]["last_service_date"] == date(2025, 5, 4), "the latest record of any flow but exemptions"
    assert residents[2]["last_service_date"] is None
    [discharge] = table(report, "discharges")
    assert (discharge["dx_main"], discharge["dx_2"], discharge["dx_3"]) == ("4280", "4019", None)
    assert discharge["resident_key"] == 1 and discharge["source_file"] == "discharges.csv"
    assert discharge["source_line"] == 2
    [prescription] = table(report, "prescriptions")
    assert prescription["packs"] == 1 and prescription["ddd"] == 28.0
    manifest = json.loads((report.out_dir / "manifest.json").read_text())
    assert manifest["last_record_date"] == "2025-05-04"
    assert manifest["tables"]["residents"] == {"files": ["residents.csv"], "read": 3, "accepted": 3, "rejected": 0}


@pytest.mark.parametrize(
    ("table_name", "line", "column", "value", "reason"),
    [
        ("prescriptions", ";2025-03-01;C09AA05;012345678;1;28", "resident_id", "", "missing required value"),
        ("prescriptions", "R 1;2025-03-01;C09AA05;012345678;1;28", "resident_id", "R 1", "malformed id"),
        ("prescriptions", "R1;31/02/2025;C09AA05;012345678;1;28", "dispensing_date", "31/02/2025", "not a valid date"),
        ("prescriptions", "R1;2025-13-01;C09AA05;012345678;1;28", "dispensing_date", "2025-13-01", "not a valid date"),
        ("prescriptions", "R1;2026-02-01;C09AA05;012345678;1;28", "dispensing_date", "2026-02-01", "in the future"),
        ("prescriptions", "R1;2025-03-01;C09AA5;012345678;1;28", "atc", "C09AA5", "malformed code"),
        ("prescriptions", "R1;2025-03-01;C09AA05;012345678;0;28", "packs", "0", "out of range [1, 99]"),
        ("prescriptions", "R1;2025-03-01;C09AA05;012345678;1.5;28", "packs", "1.5", "not a whole number"),
        ("prescriptions", "R1;2025-03-01;C09AA05;012345678;1;abc", "ddd", "abc", "not a number"),
        ("prescriptions", "R9;2025-03-01;C09AA05;012345678;1;28", "resident_id", "R9", "unknown resident"),
        ("prescriptions", "R2;2025-07-01;C09AA05;012345678;1;28", "dispensing_date", "2025-07-01", "resident's death"),
        ("prescriptions", "R3;1989-12-31;C09AA05;012345678;1;28", "dispensing_date", "1989-12-31", "resident's birth"),
        ("prescriptions", SHORT_LINE, None, SHORT_LINE, "expected 6 fields separated by ';', found 5"),
        ("discharges", "R1;2025-05-01;2025-05-04;428.7;;;;;;;127;1;2;2", "dx_main", "428.7", "not a code of icd9cm"),
        ("discharges", BACKWARDS_STAY, "discharge_date", "2025-05-01", "before admission"),
        ("er_visits", "R1;2025-05-01;R;1", "triage", "R", "not one of 1, 2, 3, 4, 5"),
        ("residents", "R4;1850-01-01;F;015146;321;GP1;2000-01-01;", "birth_date", "1850-01-01", "before 1900-01-01"),
        ("residents", "R4;1950-01-01;1;015146;321;GP1;2000-01-01;", "sex", "1", "not one of M, F"),
        ("residents", "R4;1950-01-01;F;15146;321;GP1;2000-01-01;", "municipality", "15146", "malformed code"),
        ("exemptions", "R1;ESENTE;2020-01-01;", "exemption_code", "ESENTE", "malformed code"),
    ],
)  # fmt: skip
def test_each_fault_is_rejected_with_its_column_value_and_reason(
    tmp_path: Path, table_name: str, line: str, column: str | None, value: str | None, reason: str
) -> None:
    defaults = {"residents": RESIDENTS, "prescriptions": [PRESCRIPTION], "discharges": [DISCHARGE]}
    good = defaults.get(table_name, {"er_visits": [ER_VISIT], "exemptions": [EXEMPTION]}.get(table_name, []))
    report = load(tmp_path, write_flows(tmp_path / "in", {table_name: [*good, line]}))
    [(tname, source_file, source_line, column_name, rejected_value, why)] = rejects(report)
    assert (tname, source_file, source_line) == (table_name, f"{table_name}.csv", len(good) + 2)
    assert (column_name, rejected_value) == (column, value)
    assert reason in why
    count = report.count(table_name)
    assert (count.read, count.accepted, count.rejected) == (len(good) + 1, len(good), 1)


def test_an_event_on_the_day_of_death_is_accepted(tmp_path: Path) -> None:
    line = "R2;2025-06-30;C09AA05;012345678;1;28"
    report = load(tmp_path, write_flows(tmp_path / "in", {"prescriptions": [line]}))
    assert report.count("prescriptions").accepted == 1


def test_exact_duplicates_name_the_first_row_and_a_repeated_resident_id_its_first_line(tmp_path: Path) -> None:
    flows = write_flows(
        tmp_path / "in",
        {
            "residents": [*RESIDENTS, RESIDENTS[0], "R3;1991-01-01;M;015146;322;GP2;2000-01-01;"],
            "prescriptions": [PRESCRIPTION, PRESCRIPTION.replace(";1;28", ";2;56"), PRESCRIPTION],
        },
    )
    report = load(tmp_path, flows)
    found = {(r[0], r[2]): (r[3], r[4], r[5]) for r in rejects(report)}
    assert found == {
        ("residents", 5): (None, None, "exact duplicate of residents.csv line 2"),
        ("residents", 6): ("resident_id", "R3", "duplicate resident_id, first at residents.csv line 4"),
        ("prescriptions", 4): (None, None, "exact duplicate of prescriptions.csv line 2"),
    }
    assert report.count("prescriptions").accepted == 2


def test_a_rejected_resident_takes_their_records_with_them(tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "in", {"residents": ["R1;1950-06-01;X;015146;321;GP1;2000-01-01;"]})
    report = load(tmp_path, flows)
    reasons = {r[0]: r[5] for r in rejects(report)}
    assert reasons["residents"].startswith("not one of M, F")
    assert all(reasons[t].startswith("unknown resident") for t in ("prescriptions", "outpatient", "exemptions"))
    assert all(c.read == c.accepted + c.rejected for c in report.counts)


def test_latin1_comma_separated_quoted_crlf_with_blank_lines(tmp_path: Path) -> None:
    flows = write_flows(
        tmp_path / "in",
        {"residents": [*RESIDENTS, "R4;1950-01-01;F;Cantù;321;GP1;2000-01-01;"]},
        separator=",",
        encoding="latin-1",
    )
    prescriptions = flows / "prescriptions.csv"
    header = ";".join(HEADERS["prescriptions"])  # each file has its own separator
    prescriptions.write_bytes(f'{header}\r\n"R1";"2025-03-01";"C09AA05";"012345678";"1";"1,5"\r\n\r\n'.encode())
    report = load(tmp_path, flows)
    [(_, _, line, column, value, _)] = rejects(report)
    assert (line, column, value) == (5, "municipality", "Cantù"), "Latin-1 text read as such"
    [row] = table(report, "prescriptions")
    assert row["ddd"] == 1.5, "quotes stripped, ',' decimal separator inside a quoted field"
    assert report.count("prescriptions").read == 1, "a blank line is no record"


def test_a_table_in_several_files_is_read_as_one_with_each_row_s_file(tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "in")
    (flows / "prescriptions.csv").rename(flows / "prescriptions_2025-03.csv")
    header = ";".join(HEADERS["prescriptions"])
    (flows / "prescriptions_2025-04.csv").write_text(f"{header}\nR1;2025-04-01;C09AA05;012345678;1;28\n")
    report = load(tmp_path, flows)
    files = [r["source_file"] for r in table(report, "prescriptions")]
    assert files == ["prescriptions_2025-03.csv", "prescriptions_2025-04.csv"]
    assert report.count("prescriptions").files == ("prescriptions_2025-03.csv", "prescriptions_2025-04.csv")


def test_parquet_typed_and_untyped_columns_give_the_same_store(tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "in")
    (flows / "prescriptions.csv").unlink()
    typed = pa.table(
        {
            "resident_id": ["R1", "R1", "R1"],
            "dispensing_date": pa.array([date(2025, 3, 1), date(1800, 1, 1), None], pa.date32()),
            "atc": ["c09aa05 ", "C09AA05", "C09AA05"],
            "aic": ["012345678"] * 3,
            "packs": pa.array([1, 1, 1], pa.int32()),
            "ddd": [28.0, 28.0, 28.0],
        }
    )
    pq.write_table(typed, flows / "prescriptions.parquet")
    report = load(tmp_path, flows)
    rows = table(report, "prescriptions")
    assert [(r["atc"], r["source_line"]) for r in rows] == [("C09AA05", 1)], "codes normalised, rows numbered from 1"
    assert [(r[2], r[3], r[5]) for r in rejects(report)] == [
        (2, "dispensing_date", "date before 1900-01-01"),
        (3, "dispensing_date", "missing required value"),
    ]


def test_codes_table_counts_the_distinct_codes_seen(tmp_path: Path) -> None:
    report = load(tmp_path, write_flows(tmp_path / "in"))
    codes = duckdb.execute(
        "SELECT table_name, column_name, code, n FROM read_parquet(?) WHERE table_name = 'discharges' ORDER BY ALL",
        [str(report.out_dir / "codes.parquet")],
    ).fetchall()
    assert ("discharges", "dx_main", "4280", 1) in codes and ("discharges", "dx_2", "4019", 1) in codes


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "er_visits.csv").unlink(), "no file for table er_visits"),
        (
            lambda d: (d / "exemptions.csv").write_text("resident_id;exemption_code;start_date\nR1;0A31;2020-01-01\n"),
            "exemptions.csv: missing column end_date of table exemptions",
        ),
        (
            lambda d: (d / "outpatient.csv").write_bytes((d / "outpatient.csv").read_text().encode("utf-16")),
            "outpatient.csv: not UTF-8 or Latin-1 text",
        ),
        (
            lambda d: [(d / "discharges.csv").unlink(), (d / "discharges.parquet").write_bytes(b"PAR1 not really")],
            "discharges.parquet: cannot be read as Parquet",
        ),
    ],
)
def test_hard_errors_name_the_file_and_column_and_leave_nothing_behind(tmp_path: Path, damage, message) -> None:  # type: ignore[no-untyped-def]
    flows = write_flows(tmp_path / "in")
    damage(flows)
    with pytest.raises(FlowError, match=message):
        load(tmp_path, flows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"], "no store, no partial directory"


def test_an_existing_store_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    with pytest.raises(FileExistsError):
        load(tmp_path, write_flows(tmp_path / "in"))
