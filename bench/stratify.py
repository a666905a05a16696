"""Benchmark: the stratification engine against the floor, at several population sizes.

For each size it generates (or reuses) a synthetic population, validates it once into a store, then measures in
fresh processes, each several times (median), warm page cache:

- floor: one plain DuckDB query over the same validated files that reads every column the engine reads and
  aggregates a hash of them - the cost of just reading the input;
- engine: ``stratify_flows`` with the shipped catalog, writing its Parquet outputs;
- bound: the least a stratification in SQL does: the engine's own stages up to its evidence file (every rule's
  hits over the flows, thresholds applied, written), then one row per resident of the population written with
  the number of rules that fired. No criteria trees, ages, clusters or service use: the engine cannot beat it.

It prints wall time, records/s and the peak memory of the whole process tree, and the engine's and the bound's ratio
to the floor. Then, once per size, what an analyst waits for at the terminal, the command's whole process from start
to exit: ``presa stratify`` (engine, summary, charts and query database), ``presa explain`` of a level-1 resident
and ``presa diff`` of that run against the engine's.
Usage: ``python bench/stratify.py [--sizes 1000000,10000000] [--repeat 3] [--data bench/data]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import psutil
from rich.console import Console
from rich.table import Table

from bench.measure import Measurement, measure
from presa.flows.layout import FlowPaths
from presa.stratify.catalog import load_catalog
from presa.stratify.compile import compile_catalog
from presa.stratify.engine import attach_flows, connect, last_record_date, load_parameters, run_stages
from presa.stratify.layout import RunPaths

REFERENCE_DATE = "2025-12-31"

# The columns the engine reads (presa/stratify/compile.py): the floor reads exactly these.
ENGINE_COLUMNS = {
    "residents": ["resident_key", "sex", "birth_date", "registration_date", "death_date", "last_service_date"],
    "prescriptions": ["resident_key", "dispensing_date", "atc", "ddd"],
    "outpatient": ["resident_key", "service_date", "service_code"],
    "discharges": [
        "resident_key",
        "discharge_date",
        "dx_main",
        "dx_2",
        "dx_3",
        "dx_4",
        "dx_5",
        "dx_6",
        "source_file",
        "source_line",
    ],
    "exemptions": ["resident_key", "exemption_code", "start_date", "end_date"],
}

console = Console(width=150)


def floor_sql(store: Path) -> str:
    parts = [
        f"SELECT hash({', '.join(columns)}) AS h FROM read_parquet('{store / (table + '.parquet')}')"
        for table, columns in ENGINE_COLUMNS.items()
    ]
    return "SELECT SUM(h) FROM (" + " UNION ALL ".join(parts) + ")"


def prepare(size: int, data: Path) -> tuple[Path, dict[str, float]]:
    """Generate and validate a population once; later runs reuse it."""
    raw, store = data / f"synth-{size}", data / f"store-{size}"
    timings: dict[str, float] = {}
    if not (raw / "synth.json").is_file():
        shutil.rmtree(raw, ignore_errors=True)
        step = measure(
            "from pathlib import Path; from presa.synth import SynthConfig, generate; "
            f"generate(SynthConfig(residents={size}, seed=1), Path('{raw}')); print('{{}}')"
        )
        timings["synth_s"], timings["synth_peak_gb"] = step.seconds, step.peak_gb
    if not (store / "manifest.json").is_file():
        shutil.rmtree(store, ignore_errors=True)
        step = measure(
            "from pathlib import Path; from presa.flows.load import load_flows; "
            f"load_flows(Path('{raw}'), Path('{store}')); print('{{}}')"
        )
        timings["load_s"], timings["load_peak_gb"] = step.seconds, step.peak_gb
    return store, timings


def records_in(store: Path) -> int:
    manifest = json.loads((store / "manifest.json").read_text())
    return sum(int(t["accepted"]) for t in manifest["tables"].values())


def run_floor(store: Path) -> Measurement:
    return measure(
        "import duckdb, json, time; con = duckdb.connect(); con.execute('SET enable_progress_bar = false'); "
        "t = time.perf_counter(); "
        f"con.execute({floor_sql(store)!r}).fetchall(); "
        "print(json.dumps({'elapsed': time.perf_counter() - t}))"
    )


def run_engine(store: Path, out: Path) -> Measurement:
    """The engine from catalog load to written outputs; interpreter start-up and imports are not counted."""
    return measure(
        "import json, shutil, time; from datetime import date; from pathlib import Path; "
        "from presa.stratify.catalog import load_catalog; from presa.stratify.engine import stratify_flows; "
        f"out = Path('{out}'); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True); "
        "t = time.perf_counter(); "
        f"r = stratify_flows(Path('{store}'), out, load_catalog(), date.fromisoformat('{REFERENCE_DATE}')); "
        "print(json.dumps({'elapsed': time.perf_counter() - t, 'population': r.population, "
        "'levels': r.residents_by_level, 'seconds': r.seconds}))"
    )


# The engine's stages that the bound runs as they are: the code map, the hits, the evidence file and the population.
BOUND_STAGES = ("code_map", "hits", "outsiders", "evidence", "population")
BOUND_RESIDENTS = """
SELECT pop.resident_key, CAST(COALESCE(e.n, 0) AS SMALLINT) AS rules_fired
FROM population AS pop
LEFT JOIN (SELECT resident_key, COUNT(*) AS n FROM evidence GROUP BY resident_key) AS e USING (resident_key)
"""


def lower_bound(store: Path, out: Path) -> float:
    """Run the bound (see the module's docstring) into ``out``; its seconds from catalog load to written files."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    flows = FlowPaths(store)
    program = compile_catalog(load_catalog(), date.fromisoformat(REFERENCE_DATE), last_record_date(flows))
    if missing := sorted(set(BOUND_STAGES) - program.stage_names):
        raise SystemExit(f"the engine has no stage {', '.join(missing)}: BOUND_STAGES must follow its stages")
    program = replace(program, stages=tuple((n, sql) for n, sql in program.stages if n in BOUND_STAGES))
    run = RunPaths(out)
    con = connect(temp_dir=out / ".duckdb_tmp")
    try:
        attach_flows(con, flows)
        load_parameters(con, program)
        run_stages(con, program, run)
        con.execute(f"COPY ({BOUND_RESIDENTS}) TO '{run.residents}' (FORMAT parquet)")
    finally:
        con.close()
    return time.perf_counter() - started


def run_lower_bound(store: Path, out: Path) -> Measurement:
    return measure(
        "import json; from pathlib import Path; from bench.stratify import lower_bound; "
        f"print(json.dumps({{'elapsed': lower_bound(Path('{store}'), Path('{out}'))}}))"
    )


def run_command(*args: str) -> Measurement:
    """A ``presa`` command as an analyst runs it, interpreter start-up included; its output is discarded."""
    step = measure(
        "import json, subprocess, sys, time; from pathlib import Path; t = time.perf_counter(); "
        f"subprocess.run([str(Path(sys.executable).with_name('presa')), *{list(args)!r}], check=True, "
        "stdout=subprocess.DEVNULL); print(json.dumps({'elapsed': time.perf_counter() - t}))"
    )
    return Measurement(step.result["elapsed"], step.peak_bytes, step.result)


def most_complex_resident(store: Path, run: Path) -> str:
    """The pseudonymous id of a level-1 resident (most pathologies, most evidence to explain)."""
    con = duckdb.connect()
    try:
        row = con.execute(
            f"SELECT r.resident_id FROM read_parquet('{store / 'residents.parquet'}') AS r "
            f"JOIN read_parquet('{run / 'residents.parquet'}') AS x USING (resident_key) "
            "ORDER BY x.level, x.n_pathologies DESC, r.resident_id LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    if row is None:
        raise SystemExit(f"{run} has no residents")
    return str(row[0])


def analyst_commands(store: Path, engine_run: Path, data: Path, size: int) -> dict[str, Measurement]:
    cli_run = data / f"cli-run-{size}"
    stratify = run_command("stratify", str(store), "--out", str(cli_run), "--replace")
    explain = run_command("explain", str(cli_run), most_complex_resident(store, cli_run))
    diff = run_command("diff", str(engine_run), str(cli_run))
    return {"presa stratify": stratify, "presa explain": explain, "presa diff": diff}


def median_of(runs: list[Measurement]) -> Measurement:
    """Median of the step's own elapsed time (reported by the child); the highest peak memory seen."""
    ordered = sorted(runs, key=lambda m: m.result["elapsed"])
    middle = ordered[len(ordered) // 2]
    return Measurement(middle.result["elapsed"], max(m.peak_bytes for m in runs), middle.result)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    memory = psutil.virtual_memory().total / 2**30
    return f"{psutil.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated population sizes")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per step (median reported)")
    parser.add_argument("--data", type=Path, default=Path("bench/data"), help="where populations are kept")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    console.print(f"machine: {machine()}; commit {commit()}; reference date {REFERENCE_DATE}")
    table = Table(title="Stratification engine vs floor (median of runs, warm cache)")
    for column in (
        "residents",
        "records",
        "floor s",
        "engine s",
        "engine/floor",
        "bound s",
        "bound/floor",
        "records/s",
        "floor peak",
        "engine peak",
    ):
        table.add_column(column, justify="right")
    commands = Table(title="What an analyst waits for: each command's whole process, one run")
    for column in ("residents", "command", "wall s", "peak"):
        commands.add_column(column, justify="right")
    for size in sizes:
        store, timings = prepare(size, args.data)
        if timings:
            console.print(f"{size:,} residents prepared: {json.dumps({k: round(v, 2) for k, v in timings.items()})}")
        records = records_in(store)
        run_floor(store)  # warm the page cache
        floor = median_of([run_floor(store) for _ in range(args.repeat)])
        engine = median_of([run_engine(store, args.data / f"run-{size}") for _ in range(args.repeat)])
        bound = median_of([run_lower_bound(store, args.data / f"bound-{size}") for _ in range(args.repeat)])
        console.print(f"{size:,}: engine stages {json.dumps(engine.result['seconds'])}")
        console.print(f"{size:,}: levels {json.dumps(engine.result['levels'])}")
        table.add_row(
            f"{size:,}",
            f"{records:,}",
            f"{floor.seconds:.2f}",
            f"{engine.seconds:.2f}",
            f"{engine.seconds / floor.seconds:.2f}x",
            f"{bound.seconds:.2f}",
            f"{bound.seconds / floor.seconds:.2f}x",
            f"{records / engine.seconds:,.0f}",
            f"{floor.peak_gb:.2f} GB",
            f"{engine.peak_gb:.2f} GB",
        )
        for name, step in analyst_commands(store, args.data / f"run-{size}", args.data, size).items():
            commands.add_row(f"{size:,}", name, f"{step.seconds:.2f}", f"{step.peak_gb:.2f} GB")
    console.print(table)
    console.print(commands)


if __name__ == "__main__":
    main()
