"""Where a stratification run keeps its files. Every reader and writer of a run goes through RunPaths.

A run directory holds:

- ``flows/``: the validated flows written by ``presa.flows.load`` (``<table>.parquet``, ``rejects.parquet``,
  ``codes.parquet``, ``manifest.json``); see presa/flows/layout.py;
- ``residents.parquet``: one row per resident of the population at the reference date, integer facts only:
  resident_key, age, n_pathologies, cluster_no, uses_services, level;
- ``evidence.parquet``: one row per (resident of the population, criterion) whose threshold was met:
  resident_key, criterion_no, n_records, ddd, first_date, last_date (whether the criterion's pathology was
  assigned - its tree held and no other pathology excluded it - is the resident's cluster's to say: the view
  ``run_evidence`` of runview.py adds it);
- ``clusters.parquet`` (cluster_no, set_lo, set_hi, n_pathologies, pathologies main first, main_pathology,
  cluster label), ``criteria.parquet`` and ``pathologies.parquet``: the small tables that name the facts;
- ``run.json``: catalog name, version and digest, reference date, windows, figures and timings;
- ``stratification.duckdb``: the views of presa/stratify/runview.py over those files, for analysts' queries.

Read a run through ``runview.open_run``: its views ``residents`` and ``evidence`` join the facts with the
registry (resident_id, sex, birth date, ATS, GP, municipality) and the names, so no reader rebuilds those joins.
- ``charts/``: PNG and HTML charts; ``summary.json``: the summary figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def flows(self) -> Path:
        return self.root / "flows"

    @property
    def residents(self) -> Path:
        return self.root / "residents.parquet"

    @property
    def evidence(self) -> Path:
        return self.root / "evidence.parquet"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters.parquet"

    @property
    def criteria(self) -> Path:
        return self.root / "criteria.parquet"

    @property
    def pathologies(self) -> Path:
        return self.root / "pathologies.parquet"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def duckdb(self) -> Path:
        return self.root / "stratification.duckdb"

    @property
    def charts(self) -> Path:
        return self.root / "charts"

    def exists(self) -> bool:
        return self.run_json.is_file() and self.residents.is_file()
