"""Run a compiled catalog with DuckDB over a validated flow store and write the run's files.

The edge of the stratify domain: everything that decides is in compile.py; this module feeds it tables, runs its
stages in order and writes Parquet. Heavy stages are materialised once; the others stay views. A stage that is one
of the run's files is written as soon as it is computed, and the stages after it read it back from the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from presa import __version__
from presa.flows.layout import FlowPaths
from presa.stratify.catalog import Catalog
from presa.stratify.compile import FLOW_TABLES, Program, compile_catalog
from presa.stratify.layout import RunPaths
from presa.stratify.runview import create_run_views

ProgressCallback = Callable[[str, int, int], None]

# Stages read more than once are materialised; the rest are views inlined where they are used. The evidence, one of
# the run's files, is written instead (run_stages); Spark, which writes its files at the end, keeps it.
MATERIALISED = frozenset(
    {"code_map", "outsiders", "evidence", "masked_cases", "case_sets", "service_users", "clusters"}
)

PARAM_SCHEMAS: dict[str, pa.Schema] = {
    "criteria": pa.schema(
        [
            ("criterion_no", pa.int32()),
            ("criterion_id", pa.string()),
            ("pathology_no", pa.int32()),
            ("source", pa.string()),
            ("min_count", pa.int64()),
            ("min_ddd", pa.float64()),
            ("main_only", pa.bool_()),
            ("window_start", pa.date32()),
            ("window_end", pa.date32()),
            ("mask_word", pa.int32()),
            ("mask_bit", pa.int64()),
        ]
    ),
    "prefixes": pa.schema([("criterion_no", pa.int32()), ("table_name", pa.string()), ("prefix", pa.string())]),
    "pathologies": pa.schema(
        [
            ("pathology_no", pa.int32()),
            ("pathology_id", pa.string()),
            ("name_it", pa.string()),
            ("name_en", pa.string()),
            ("priority", pa.int32()),
            ("macro_area", pa.string()),
            ("bit_lo", pa.int64()),
            ("bit_hi", pa.int64()),
        ]
    ),
    "exclusions": pa.schema([("pathology_no", pa.int32()), ("excluded_by_no", pa.int32())]),
    "levels": pa.schema([("n_key", pa.int32()), ("uses_services", pa.bool_()), ("level", pa.int32())]),
    "params": pa.schema([("reference_date", pa.date32()), ("use_start", pa.date32()), ("level_cap", pa.int32())]),
}


class EngineError(RuntimeError):
    """A run that cannot start or finish, with a one-line reason."""


@dataclass(frozen=True)
class EngineReport:
    run: RunPaths
    population: int
    residents_by_level: dict[int, int]
    seconds: dict[str, float] = field(default_factory=dict)


def connect(
    memory_limit: str = "4GB", threads: int | None = None, temp_dir: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the limits a run keeps to (it spills to ``temp_dir`` past the memory limit)."""
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_dir is not None:
        con.execute("SET temp_directory = ?", [str(temp_dir)])
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    return con


@dataclass(frozen=True)
class Shard:
    """One of ``count`` disjoint parts of the population: the residents whose key modulo ``count`` is ``index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: the index must be from 0 to {self.count - 1}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``i/n``, e.g. ``0/4`` for the first of four shards."""
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"shard {text!r} is not i/n (e.g. 0/4)")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def attach_flows(con: duckdb.DuckDBPyConnection, flows: FlowPaths, shard: Shard | None = None) -> None:
    """Expose each validated flow table, and the observed codes, as a view named after it.

    A shard keeps its residents' rows of every flow. Every stage is per resident except the clusters, which depend
    only on a resident's set of pathologies, so a shard's results are the whole run's for its residents. The codes
    stay whole: codes observed only in other shards just expand to rules no row of this shard matches.
    """
    missing = [t for t in (*FLOW_TABLES, "codes") if not (flows.codes if t == "codes" else flows.table(t)).is_file()]
    if missing:
        raise EngineError(f"{flows.root} is not a validated flow store: missing {', '.join(missing)}")
    for table in FLOW_TABLES:
        relation = con.read_parquet(str(flows.table(table)))
        if shard is not None:
            relation = relation.filter(f"resident_key % {shard.count:d} = {shard.index:d}")
        relation.create_view(table)
    con.read_parquet(str(flows.codes)).create_view("codes")


def last_record_date(flows: FlowPaths) -> date | None:
    """The date of the store's last record, as the loader recorded it in the manifest."""
    try:
        value = json.loads(flows.manifest.read_text(encoding="utf-8")).get("last_record_date")
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineError(f"cannot read the manifest of {flows.root}: {exc}") from exc
    return date.fromisoformat(value) if value else None


def load_parameters(con: duckdb.DuckDBPyConnection, program: Program) -> None:
    for name, rows in program.tables.items():
        arrow = pa.Table.from_pylist(list(rows), schema=PARAM_SCHEMAS[name])
        con.register(f"_{name}_arrow", arrow)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _{name}_arrow")
        con.unregister(f"_{name}_arrow")


# The stages and parameter tables a run writes, and where: the per-resident facts (integer keys only) and the small
# tables that name them. Both engines write these, in row groups of DuckDB's default size: groups of a million rows
# made writing the 10 M residents and their evidence 0.3 s slower in all (docs/PERFORMANCE.md).
OUTPUT_ROW_GROUP = 122_880
OUTPUTS: dict[str, Callable[[RunPaths], Path]] = {
    "stratified": lambda run: run.residents,
    "evidence": lambda run: run.evidence,
    "cluster_table": lambda run: run.clusters,
    "criteria": lambda run: run.criteria,
    "pathologies": lambda run: run.pathologies,
}


def run_stages(
    con: duckdb.DuckDBPyConnection, program: Program, run: RunPaths, on_progress: ProgressCallback | None = None
) -> dict[str, float]:
    """Create each stage as a temp table or a view, in order, or write it when it is one of the run's files (then
    read back as a view over the file: storing it twice would cost more); return the seconds each took."""
    seconds: dict[str, float] = {}
    total = len(program.stages)
    for done, (name, select) in enumerate(program.stages, start=1):
        started = time.perf_counter()
        if name in OUTPUTS:
            target = _quote(OUTPUTS[name](run))
            con.execute(f"COPY ({select}) TO '{target}' (FORMAT parquet, ROW_GROUP_SIZE {OUTPUT_ROW_GROUP})")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet('{target}')")
        else:
            kind = "TABLE" if name in MATERIALISED else "VIEW"
            con.execute(f"CREATE OR REPLACE TEMP {kind} {name} AS {select}")
        seconds[name] = time.perf_counter() - started
        if on_progress:
            on_progress(name, done, total)
    return seconds


def write_outputs(con: duckdb.DuckDBPyConnection, program: Program, run: RunPaths) -> dict[str, float]:
    """The outputs that are not stages (the parameter tables that name the facts); the stages wrote themselves."""
    seconds: dict[str, float] = {}
    for name, target_of in OUTPUTS.items():
        if name in program.stage_names:
            continue
        started = time.perf_counter()
        con.execute(f"COPY {name} TO '{_quote(target_of(run))}' (FORMAT parquet, ROW_GROUP_SIZE {OUTPUT_ROW_GROUP})")
        seconds[f"write_{name}"] = time.perf_counter() - started
    return seconds


def stratify_flows(
    flows_dir: Path,
    run_dir: Path,
    catalog: Catalog,
    reference: date,
    *,
    memory_limit: str = "4GB",
    threads: int | None = None,
    shard: Shard | None = None,
    on_progress: ProgressCallback | None = None,
) -> EngineReport:
    """Stratify the population of a validated flow store, or one shard of it, into ``run_dir`` (which must exist)."""
    flows = FlowPaths(flows_dir)
    program = compile_catalog(catalog, reference, last_record_date(flows))
    run = RunPaths(run_dir)
    temp_dir = run_dir / ".duckdb_tmp"
    started = time.perf_counter()
    con = connect(memory_limit, threads, temp_dir)
    try:
        attach_flows(con, flows, shard)
        load_parameters(con, program)
        seconds = run_stages(con, program, run, on_progress)
        seconds.update(write_outputs(con, program, run))
    except duckdb.Error as exc:
        raise EngineError(f"stratification failed: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()
        _remove_tree(temp_dir)
    seconds["engine"] = time.perf_counter() - started
    levels = count_levels(run.residents)
    report = EngineReport(run, sum(levels.values()), levels, seconds)
    write_run_json(run, catalog, program, flows_dir, report, shard=shard)
    return report


def count_levels(residents: Path) -> dict[int, int]:
    """Residents per level, read back from the written residents file."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT level, COUNT(*) FROM read_parquet('{_quote(residents)}') GROUP BY level ORDER BY level"
        ).fetchall()
    finally:
        con.close()
    return {int(level): int(n) for level, n in rows}


def write_run_json(
    run: RunPaths,
    catalog: Catalog,
    program: Program,
    flows_dir: Path | str,
    report: EngineReport,
    *,
    engine: str = "duckdb",
    shard: Shard | None = None,
) -> None:
    windows = catalog.header.default_windows_months.model_dump()
    info: dict[str, Any] = {
        "presa_version": __version__,
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "catalog": {
            "name": catalog.header.name,
            "version": catalog.version,
            "digest": catalog.digest,
            "directory": str(catalog.directory),
            "pathologies": len(catalog.pathologies),
            "criteria": len(program.tables["criteria"]),
        },
        "engine": engine,
        "reference_date": program.reference_date.isoformat(),
        "windows": windows,
        "flows": _relative_if_inside(flows_dir, run.root),
        "population": report.population,
        "residents_by_level": {str(k): v for k, v in report.residents_by_level.items()},
        "seconds": {k: round(v, 3) for k, v in report.seconds.items()},
    }
    if shard is not None:
        info["shard"] = str(shard)
    run.run_json.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_query_database(run: RunPaths) -> None:
    """A DuckDB file with the run's views (absolute paths), for analysts' own queries."""
    run.duckdb.unlink(missing_ok=True)
    con = duckdb.connect(str(run.duckdb))
    try:
        create_run_views(con, run, absolute=True)
    finally:
        con.close()


def update_run_json(run: RunPaths, **fields: Any) -> None:
    info = json.loads(run.run_json.read_text(encoding="utf-8"))
    info.update(fields)
    run.run_json.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _relative_if_inside(path: Path | str, root: Path) -> str:
    """A run keeps its own flows by a relative path, so that it can be moved whole; a URI stays as it is."""
    if isinstance(path, str):
        return path
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path.resolve())


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    path.rmdir()
