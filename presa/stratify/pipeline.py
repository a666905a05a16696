"""A whole stratification run: validate the flows, run the engine, write the query database.

The run directory appears whole or not at all: everything is written into a sibling work directory that is renamed
into place at the end, and removed when any step fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from presa.flows.layout import FlowPaths
from presa.flows.load import LoadReport, load_flows
from presa.stratify.catalog import Catalog
from presa.stratify.engine import (
    EngineError,
    EngineReport,
    Shard,
    last_record_date,
    stratify_flows,
    update_run_json,
    write_query_database,
)
from presa.stratify.layout import RunPaths
from presa.stratify.spark import SparkOptions, is_uri, run_on_spark
from presa.workdir import built_in_place_of

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunReport:
    run: RunPaths
    load: LoadReport | None
    engine: EngineReport
    seconds: float


def run_stratification(
    flows_dir: Path | str,
    run_dir: Path,
    catalog: Catalog,
    reference: date | None,
    *,
    replace: bool = False,
    memory_limit: str = "4GB",
    spark: SparkOptions | None = None,
    shard: Shard | None = None,
    on_load_progress: ProgressCallback | None = None,
    on_engine_progress: ProgressCallback | None = None,
) -> RunReport:
    """Stratify the flows in ``flows_dir`` (raw as shipped, or an already validated store) into ``run_dir``.

    Without a reference date, the date of the flows' last record is used. With ``spark`` the stages run on Apache
    Spark, and ``flows_dir`` may also be a validated store on any path Spark reads (``hdfs://``, ``s3a://``).
    """
    started = time.perf_counter()
    remote = spark is not None and is_uri(flows_dir)
    if not remote:
        _check_local_flows(Path(flows_dir), run_dir)
    if run_dir.exists() and not replace:
        raise FileExistsError(f"{run_dir} already exists (use --replace to overwrite it)")
    with built_in_place_of(run_dir) as work:
        load = None if remote else _validated_flows(Path(flows_dir), RunPaths(work), on_load_progress)
        store: Path | str = str(flows_dir) if remote else RunPaths(work).flows
        engine = _run_engine(store, work, catalog, reference, memory_limit, spark, shard, on_engine_progress)
        source = str(flows_dir) if remote else str(Path(flows_dir).resolve())
        update_run_json(RunPaths(work), input=source, load=_load_counts(load))
    run = RunPaths(run_dir)
    if run.flows.exists():  # a store named by a URI has no local copy yet: its views come once one is put there
        write_query_database(run)
    final = EngineReport(run, engine.population, engine.residents_by_level, engine.seconds)
    return RunReport(run, load, final, time.perf_counter() - started)


def _check_local_flows(flows_dir: Path, run_dir: Path) -> None:
    if not flows_dir.is_dir():
        raise FileNotFoundError(f"flows directory {flows_dir} does not exist")
    if flows_dir.resolve().is_relative_to(run_dir.resolve()):
        # Replacing the run would delete the very flows it is made from.
        raise FileExistsError(f"{flows_dir} lies inside {run_dir}: write the new run to another directory")


def _run_engine(
    store: Path | str,
    work: Path,
    catalog: Catalog,
    reference: date | None,
    memory_limit: str,
    spark: SparkOptions | None,
    shard: Shard | None,
    on_progress: ProgressCallback | None,
) -> EngineReport:
    """The stages on DuckDB (default) or on Spark, over the validated store."""
    if spark is not None:
        if shard is not None:
            raise EngineError("shards are for DuckDB runs: Spark partitions the whole population by itself")
        return run_on_spark(spark, store, work, catalog, reference, on_progress=on_progress)
    local = Path(store)
    return stratify_flows(
        local,
        work,
        catalog,
        reference or _last_record_date(local),
        memory_limit=memory_limit,
        shard=shard,
        on_progress=on_progress,
    )


def _last_record_date(flows_dir: Path) -> date:
    last = last_record_date(FlowPaths(flows_dir))
    if last is None:
        raise EngineError("the flows hold no dated record to take a reference date from: give --reference-date")
    return last


def _load_counts(load: LoadReport | None) -> dict[str, dict[str, int]] | None:
    if load is None:
        return None
    return {c.table: {"read": c.read, "accepted": c.accepted, "rejected": c.rejected} for c in load.counts}


def _validated_flows(flows_dir: Path, run: RunPaths, on_progress: ProgressCallback | None) -> LoadReport | None:
    """Validate raw flows into the run; a store that is validated already is linked, not copied."""
    if FlowPaths(flows_dir).is_validated():
        run.flows.symlink_to(flows_dir.resolve(), target_is_directory=True)
        return None
    return load_flows(flows_dir, run.flows, on_progress=on_progress)
