"""A whole stratification run: validate the flows, run the engine, write the query database.

The run directory appears whole or not at all: everything is written into a sibling work directory that is renamed
into place at the end, and removed when any step fails.
"""

from __future__ import annotations

import os
import shutil
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
    last_record_date,
    stratify_flows,
    update_run_json,
    write_query_database,
)
from presa.stratify.layout import RunPaths

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunReport:
    run: RunPaths
    load: LoadReport | None
    engine: EngineReport
    seconds: float


def run_stratification(
    flows_dir: Path,
    run_dir: Path,
    catalog: Catalog,
    reference: date | None,
    *,
    replace: bool = False,
    memory_limit: str = "4GB",
    on_load_progress: ProgressCallback | None = None,
    on_engine_progress: ProgressCallback | None = None,
) -> RunReport:
    """Stratify the flows in ``flows_dir`` (raw as shipped, or an already validated store) into ``run_dir``.

    Without a reference date, the date of the flows' last record is used.
    """
    started = time.perf_counter()
    if not flows_dir.is_dir():
        raise FileNotFoundError(f"flows directory {flows_dir} does not exist")
    if run_dir.exists() and not replace:
        raise FileExistsError(f"{run_dir} already exists (use --replace to overwrite it)")
    if flows_dir.resolve().is_relative_to(run_dir.resolve()):
        # Replacing the run would delete the very flows it is made from.
        raise FileExistsError(f"{flows_dir} lies inside {run_dir}: write the new run to another directory")
    work = run_dir.with_name(f".{run_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        load = _validated_flows(flows_dir, RunPaths(work), on_load_progress)
        reference = reference or _last_record_date(RunPaths(work).flows)
        engine = stratify_flows(
            RunPaths(work).flows,
            work,
            catalog,
            reference,
            memory_limit=memory_limit,
            on_progress=on_engine_progress,
        )
        update_run_json(RunPaths(work), input=str(flows_dir.resolve()), load=_load_counts(load))
        if run_dir.exists():
            shutil.rmtree(run_dir)
        work.rename(run_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    run = RunPaths(run_dir)
    write_query_database(run)
    final = EngineReport(run, engine.population, engine.residents_by_level, engine.seconds)
    return RunReport(run, load, final, time.perf_counter() - started)


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
