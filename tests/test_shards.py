"""A population stratified in shards by resident (a DuckDB run each) and merged is the whole run, file by file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from presa.stratify.catalog import load_catalog
from presa.stratify.engine import EngineError, Shard
from presa.stratify.layout import RunPaths
from presa.stratify.pipeline import run_stratification
from presa.stratify.shards import merge_shards
from presa.synth import SynthConfig, generate
from tests.runfiles import ROW_ORDERS, rows

SHARDS = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunPaths, RunPaths, list[Path]]:
    root = tmp_path_factory.mktemp("shards")
    generate(SynthConfig(residents=2000, seed=5), root / "raw")
    catalog = load_catalog()
    whole = run_stratification(root / "raw", root / "whole", catalog, None).run
    parts = [root / f"shard-{i}" for i in range(SHARDS)]
    for i, part in enumerate(parts):
        run_stratification(whole.flows, part, catalog, None, shard=Shard(i, SHARDS))
    merged = merge_shards(parts, root / "merged").run
    return whole, merged, parts


def test_the_merged_shards_are_the_whole_run(runs: tuple[RunPaths, RunPaths, list[Path]]) -> None:
    whole, merged, _ = runs
    for name, order in ROW_ORDERS.items():
        assert rows(getattr(merged, name), order) == rows(getattr(whole, name), order), name
    a, b = json.loads(whole.run_json.read_text()), json.loads(merged.run_json.read_text())
    for key in ("catalog", "reference_date", "population", "residents_by_level"):
        assert b[key] == a[key], key
    assert merged.duckdb.is_file()


def test_each_shard_holds_only_its_residents(runs: tuple[RunPaths, RunPaths, list[Path]]) -> None:
    _, _, parts = runs
    for i, part in enumerate(parts):
        keys = pq.read_table(RunPaths(part).residents, columns=["resident_key"]).column(0).to_pylist()
        assert keys
        assert all(key % SHARDS == i for key in keys)


def test_a_missing_shard_is_refused(runs: tuple[RunPaths, RunPaths, list[Path]], tmp_path: Path) -> None:
    _, _, parts = runs
    with pytest.raises(EngineError, match="shards 0/3 to 2/3"):
        merge_shards(parts[:2], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("text", ["3/3", "1", "a/2", "-1/2"])
def test_shard_must_be_i_of_n(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard.parse(text)
