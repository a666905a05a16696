"""How a run is read: one place that joins the engine's integer facts with the registry and the names.

Views created by :func:`create_run_views`:

- ``residents``: resident_key, resident_id, sex, birth_date, age, age_band, ats, gp_id, municipality,
  n_pathologies, pathologies (ids, main first), main_pathology, cluster, uses_services, level;
- ``evidence``: resident_key, resident_id, pathology_id, criterion_id, source, n_records, ddd, first_date,
  last_date, assigned;
- ``run_evidence``: the evidence file's integer facts with ``assigned`` (whether the criterion's pathology is in
  the resident's cluster: the engine writes what fired, the cluster says what was kept);
- ``clusters``, ``criteria``, ``pathologies``: the run's small tables;
- ``flow_<table>`` for each validated flow table, and ``rejects``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from presa.flows.layout import FlowPaths
from presa.stratify.compile import FLOW_TABLES
from presa.stratify.layout import RunPaths

AGE_BANDS = ("0-14", "15-44", "45-64", "65-74", "75-84", "85+")

RESIDENTS_VIEW = """
SELECT s.resident_key, r.resident_id, r.sex, r.birth_date, s.age,
       CASE WHEN s.age < 15 THEN '0-14' WHEN s.age < 45 THEN '15-44' WHEN s.age < 65 THEN '45-64'
            WHEN s.age < 75 THEN '65-74' WHEN s.age < 85 THEN '75-84' ELSE '85+' END AS age_band,
       r.ats, r.gp_id, r.municipality, s.n_pathologies, c.pathologies, c.main_pathology, c.cluster,
       s.uses_services, s.level
FROM run_residents AS s
JOIN flow_residents AS r ON r.resident_key = s.resident_key
LEFT JOIN clusters AS c ON c.cluster_no = s.cluster_no
"""

# Whether an evidence row's pathology was assigned: its bit in the set of the resident's cluster. (Runs written
# before the engine left this to the view carry ``assigned`` in the file; create_run_views reads it from there.)
ASSIGNED = """
SELECT e.*,
       COALESCE((c.set_lo & p.bit_lo) <> 0 OR (c.set_hi & p.bit_hi) <> 0, FALSE) AS assigned
FROM run_evidence_file AS e
JOIN run_criteria AS cr ON cr.criterion_no = e.criterion_no
JOIN pathologies AS p ON p.pathology_no = cr.pathology_no
LEFT JOIN run_residents AS s ON s.resident_key = e.resident_key
LEFT JOIN clusters AS c ON c.cluster_no = s.cluster_no
"""

EVIDENCE_VIEW = """
SELECT e.resident_key, r.resident_id, c.pathology_id, c.criterion_id, c.source, e.n_records, e.ddd,
       e.first_date, e.last_date, e.assigned
FROM run_evidence AS e
JOIN flow_residents AS r ON r.resident_key = e.resident_key
JOIN criteria AS c ON c.criterion_no = e.criterion_no
"""

CRITERIA_VIEW = """
SELECT c.criterion_no, c.criterion_id, p.pathology_id, c.source, c.min_count, c.min_ddd, c.main_only,
       c.window_start, c.window_end
FROM run_criteria AS c
JOIN pathologies AS p ON p.pathology_no = c.pathology_no
"""


class RunError(ValueError):
    """A directory that is not a readable stratification run."""


def run_info(run: RunPaths) -> dict[str, Any]:
    if not run.exists():
        raise RunError(f"{run.root} is not a stratification run (no run.json and residents.parquet)")
    info: dict[str, Any] = json.loads(run.run_json.read_text(encoding="utf-8"))
    return info


def flows_of(run: RunPaths) -> FlowPaths:
    """The validated flows a run was computed from: its own flows/ unless run.json points elsewhere."""
    location = Path(run_info(run).get("flows", "flows"))
    return FlowPaths(location if location.is_absolute() else run.root / location)


def create_run_views(con: duckdb.DuckDBPyConnection, run: RunPaths, *, absolute: bool = False) -> None:
    """Create the views of a run on ``con``; with ``absolute`` the paths survive opening the database elsewhere."""
    flows = flows_of(run)

    def parquet(path: Path) -> str:
        target = path.resolve() if absolute else path
        return "read_parquet('" + str(target).replace("'", "''") + "')"

    sources = {
        "run_residents": run.residents,
        "run_evidence_file": run.evidence,
        "run_criteria": run.criteria,
        "clusters": run.clusters,
        "pathologies": run.pathologies,
    }
    for table in FLOW_TABLES:
        sources[f"flow_{table}"] = flows.table(table)
    if flows.rejects.is_file():
        sources["rejects"] = flows.rejects
    for name, path in sources.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {parquet(path)}")
    with_assigned = "SELECT * FROM run_evidence_file" if "assigned" in pq.read_schema(run.evidence).names else ASSIGNED
    con.execute(f"CREATE OR REPLACE VIEW run_evidence AS {with_assigned}")
    con.execute(f"CREATE OR REPLACE VIEW criteria AS {CRITERIA_VIEW}")
    con.execute(f"CREATE OR REPLACE VIEW residents AS {RESIDENTS_VIEW}")
    con.execute(f"CREATE OR REPLACE VIEW evidence AS {EVIDENCE_VIEW}")


def open_run(run_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views."""
    run = RunPaths(run_dir)
    run_info(run)
    con = duckdb.connect()
    create_run_views(con, run)
    return con
