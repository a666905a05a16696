"""Merge the runs of the shards of one population (``presa stratify --shard i/n``) into the run of the whole.

Every stage is per resident except the cluster numbers, which number the clusters a run found: residents and
evidence are concatenated, the clusters are united by their set of pathologies and numbered again in the engine's
order (by label), and each shard's residents take their cluster's new number. The criteria and pathologies are the
same in every shard of one catalog. The merged run is written whole or not at all, like a run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from presa.stratify.engine import OUTPUT_ROW_GROUP, EngineError, Shard, write_query_database
from presa.stratify.layout import RunPaths
from presa.stratify.runview import flows_of, run_info
from presa.workdir import built_in_place_of

# The clusters of all shards, one row per set of pathologies, numbered as CLUSTERS numbers them (by label).
UNITED_CLUSTERS = """
SELECT CAST(DENSE_RANK() OVER (ORDER BY cluster) AS INTEGER) AS cluster_no, set_lo, set_hi, n_pathologies,
       pathologies, main_pathology, cluster
FROM (SELECT DISTINCT set_lo, set_hi, n_pathologies, pathologies, main_pathology, cluster FROM read_parquet({files}))
"""

# One shard's residents with their cluster's number in the united clusters.
SHARD_RESIDENTS = """
SELECT r.resident_key, r.age, r.n_pathologies, u.cluster_no, r.uses_services, r.level
FROM read_parquet({residents}) AS r
LEFT JOIN read_parquet({clusters}) AS c ON c.cluster_no = r.cluster_no
LEFT JOIN united AS u ON u.set_lo = c.set_lo AND u.set_hi = c.set_hi
"""


@dataclass(frozen=True)
class MergeReport:
    run: RunPaths
    shards: int
    population: int
    residents_by_level: dict[int, int]
    seconds: float


def check_shards(infos: list[dict[str, Any]], roots: list[Path]) -> int:
    """The runs are the shards 0..n-1 of one population, with one catalog and one reference date."""
    shards = []
    for info, root in zip(infos, roots, strict=True):
        if "shard" not in info:
            raise EngineError(f"{root} is not the run of a shard (stratify it with --shard i/n)")
        shards.append(Shard.parse(info["shard"]))
    count = shards[0].count
    if sorted(s.index for s in shards) != list(range(count)) or any(s.count != count for s in shards):
        found = ", ".join(str(s) for s in shards)
        raise EngineError(f"the runs must be the shards 0/{count} to {count - 1}/{count}, once each; found {found}")
    for key in ("reference_date", "catalog"):
        if any(info[key] != infos[0][key] for info in infos):
            raise EngineError(f"the shards differ in {key.replace('_', ' ')}: stratify them with the same ones")
    return count


def merge_shards(shard_dirs: list[Path], out: Path, *, replace: bool = False) -> MergeReport:
    """Write the run of the whole population from the runs of its shards."""
    started = time.perf_counter()
    runs = [RunPaths(d) for d in shard_dirs]
    infos = [run_info(run) for run in runs]
    count = check_shards(infos, shard_dirs)
    if out.exists() and not replace:
        raise FileExistsError(f"{out} already exists (use --replace to overwrite it)")
    with built_in_place_of(out) as work:
        write_merged_files(runs, RunPaths(work))
        RunPaths(work).flows.symlink_to(flows_of(runs[0]).root.resolve(), target_is_directory=True)
        levels = merged_levels(infos)
        write_merged_run_json(infos[0], levels, shard_dirs, RunPaths(work), time.perf_counter() - started)
    write_query_database(RunPaths(out))
    return MergeReport(RunPaths(out), count, sum(levels.values()), levels, time.perf_counter() - started)


def write_merged_files(runs: list[RunPaths], merged: RunPaths) -> None:
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        clusters = _file_list([run.clusters for run in runs])
        con.execute(f"CREATE TEMP TABLE united AS {UNITED_CLUSTERS.format(files=clusters)}")
        residents = " UNION ALL ".join(
            SHARD_RESIDENTS.format(residents=_file_list([run.residents]), clusters=_file_list([run.clusters]))
            for run in runs
        )
        _copy(con, residents, merged.residents)
        _copy(con, f"SELECT * FROM read_parquet({_file_list([run.evidence for run in runs])})", merged.evidence)
        _copy(con, "SELECT * FROM united", merged.clusters)
    finally:
        con.close()
    shutil.copyfile(runs[0].criteria, merged.criteria)
    shutil.copyfile(runs[0].pathologies, merged.pathologies)


def merged_levels(infos: list[dict[str, Any]]) -> dict[int, int]:
    levels: dict[int, int] = {}
    for info in infos:
        for level, n in info["residents_by_level"].items():
            levels[int(level)] = levels.get(int(level), 0) + int(n)
    return dict(sorted(levels.items()))


def write_merged_run_json(
    first: dict[str, Any], levels: dict[int, int], shard_dirs: list[Path], merged: RunPaths, seconds: float
) -> None:
    info = {key: value for key, value in first.items() if key not in ("shard", "seconds", "load")}
    info.update(
        flows="flows",
        population=sum(levels.values()),
        residents_by_level={str(k): v for k, v in levels.items()},
        shards=[str(d.resolve()) for d in shard_dirs],
        seconds={"merge": round(seconds, 3)},
    )
    merged.run_json.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _copy(con: duckdb.DuckDBPyConnection, select: str, target: Path) -> None:
    quoted = str(target).replace("'", "''")
    con.execute(f"COPY ({select}) TO '{quoted}' (FORMAT parquet, ROW_GROUP_SIZE {OUTPUT_ROW_GROUP})")


def _file_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
