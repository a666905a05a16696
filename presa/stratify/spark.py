"""Run a compiled catalog on Apache Spark: the stages DuckDB runs, transpiled by sqlglot, not a second implementation.

The flow store may be on any path Spark reads (a local directory, ``hdfs://``, ``s3a://``): each table becomes a
temporary view over its Parquet file. The parameter tables are built from the same rows and Arrow schemas as
DuckDB's; stages that DuckDB materialises are local checkpoints here, the others temporary views. The outputs are
written by the executors into a staging folder of the run directory and merged into the same single Parquet files,
columns and types as the DuckDB engine's, so every reader of a run works on both. The run directory must therefore
be on a filesystem that the driver and the executors share (always so in local mode).

PySpark is an optional extra (``pip install presa[spark]``): this module imports it only when a session is started,
so the DuckDB engine and the CLI work without it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from presa.stratify.catalog import Catalog
from presa.stratify.compile import FLOW_TABLES, Program, compile_catalog, to_dialect
from presa.stratify.engine import (
    MATERIALISED,
    OUTPUT_ROW_GROUP,
    OUTPUTS,
    PARAM_SCHEMAS,
    EngineError,
    EngineReport,
    ProgressCallback,
    count_levels,
    write_run_json,
)
from presa.stratify.layout import RunPaths

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import DataType, StructType

# Dates are days without a zone; a fixed session zone keeps any timestamp arithmetic the same on every node.
BASE_CONF: dict[str, str] = {"spark.sql.session.timeZone": "UTC"}
STAGING = ".spark"


def require_pyspark() -> None:
    """Fail with what to install, not an ImportError deep inside a run."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise EngineError("the Spark engine needs PySpark: pip install 'presa[spark]'") from exc
    if shutil.which("java") is None and not _java_home_set():
        raise EngineError("the Spark engine needs a Java runtime (17 or 21): install default-jre-headless")


def _java_home_set() -> bool:
    home = os.environ.get("JAVA_HOME")
    return home is not None and (Path(home) / "bin" / "java").is_file()


def spark_session(master: str | None = None, conf: Mapping[str, str] | None = None) -> SparkSession:
    """A Spark session for a run; without ``master`` Spark's own default (local, or what spark-submit set)."""
    require_pyspark()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("presa-stratify")
    if master:
        builder = builder.master(master)
    for key, value in {**BASE_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def is_uri(location: str | Path) -> bool:
    """A store named by a URI (hdfs://, s3a://, file://) rather than a local path."""
    return "://" in str(location)


def store_location(store: str | Path) -> str:
    """How Spark is told where the store is: URIs as given, local paths absolute."""
    return str(store).rstrip("/") if is_uri(store) else Path(store).resolve().as_uri()


def attach_flows(spark: SparkSession, store: str) -> None:
    """Each validated flow table, and the observed codes, as a temporary view named after it."""
    for table in (*FLOW_TABLES, "codes"):
        try:
            frame = spark.read.parquet(f"{store}/{table}.parquet")
        except Exception as exc:  # Spark raises its own AnalysisException for a missing path
            raise EngineError(f"{store} is not a validated flow store: cannot read {table}.parquet") from exc
        frame.createOrReplaceTempView(table)


def read_manifest(spark: SparkSession, store: str) -> dict[str, Any]:
    """The store's manifest, read through Spark so that it works wherever the store is."""
    try:
        lines = [row.value for row in spark.read.text(f"{store}/manifest.json", wholetext=True).collect()]
    except Exception as exc:
        raise EngineError(f"cannot read the manifest of {store}") from exc
    manifest: dict[str, Any] = json.loads("".join(lines))
    return manifest


def store_last_record_date(spark: SparkSession, store: str) -> date | None:
    value = read_manifest(spark, store).get("last_record_date")
    return date.fromisoformat(value) if value else None


def spark_type(arrow: pa.DataType) -> DataType:
    """The Spark type of a parameter column, from the Arrow schema the DuckDB engine uses."""
    from pyspark.sql import types as st

    mapping: dict[pa.DataType, DataType] = {
        pa.int32(): st.IntegerType(),
        pa.int64(): st.LongType(),
        pa.float64(): st.DoubleType(),
        pa.string(): st.StringType(),
        pa.bool_(): st.BooleanType(),
        pa.date32(): st.DateType(),
    }
    return mapping[arrow]


def spark_schema(schema: pa.Schema) -> StructType:
    from pyspark.sql import types as st

    return st.StructType([st.StructField(f.name, spark_type(f.type), nullable=True) for f in schema])


def load_parameters(spark: SparkSession, program: Program) -> None:
    """The parameter tables, small, from the same rows and column types as DuckDB's."""
    for name, rows in program.tables.items():
        schema = PARAM_SCHEMAS[name]
        values = [tuple(row[f.name] for f in schema) for row in rows]
        spark.createDataFrame(values, spark_schema(schema)).createOrReplaceTempView(name)


def run_stages(spark: SparkSession, program: Program, on_progress: ProgressCallback | None = None) -> dict[str, float]:
    """Each stage, transpiled, as a cached table (computed now) or a view; return the seconds each took."""
    seconds: dict[str, float] = {}
    total = len(program.stages)
    for done, (name, select) in enumerate(program.stages, start=1):
        started = time.perf_counter()
        text = to_dialect(select, "spark")
        frame = spark.sql(text)
        if name in MATERIALISED:
            # Computed once here and kept on the executors; cutting the lineage matters as much as the reuse:
            # with cached tables every later query re-planned the whole chain of stages above it (minutes).
            frame = frame.localCheckpoint(eager=True)
        frame.createOrReplaceTempView(name)
        seconds[name] = time.perf_counter() - started
        if on_progress:
            on_progress(name, done, total)
    return seconds


def write_outputs(spark: SparkSession, program: Program, seconds: dict[str, float], run: RunPaths) -> None:
    """Each output written in parallel into the staging folder, then merged into the run's single Parquet file.

    A stage's write is added to the stage's seconds, as DuckDB writes such a stage when it computes it.
    """
    staging = run.root / STAGING
    for name, target_of in OUTPUTS.items():
        started = time.perf_counter()
        parts = staging / name
        spark.table(name).write.mode("overwrite").parquet(parts.resolve().as_uri())
        merge_parts(parts, target_of(run))
        key = name if name in program.stage_names else f"write_{name}"
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
    shutil.rmtree(staging, ignore_errors=True)


def merge_parts(parts: Path, target: Path) -> None:
    """Spark's part files as one Parquet file, streamed a part at a time.

    Spark marks some columns required and adds its own schema metadata; DuckDB writes every column optional and
    none, so the merged file has plain nullable columns and reads the same as the DuckDB engine's.
    """
    files = sorted(parts.glob("part-*.parquet"))
    if not files:
        raise EngineError(f"Spark wrote no part file into {parts}")
    schema = plain_schema(pq.read_schema(files[0]))
    with pq.ParquetWriter(target, schema) as writer:
        for file in files:
            table = pq.read_table(file)
            if table.num_rows:
                writer.write_table(table.replace_schema_metadata(None).cast(schema), row_group_size=OUTPUT_ROW_GROUP)


def plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, plain_type(f.type), nullable=True) for f in schema])


def plain_type(kind: pa.DataType) -> pa.DataType:
    """List items nullable and named ``element``, as DuckDB writes them."""
    if pa.types.is_list(kind):
        return pa.list_(pa.field("element", plain_type(kind.value_type), nullable=True))
    return kind


def release(spark: SparkSession, program: Program) -> None:
    """Drop the run's cached tables and views, so that a session can run again."""
    for name in (*(n for n, _ in program.stages), *program.tables, *FLOW_TABLES, "codes"):
        spark.catalog.dropTempView(name)


def stratify_with_spark(
    spark: SparkSession,
    store: str | Path,
    run_dir: Path,
    catalog: Catalog,
    reference: date,
    *,
    on_progress: ProgressCallback | None = None,
) -> EngineReport:
    """Stratify the population of a validated flow store into ``run_dir`` (which must exist) on ``spark``."""
    location = store_location(store)
    run = RunPaths(run_dir)
    started = time.perf_counter()
    attach_flows(spark, location)
    program = compile_catalog(catalog, reference, store_last_record_date(spark, location))
    try:
        load_parameters(spark, program)
        seconds = run_stages(spark, program, on_progress)
        write_outputs(spark, program, seconds, run)
    except EngineError:
        raise
    except Exception as exc:  # Py4J and Spark's analysis errors: one line for the user, the chain for debugging
        raise EngineError(f"stratification on Spark failed: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        release(spark, program)
        shutil.rmtree(run.root / STAGING, ignore_errors=True)
    seconds["engine"] = time.perf_counter() - started
    levels = count_levels(run.residents)
    report = EngineReport(run, sum(levels.values()), levels, seconds)
    # A store named by a URI is not on this machine: the run's readers will look for it as RUN/flows (docs/SCALE.md).
    flows = run.flows if is_uri(store) else Path(store)
    write_run_json(run, catalog, program, flows, report, engine="spark")
    return report


@dataclass(frozen=True)
class SparkOptions:
    """How a run gets its Spark session: an open one (kept open), or one started for the run and stopped after."""

    master: str | None = None
    conf: Mapping[str, str] = field(default_factory=dict)
    session: SparkSession | None = None


def run_on_spark(
    options: SparkOptions,
    store: str | Path,
    run_dir: Path,
    catalog: Catalog,
    reference: date | None,
    *,
    on_progress: ProgressCallback | None = None,
) -> EngineReport:
    """A whole engine run on Spark; without a reference date, the store's last record date."""
    spark = options.session or spark_session(options.master, options.conf)
    try:
        if reference is None:
            reference = store_last_record_date(spark, store_location(store))
        if reference is None:
            raise EngineError("the flows hold no dated record to take a reference date from: give --reference-date")
        return stratify_with_spark(spark, store, run_dir, catalog, reference, on_progress=on_progress)
    finally:
        if options.session is None:
            spark.stop()
