"""Comparing two stratification runs file by file, whatever order their rows were written in (another engine,
shards merged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ROW_ORDERS = {
    "residents": ["resident_key"],
    "evidence": ["resident_key", "criterion_no"],
    "clusters": ["cluster_no"],
    "criteria": ["criterion_no"],
    "pathologies": ["pathology_no"],
}
"""Each run file (a ``RunPaths`` attribute) and the key that orders its rows."""


def rows(path: Path, order: list[str]) -> list[dict[str, Any]]:
    return pq.read_table(path).sort_by([(c, "ascending") for c in order]).to_pylist()
