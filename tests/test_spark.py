"""The Spark engine gives exactly the DuckDB engine's run, from the same catalog and the same compiled SQL.

One synthetic population is stratified by both engines (Spark in local mode, one session for the module) and the
runs are compared file by file: every resident's pathologies, level and cluster, every piece of evidence, the
naming tables and the Parquet schemas; the readers of a run (run views, diff, explain) work on the Spark run.
Java and PySpark are installed by ``./task test``: without them these tests fail, they never skip.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from presa.stratify.catalog import load_catalog
from presa.stratify.diff import diff_runs
from presa.stratify.explain import explain_resident
from presa.stratify.layout import RunPaths
from presa.stratify.pipeline import RunReport, run_stratification
from presa.stratify.runview import open_run
from presa.stratify.spark import SparkOptions
from presa.synth import SynthConfig, generate
from tests.runfiles import ROW_ORDERS, rows

RESIDENTS = 2000
TEST_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None:
        pytest.fail("the Spark tests need Java: run ./task test, or apt-get install default-jre-headless")
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        pytest.fail("the Spark tests need PySpark: run ./task setup, or pip install -e '.[dev,spark]'")
    builder = SparkSession.builder.master("local[2]").appName("presa-tests")
    for key, value in TEST_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunReport, RunReport]:
    """The same population stratified by DuckDB (from the raw flows) and by Spark (from DuckDB's validated store)."""
    root = tmp_path_factory.mktemp("spark")
    generate(SynthConfig(residents=RESIDENTS, seed=11), root / "raw")
    catalog = load_catalog()
    duck = run_stratification(root / "raw", root / "duckdb", catalog, None)
    on_spark = run_stratification(
        RunPaths(root / "duckdb").flows, root / "spark", catalog, None, spark=SparkOptions(session=spark)
    )
    return duck, on_spark


def columns(path: Path) -> list[tuple[str, str]]:
    """Names and types; Parquet's required flags are left out: DuckDB sets them by its own inference, and no
    reader of a run depends on them."""
    return [(field.name, str(field.type)) for field in pq.read_schema(path)]


def test_every_resident_gets_the_same_pathologies_level_and_cluster(runs: tuple[RunReport, RunReport]) -> None:
    duck, on_spark = runs
    query = """SELECT resident_key, age, n_pathologies, pathologies, main_pathology, cluster, uses_services, level
               FROM residents ORDER BY resident_key"""
    expected = open_run(duck.run.root).execute(query).fetchall()
    got = open_run(on_spark.run.root).execute(query).fetchall()
    assert len(expected) > RESIDENTS * 0.9
    assert sum(1 for row in expected if row[2]) > 100, "too few chronic residents for a meaningful comparison"
    assert got == expected


def test_the_files_are_identical_row_for_row(runs: tuple[RunReport, RunReport]) -> None:
    duck, on_spark = runs
    for name, order in ROW_ORDERS.items():
        a, b = getattr(duck.run, name), getattr(on_spark.run, name)
        assert columns(b) == columns(a), name
        assert rows(b, order) == rows(a, order), name


def test_run_json_has_the_same_shape_and_figures(runs: tuple[RunReport, RunReport]) -> None:
    duck, on_spark = runs
    a = json.loads(duck.run.run_json.read_text())
    b = json.loads(on_spark.run.run_json.read_text())
    assert (a["engine"], b["engine"]) == ("duckdb", "spark")
    assert set(b) == set(a)
    for key in ("catalog", "reference_date", "windows", "population", "residents_by_level"):
        assert b[key] == a[key], key
    assert set(b["seconds"]) == set(a["seconds"])
    assert on_spark.run.duckdb.is_file()
    assert not (on_spark.run.root / ".spark").exists()


def test_diff_and_explain_read_the_spark_run(runs: tuple[RunReport, RunReport]) -> None:
    duck, on_spark = runs
    diff = diff_runs(duck.run.root, on_spark.run.root)
    assert (diff.only_in_a, diff.only_in_b, diff.changed_residents) == (0, 0, 0)
    resident_id = (
        open_run(duck.run.root)
        .execute("SELECT resident_id FROM residents WHERE n_pathologies >= 2 ORDER BY resident_id LIMIT 1")
        .fetchone()
    )
    assert resident_id is not None
    expected = explain_resident(duck.run.root, resident_id[0])
    got = explain_resident(on_spark.run.root, resident_id[0])
    assert got == expected


def test_a_store_named_by_a_uri(spark: Any, runs: tuple[RunReport, RunReport], tmp_path: Path) -> None:
    """A store on any path Spark reads (file:// here, hdfs:// or s3a:// on a cluster) is read in place; the run's
    readers find it once it is put at RUN/flows."""
    duck, _ = runs
    uri = duck.run.flows.resolve().as_uri()
    report = run_stratification(uri, tmp_path / "run", load_catalog(), None, spark=SparkOptions(session=spark))
    run = report.run
    assert json.loads(run.run_json.read_text())["input"] == uri
    assert not run.flows.exists()
    assert not run.duckdb.exists()
    assert rows(run.residents, ["resident_key"]) == rows(duck.run.residents, ["resident_key"])
    run.flows.symlink_to(duck.run.flows.resolve(), target_is_directory=True)
    assert diff_runs(duck.run.root, run.root).changed_residents == 0
