"""Where a validated flow store keeps its files. Every reader and writer goes through FlowPaths.

A validated store (``RUN/flows`` after ``presa stratify``, or any directory ``presa.flows.load`` wrote) holds:

- ``<table>.parquet`` for each table of flows.yaml: ``resident_key`` (BIGINT, the resident's row in
  residents.parquet; residents.parquet has it too), the table's columns typed (dates DATE, integers BIGINT,
  decimals DOUBLE, codes VARCHAR normalised: upper case, trimmed, ICD-9-CM without dots), then ``source_file``
  (file name) and ``source_line`` (line in a text file, header = line 1; row number from 1 in a Parquet file);
- ``rejects.parquet``: table_name, source_file, source_line, column_name, value, reason;
- ``codes.parquet``: table_name, column_name, code, n - the distinct codes of each code column among accepted rows;
- ``manifest.json``: schema version, per table its files and read / accepted / rejected counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FlowPaths:
    root: Path

    def table(self, name: str) -> Path:
        return self.root / f"{name}.parquet"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects.parquet"

    @property
    def codes(self) -> Path:
        return self.root / "codes.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def is_validated(self) -> bool:
        return self.manifest.is_file()
