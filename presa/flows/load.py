"""Load the regional flows as shipped into a validated store: every row accepted or rejected with its reason.

The edge of the flows package: it finds each table's files, reads their headers and encodings, and runs the SQL of
validate.py with DuckDB. Hard errors (a missing table or column, an unreadable file, a wrong encoding) are found
before anything is written; the store is built in a sibling work directory and renamed into place at the end, so
a failed load leaves nothing behind.
"""

from __future__ import annotations

import codecs
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from presa.codes import code_list_path
from presa.flows.layout import FlowPaths
from presa.flows.schema import FlowSchema, TableSpec, load_schema
from presa.flows.validate import (
    codelist_table,
    duplicate_sql,
    final_sql,
    ident,
    key_first_sql,
    literal,
    table_sql,
)
from presa.workdir import built_in_place_of

ProgressCallback = Callable[[str, int, int], None]

TEXT_SUFFIXES = (".csv", ".txt")
SUFFIXES = (".parquet", *TEXT_SUFFIXES)
# Reading a line as one field: a separator that no flow uses.
WHOLE_LINE = "\x1f"
# Files are numbered in the order read; a row's order is file number x ROW_ORDER_STRIDE + line.
ROW_ORDER_STRIDE = 10**12
SAMPLE_BYTES = 1 << 20
DECODE_CHUNK = 16 << 20


class FlowError(Exception):
    """Flows that cannot be loaded at all: the message names the file and, where it applies, the column."""


@dataclass(frozen=True)
class TableCount:
    table: str
    files: tuple[str, ...]
    read: int
    accepted: int
    rejected: int


@dataclass(frozen=True)
class LoadReport:
    counts: list[TableCount]
    out_dir: Path
    seconds: float

    def count(self, table: str) -> TableCount:
        return next(c for c in self.counts if c.table == table)


@dataclass(frozen=True)
class SourceFile:
    """One shipped file, inspected: how to read it and which of its columns hold the schema's columns."""

    path: Path
    kind: str  # "parquet" or "text"
    columns: dict[str, str]  # schema column -> column name in the file (Parquet) or 1-based field (text)
    types: dict[str, str]  # schema column -> type in the file (VARCHAR for text)
    encoding: str = "utf-8"
    delimiter: str = ";"
    fields: int = 0
    quoted: bool = False


# -- discovery and inspection --------------------------------------------------------------------------------------


def discover_files(source_dir: Path, schema: FlowSchema) -> dict[str, list[Path]]:
    """Each table's files, ``<table>.<ext>`` or ``<table>_<suffix>.<ext>``, in name order."""
    if not source_dir.is_dir():
        raise FlowError(f"flows directory {source_dir} does not exist")
    found: dict[str, list[Path]] = {}
    for name in schema.tables:
        files = sorted(
            p
            for p in source_dir.iterdir()
            if p.is_file() and p.suffix.lower() in SUFFIXES and (p.stem == name or p.stem.startswith(name + "_"))
        )
        # `residents_extra.csv` must not be read as a residents file when no other table is called residents_*;
        # table names do not prefix one another in flows.yaml, so a prefix match is unambiguous.
        if not files:
            raise FlowError(
                f"no file for table {name} in {source_dir} (expected {name}.parquet, {name}.csv or {name}_*.csv)"
            )
        found[name] = files
    return found


def text_encoding(path: Path) -> str:
    """'utf-8' or 'latin-1'; UTF-16 and binary files are refused (Latin-1 accepts any bytes, so it comes last)."""
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head:
            raise FlowError(f"{path.name}: not UTF-8 or Latin-1 text (UTF-16 or binary); ship it as UTF-8 or Latin-1")
        decoder = codecs.getincrementaldecoder("utf-8")()
        handle.seek(0)
        try:
            while chunk := handle.read(DECODE_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "latin-1"
    return "utf-8"


def _header(path: Path, encoding: str) -> str:
    with path.open("r", encoding=encoding, newline="") as handle:
        line = handle.readline()
    return line.lstrip("\ufeff").rstrip("\r\n")


def _clean_name(name: str) -> str:
    return name.strip().strip('"').strip().lower()


def _require_columns(path: Path, table: TableSpec, present: list[str]) -> None:
    missing = [c for c in table.column_names if c not in present]
    if missing:
        raise FlowError(
            f"{path.name}: missing column {', '.join(missing)} of table {table.name} "
            f"(the file has: {', '.join(present) or 'no header'})"
        )


def inspect_text(path: Path, table: TableSpec) -> SourceFile:
    encoding = text_encoding(path)
    header = _header(path, encoding)
    delimiter = ";" if header.count(";") >= header.count(",") and ";" in header else ","
    names = [_clean_name(n) for n in header.split(delimiter)]
    _require_columns(path, table, names)
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise FlowError(f"{path.name}: column {', '.join(repeated)} appears twice in the header")
    with path.open("rb") as handle:
        quoted = b'"' in handle.read(SAMPLE_BYTES)
    return SourceFile(
        path=path,
        kind="text",
        columns={c: str(names.index(c) + 1) for c in table.column_names},
        types=dict.fromkeys(table.column_names, "VARCHAR"),
        encoding=encoding,
        delimiter=delimiter,
        fields=len(names),
        quoted=quoted,
    )


def inspect_parquet(con: duckdb.DuckDBPyConnection, path: Path, table: TableSpec) -> SourceFile:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({literal(str(path))})").fetchall()
    except duckdb.Error as exc:
        raise FlowError(f"{path.name}: cannot be read as Parquet ({str(exc).splitlines()[0]})") from None
    by_name = {_clean_name(str(row[0])): (str(row[0]), str(row[1])) for row in described}
    _require_columns(path, table, list(by_name))
    return SourceFile(
        path=path,
        kind="parquet",
        columns={c: by_name[c][0] for c in table.column_names},
        types={c: by_name[c][1] for c in table.column_names},
    )


def inspect_files(con: duckdb.DuckDBPyConnection, table: TableSpec, files: list[Path]) -> list[SourceFile]:
    inspected = []
    for path in files:
        try:
            if path.suffix.lower() == ".parquet":
                inspected.append(inspect_parquet(con, path, table))
            else:
                inspected.append(inspect_text(path, table))
        except OSError as exc:
            raise FlowError(f"{path.name}: cannot be read ({exc.strerror})") from None
    return inspected


# -- reading -------------------------------------------------------------------------------------------------------


def _common_types(table: TableSpec, files: list[SourceFile]) -> dict[str, str]:
    """One source type per column: the files' own when they all agree, else text (each file then casts)."""
    return {
        c: files[0].types[c] if all(f.types[c] == files[0].types[c] for f in files) else "VARCHAR"
        for c in table.column_names
    }


def _text_field(source: SourceFile, column: str) -> str:
    field = f"parts[{source.columns[column]}]"
    # Quotes around a whole field are the CSV convention; a separator inside quotes is not supported and shows
    # as a wrong number of fields, which rejects the line.
    return f"regexp_replace({field}, '^\\s*\"(.*)\"\\s*$', '\\1')" if source.quoted else field


def _text_select(source: SourceFile, index: int, types: dict[str, str]) -> str:
    columns = ", ".join(f"CAST({_text_field(source, c)} AS {types[c]}) AS {ident(c)}" for c in source.columns)
    reader = (
        f"read_csv({literal(str(source.path))}, columns={{'line': 'VARCHAR'}}, header=false, "
        f"delim={literal(WHOLE_LINE)}, quote='', escape='', auto_detect=false, "
        f"encoding={literal(source.encoding)})"
    )
    fault = (
        f"CASE WHEN len(parts) <> {source.fields} THEN 'expected {source.fields} fields separated by "
        f"''{source.delimiter}'', found ' || len(parts) END"
    )
    return (
        f"SELECT {columns}, {literal(source.path.name)} AS source_file, n AS source_line, "
        f"{index} * {ROW_ORDER_STRIDE} + n AS row_order, {fault} AS field_fault, line AS line_text "
        f"FROM (SELECT line, n, string_split(line, {literal(source.delimiter)}) AS parts "
        f"FROM (SELECT line, row_number() OVER () AS n FROM {reader}) "
        # The header is line 1; blank lines hold no record.
        f"WHERE n > 1 AND line IS NOT NULL AND TRIM(line) <> '')"
    )


def _parquet_select(source: SourceFile, index: int, types: dict[str, str]) -> str:
    columns = ", ".join(f"CAST({ident(source.columns[c])} AS {types[c]}) AS {ident(c)}" for c in source.columns)
    return (
        f"SELECT {columns}, {literal(source.path.name)} AS source_file, file_row_number + 1 AS source_line, "
        f"{index} * {ROW_ORDER_STRIDE} + file_row_number + 1 AS row_order, "
        f"CAST(NULL AS VARCHAR) AS field_fault, CAST(NULL AS VARCHAR) AS line_text "
        f"FROM read_parquet({literal(str(source.path))}, file_row_number=true)"
    )


def source_sql(files: list[SourceFile], types: dict[str, str]) -> str:
    selects = [
        _parquet_select(f, n, types) if f.kind == "parquet" else _text_select(f, n, types)
        for n, f in enumerate(files, start=1)
    ]
    return " UNION ALL ".join(selects)


# -- the load ------------------------------------------------------------------------------------------------------


class _Loader:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        schema: FlowSchema,
        work: FlowPaths,
        max_date: date,
    ) -> None:
        self.con, self.schema, self.work, self.max_date = con, schema, work, max_date
        self.counts: list[TableCount] = []

    def run(self, sources: dict[str, list[SourceFile]], on_progress: ProgressCallback | None) -> None:
        self._create_code_lists()
        self.con.execute(
            "CREATE TEMP TABLE rejects (table_name VARCHAR, source_file VARCHAR, source_line BIGINT, "
            "column_name VARCHAR, value VARCHAR, reason VARCHAR)"
        )
        steps = len(self.schema.tables) + 1
        for done, (name, table) in enumerate(self.schema.tables.items()):
            if on_progress:
                on_progress(name, done, steps)
            self._validate(table, sources[name])
        if on_progress:
            on_progress("summaries", steps - 1, steps)
        self._write_residents()
        self._write_codes()
        self.con.execute(f"COPY (SELECT * FROM rejects ORDER BY ALL) TO {literal(str(self.work.rejects))}")
        if on_progress:
            on_progress("done", steps, steps)

    def _create_code_lists(self) -> None:
        columns = [c for t in self.schema.tables.values() for c in t.columns if c.codelist]
        for name in sorted({c.codelist for c in columns if c.codelist}):
            strip = any(c.normalise == "strip_dots" for c in columns if c.codelist == name)
            code = "REPLACE(UPPER(TRIM(code)), '.', '')" if strip else "UPPER(TRIM(code))"
            self.con.execute(
                f"CREATE TEMP TABLE {codelist_table(name)} AS SELECT DISTINCT {code} AS code "
                f"FROM read_csv({literal(str(code_list_path(name)))}, header=true, all_varchar=true)"
            )

    def _validate(self, table: TableSpec, files: list[SourceFile]) -> None:
        t = table.name
        types = _common_types(table, files)
        self.con.execute(f"CREATE TEMP VIEW {t}_source AS {source_sql(files, types)}")
        for name, select in table_sql(table, types, self.schema.min_date, self.max_date).items():
            self.con.execute(f"CREATE TEMP VIEW {name} AS {select}")
        stage = self.work.root / ".stage" / f"{t}.parquet"
        stage.parent.mkdir(exist_ok=True)
        self.con.execute(f"COPY (SELECT * FROM {t}_checked) TO {literal(str(stage))} (FORMAT parquet)")
        self.con.execute(f"CREATE TEMP VIEW {t}_stage AS SELECT * FROM read_parquet({literal(str(stage))})")
        if table.unique:
            self.con.execute(f"CREATE TEMP TABLE {t}_key_first AS {key_first_sql(table)}")
        self.con.execute(f"CREATE TEMP TABLE {t}_dup_first AS {duplicate_sql(table)}")
        self.con.execute(f"CREATE TEMP VIEW {t}_final AS {final_sql(table)}")
        accepted = self._write_accepted(table)
        rejected = self._keep_rejects(table)
        read = self._scalar(f"SELECT COUNT(*) FROM {t}_stage")
        if read != accepted + rejected:
            raise FlowError(f"{t}: {read} rows read but {accepted} accepted and {rejected} rejected (a bug in presa)")
        self.counts.append(TableCount(t, tuple(f.path.name for f in files), read, accepted, rejected))

    def _typed_columns(self, table: TableSpec) -> str:
        return ", ".join(ident(c.name) for c in table.columns if c.references != "residents")

    def _write_accepted(self, table: TableSpec) -> int:
        t = table.name
        columns = self._typed_columns(table)
        if t == "residents":
            # Residents stay in the database: the other tables join them; last_service_date is added at the end.
            self.con.execute(
                f"CREATE TEMP TABLE residents_accepted AS SELECT row_number() OVER (ORDER BY row_order) AS "
                f"resident_key, {columns}, source_file, source_line FROM residents_final "
                f"WHERE reject_reason IS NULL ORDER BY row_order"
            )
            return self._scalar("SELECT COUNT(*) FROM residents_accepted")
        target = literal(str(self.work.table(t)))
        # In delivery order (insertion order is preserved, so no sort): deliveries grouped by resident keep their
        # keys clustered, which compresses well and makes the engine's per-resident aggregation cache-friendly.
        # (Sorting by date to prune windows was measured and lost: 3x slower aggregation, see docs/PERFORMANCE.md.)
        select = f"SELECT resident_key, {columns}, source_file, source_line FROM {t}_final WHERE reject_reason IS NULL"
        return self._scalar(f"COPY ({select}) TO {target} (FORMAT parquet, COMPRESSION zstd)")

    def _keep_rejects(self, table: TableSpec) -> int:
        t = table.name
        return self._scalar(
            f"INSERT INTO rejects SELECT {literal(t)}, source_file, source_line, reject_column, reject_value, "
            f"reject_reason FROM {t}_final WHERE reject_reason IS NOT NULL"
        )

    def _scalar(self, sql: str) -> int:
        row = self.con.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    def _write_residents(self) -> None:
        """residents.parquet with each resident's last service: the latest record of any flow but exemptions."""
        dated = [t for t in self.schema.event_tables if t.date_column and t.name != "exemptions"]
        latest = " UNION ALL ".join(
            f"SELECT resident_key, MAX({ident(t.date_column or '')}) AS day "
            f"FROM read_parquet({literal(str(self.work.table(t.name)))}) GROUP BY resident_key"
            for t in dated
        )
        columns = self._typed_columns(self.schema.tables["residents"])
        self.con.execute(
            f"COPY (SELECT r.resident_key, {', '.join('r.' + c for c in columns.split(', '))}, "
            f"s.last_service_date, r.source_file, r.source_line FROM residents_accepted r "
            f"LEFT JOIN (SELECT resident_key, MAX(day) AS last_service_date FROM ({latest}) GROUP BY resident_key) s "
            f"USING (resident_key) ORDER BY r.resident_key) TO {literal(str(self.work.table('residents')))} "
            f"(FORMAT parquet, COMPRESSION zstd)"
        )

    def _write_codes(self) -> None:
        selects = [
            f"SELECT {literal(t.name)} AS table_name, {literal(c.name)} AS column_name, {ident(c.name)} AS code "
            f"FROM read_parquet({literal(str(self.work.table(t.name)))}) WHERE {ident(c.name)} IS NOT NULL"
            for t in self.schema.tables.values()
            for c in t.columns
            if c.type == "code"
        ]
        self.con.execute(
            f"COPY (SELECT table_name, column_name, code, COUNT(*) AS n FROM ({' UNION ALL '.join(selects)}) "
            f"GROUP BY ALL ORDER BY ALL) TO {literal(str(self.work.codes))} (FORMAT parquet)"
        )

    def last_record_date(self) -> date | None:
        row = self.con.execute(
            f"SELECT MAX(last_service_date) FROM read_parquet({literal(str(self.work.table('residents')))})"
        ).fetchone()
        return row[0] if row else None

    def rejects_by_reason(self) -> dict[str, dict[str, int]]:
        rows = self.con.execute(
            "SELECT table_name, regexp_replace(reason, ' of .* line [0-9]+$| at .* line [0-9]+$', ''), COUNT(*) "
            "FROM rejects GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for table, reason, n in rows:
            out.setdefault(table, {})[reason] = int(n)
        return out


def load_flows(
    source_dir: Path,
    out_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    max_date: date | None = None,
    memory_limit: str = "4GB",
    threads: int | None = None,
) -> LoadReport:
    """Validate the flows in ``source_dir`` into a new store at ``out_dir`` (layout: presa/flows/layout.py).

    Dates after ``max_date`` (default: today) are rejected as in the future.
    """
    started = time.perf_counter()
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    schema = load_schema()
    files = discover_files(source_dir, schema)
    with built_in_place_of(out_dir) as work:
        con = duckdb.connect()
        try:
            con.execute("SET enable_progress_bar = false")
            con.execute(f"SET memory_limit = {literal(memory_limit)}")
            con.execute(f"SET temp_directory = {literal(str(work / '.spill'))}")
            if threads:
                con.execute(f"SET threads = {int(threads)}")
            sources = {name: inspect_files(con, schema.tables[name], paths) for name, paths in files.items()}
            loader = _Loader(con, schema, FlowPaths(work), max_date or date.today())
            try:
                loader.run(sources, on_progress)
            except duckdb.Error as exc:
                raise FlowError(f"reading the flows in {source_dir} failed: {str(exc).splitlines()[0]}") from None
            last = loader.last_record_date()
            manifest = {
                "schema_version": schema.version,
                "source": str(source_dir.resolve()),
                "max_date": (max_date or date.today()).isoformat(),
                "last_record_date": last.isoformat() if last else None,
                "tables": {
                    c.table: {"files": list(c.files), "read": c.read, "accepted": c.accepted, "rejected": c.rejected}
                    for c in loader.counts
                },
                "rejected_by_reason": loader.rejects_by_reason(),
            }
            FlowPaths(work).manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        finally:
            con.close()
        shutil.rmtree(work / ".spill", ignore_errors=True)
        shutil.rmtree(work / ".stage", ignore_errors=True)
    return LoadReport(loader.counts, out_dir, time.perf_counter() - started)
