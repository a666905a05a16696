"""Benchmark: the stratification on Spark (local mode) next to DuckDB, on the same validated store, in one run.

For each size it reuses or builds the store of ``bench/stratify.py`` (``<data>/store-N``; 10 M takes 15-20 minutes to
build), then measures each engine once in a fresh process: wall time of the engine (catalog to written outputs),
Spark's session start apart, and the peak memory of the whole process tree (Spark's JVM included). The two runs'
residents per level must agree. Usage:
``python -m bench.spark [--sizes 1000000,10000000] [--master local[2]] [--driver-memory 6g]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.measure import Measurement, measure
from bench.stratify import REFERENCE_DATE, commit, machine, prepare, records_in, run_engine

console = Console(width=160)


def run_spark(store: Path, out: Path, master: str, conf: dict[str, str]) -> Measurement:
    """Spark's engine in a fresh interpreter: session start and engine timed apart; the JVM is in the process tree."""
    return measure(
        "import json, shutil, time; from datetime import date; from pathlib import Path; "
        "from presa.stratify.catalog import load_catalog; "
        "from presa.stratify.spark import spark_session, stratify_with_spark; "
        f"out = Path('{out}'); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True); "
        "t = time.perf_counter(); "
        f"spark = spark_session({master!r}, {conf!r}); spark.sparkContext.setLogLevel('ERROR'); "
        "start = time.perf_counter() - t; t = time.perf_counter(); "
        f"reference = date.fromisoformat('{REFERENCE_DATE}'); "
        f"r = stratify_with_spark(spark, Path('{store}'), out, load_catalog(), reference); "
        "elapsed = time.perf_counter() - t; spark.stop(); "
        "print(json.dumps({'elapsed': elapsed, 'session': start, 'population': r.population, "
        "'levels': r.residents_by_level, 'seconds': r.seconds}))"
    )


def spark_conf(driver_memory: str, shuffle_partitions: int) -> dict[str, str]:
    """Local mode: one JVM does everything, so its heap is the driver's; the UI and its port are not needed."""
    return {
        "spark.driver.memory": driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
    }


def results_table() -> Table:
    table = Table(title="Stratification: Spark local mode vs DuckDB, same store (one run each)")
    for column in (
        "residents",
        "records",
        "DuckDB s",
        "Spark s",
        "Spark / DuckDB",
        "Spark session start s",
        "DuckDB peak",
        "Spark peak (JVM incl.)",
    ):
        table.add_column(column, justify="right")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated population sizes")
    parser.add_argument("--data", type=Path, default=Path("bench/data"), help="where populations are kept")
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    parser.add_argument("--driver-memory", default="6g", help="heap of Spark's JVM (local mode: the only one)")
    parser.add_argument("--shuffle-partitions", type=int, default=16, help="spark.sql.shuffle.partitions")
    args = parser.parse_args()
    conf = spark_conf(args.driver_memory, args.shuffle_partitions)
    console.print(f"machine: {machine()}; commit {commit()}; reference date {REFERENCE_DATE}; Spark {args.master}")
    table = results_table()
    for size in (int(s) for s in args.sizes.split(",")):
        store, timings = prepare(size, args.data)
        if timings:
            console.print(f"{size:,} residents prepared: {json.dumps({k: round(v, 2) for k, v in timings.items()})}")
        duck = run_engine(store, args.data / f"run-{size}")
        spark = run_spark(store, args.data / f"spark-run-{size}", args.master, conf)
        if duck.result["levels"] != spark.result["levels"]:
            raise SystemExit(f"{size:,}: the engines disagree: {duck.result['levels']} vs {spark.result['levels']}")
        stages = {k: round(v, 1) for k, v in spark.result["seconds"].items()}
        console.print(f"{size:,}: Spark stages {json.dumps(stages)}")
        duck_s, spark_s = duck.result["elapsed"], spark.result["elapsed"]
        table.add_row(
            f"{size:,}",
            f"{records_in(store):,}",
            f"{duck_s:.1f}",
            f"{spark_s:.1f}",
            f"{spark_s / duck_s:.1f}x",
            f"{spark.result['session']:.1f}",
            f"{duck.peak_gb:.2f} GB",
            f"{spark.peak_gb:.2f} GB",
        )
    console.print(table)


if __name__ == "__main__":
    main()
