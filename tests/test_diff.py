"""Comparing two runs: level transitions, pathologies gained and lost, the changed residents' file."""

from __future__ import annotations

import copy
import random
import shutil
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from rich.console import Console

from presa.stratify.diff import diff_runs, render_diff, same_store
from presa.stratify.engine import stratify_flows
from presa.stratify.runview import RunError
from presa.stratify.summary import read_run_info
from tests.storebuilder import StoreBuilder
from tests.test_summary import ENTRIES, REF, RunBuilder, make_catalog


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    catalog = make_catalog(tmp_path / "catalog")
    a = RunBuilder(catalog)
    a.resident("r1", ["hypertension"])
    a.resident("r2", ["hypertension", "diabetes"])
    a.resident("r3", [])
    a.resident("r4", ["copd"])
    a.resident("r5", [], uses_services=True)
    b = RunBuilder(catalog, reference=date(2026, 6, 30))
    b.resident("r1", ["hypertension"])
    b.resident("r2", ["hypertension"])
    b.resident("r3", ["diabetes"])
    b.resident("r4", ["copd", "heart_failure"])
    b.resident("r6", ["hypertension"])
    return a.write(tmp_path / "a"), b.write(tmp_path / "b")


def test_level_transitions_include_residents_of_one_run_only(tmp_path: Path) -> None:
    diff = diff_runs(*two_runs(tmp_path))
    assert {(t.level_a, t.level_b): t.residents for t in diff.transitions} == {
        (3, 3): 1,
        (2, 3): 1,
        (5, 3): 1,
        (3, 2): 1,
        (4, None): 1,
        (None, 3): 1,
    }
    assert (diff.in_both, diff.only_in_a, diff.only_in_b) == (4, 1, 1)
    assert (diff.level_changed, diff.pathologies_changed, diff.changed_residents) == (3, 3, 5)
    assert diff.transition(1, 1) == 0 and diff.levels == [1, 2, 3, 4, 5]
    assert diff.b.reference_date == date(2026, 6, 30) and diff.a.population == 5


def test_pathologies_gained_lost_entering_leaving(tmp_path: Path) -> None:
    diff = diff_runs(*two_runs(tmp_path))
    diabetes = diff.pathology("diabetes")
    assert (diabetes.residents_a, diabetes.residents_b, diabetes.gained, diabetes.lost) == (1, 1, 1, 1)
    hypertension = diff.pathology("hypertension")
    assert (hypertension.gained, hypertension.lost, hypertension.entering, hypertension.leaving) == (0, 0, 1, 0)
    assert (
        diff.pathology("heart_failure").gained == 1 and diff.pathology("heart_failure").name_it == "Scompenso cardiaco"
    )
    copd = diff.pathology("copd")
    assert (copd.residents_a, copd.residents_b, copd.gained, copd.lost) == (1, 1, 0, 0)
    assert diff.pathology("dialysis").residents_b == 0, "every pathology of the catalogs is listed"
    assert diff.pathologies[0].pathology_id == "diabetes", "the most changed first"


def test_changed_residents_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "changed.parquet"
    diff = diff_runs(*two_runs(tmp_path), changed_file=target)
    assert diff.changed_file == target
    rows = duckdb.execute(f"SELECT * FROM read_parquet('{target}') ORDER BY resident_id").fetchall()
    assert rows == [
        ("r2", 2, 3, [], ["diabetes"]),
        ("r3", 5, 3, ["diabetes"], []),
        ("r4", 3, 2, ["heart_failure"], []),
        ("r5", 4, None, [], []),
        ("r6", None, 3, ["hypertension"], []),
    ]
    columns = [c[0] for c in duckdb.execute(f"DESCRIBE SELECT * FROM read_parquet('{target}')").fetchall()]
    assert columns == ["resident_id", "level_a", "level_b", "gained", "lost"]


def test_a_run_compared_with_itself_has_no_change(tmp_path: Path) -> None:
    run_a, _ = two_runs(tmp_path)
    diff = diff_runs(run_a, run_a, changed_file=tmp_path / "none.parquet")
    assert (diff.level_changed, diff.pathologies_changed, diff.changed_residents, diff.in_both) == (0, 0, 0, 5)
    assert all(t.level_a == t.level_b for t in diff.transitions)
    assert duckdb.execute(f"SELECT COUNT(*) FROM read_parquet('{tmp_path / 'none.parquet'}')").fetchall() == [(0,)]


def test_not_a_run_is_a_clear_error(tmp_path: Path) -> None:
    run_a, _ = two_runs(tmp_path)
    with pytest.raises(RunError, match="is not a stratification run"):
        diff_runs(run_a, tmp_path / "missing")


def random_store(seed: int, residents: int) -> StoreBuilder:
    rng = random.Random(seed)
    store = StoreBuilder()
    for n in range(residents):
        rid = f"r{n}"
        death = rng.choice([None] * 9 + [date(2026, 3, 1)])
        store.resident(rid, birth_date=date(rng.randint(1935, 2024), 5, 5), death_date=death)
        for _ in range(rng.randint(0, 5)):
            store.drug(rid, REF - timedelta(days=rng.randint(-180, 500)), rng.choice(["C09AA05", "A10BA02", "R03AK06"]))
        if rng.random() < 0.3:
            store.discharge(rid, REF - timedelta(days=rng.randint(-180, 900)), rng.choice(["4280", "25000", "5853"]))
    return store


def test_two_reference_dates_on_one_store_add_up(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog")
    flows = random_store(5, 200).write(tmp_path / "flows")
    runs = []
    for name, reference in (("a", REF), ("b", date(2026, 6, 30))):
        (tmp_path / name).mkdir()
        stratify_flows(flows.root, tmp_path / name, catalog, reference)
        runs.append(tmp_path / name)
    diff = diff_runs(runs[0], runs[1], changed_file=tmp_path / "changed.parquet")
    assert diff.only_in_a > 0, "deaths in 2026 leave the population"
    assert sum(t.residents for t in diff.transitions) == diff.in_both + diff.only_in_a + diff.only_in_b
    assert sum(t.residents for t in diff.transitions if t.level_a is not None) == diff.a.population
    for p in diff.pathologies:
        assert p.residents_b - p.residents_a == p.gained - p.lost + p.entering - p.leaving, p.pathology_id
    changed = duckdb.execute(f"SELECT COUNT(*) FROM read_parquet('{tmp_path / 'changed.parquet'}')").fetchall()
    assert changed == [(diff.changed_residents,)] and diff.changed_residents > 0


def test_runs_on_one_store_join_by_key_as_runs_on_copies_join_by_id(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog")
    flows = random_store(7, 300).write(tmp_path / "flows")
    copy_of_flows = shutil.copytree(flows.root, tmp_path / "flows_copy")
    for name, store, reference in (
        ("a", flows.root, REF),
        ("b", flows.root, date(2026, 6, 30)),
        ("b_copy", copy_of_flows, date(2026, 6, 30)),
    ):
        (tmp_path / name).mkdir()
        stratify_flows(store, tmp_path / name, catalog, reference)
    assert same_store(read_run_info(tmp_path / "a"), read_run_info(tmp_path / "b"))
    assert not same_store(read_run_info(tmp_path / "a"), read_run_info(tmp_path / "b_copy"))
    by_key = diff_runs(tmp_path / "a", tmp_path / "b", changed_file=tmp_path / "by_key.parquet")
    by_id = diff_runs(tmp_path / "a", tmp_path / "b_copy", changed_file=tmp_path / "by_id.parquet")
    assert by_key.changed_residents > 0 and by_key.only_in_a > 0
    assert replace(by_key, b=by_id.b, changed_file=by_id.changed_file) == by_id
    files = [
        duckdb.execute(f"SELECT * FROM read_parquet('{tmp_path / f}')").fetchall()
        for f in ("by_key.parquet", "by_id.parquet")
    ]
    assert files[0] == files[1] and len(files[0]) == by_key.changed_residents


def test_another_catalog_version_on_the_same_store(tmp_path: Path) -> None:
    looser = copy.deepcopy(ENTRIES)
    hypertension = next(e for e in looser if e["id"] == "hypertension")
    hypertension["criteria"]["any"][1]["drug"]["min_prescriptions"] = 1
    flows = random_store(9, 150).write(tmp_path / "flows")
    for name, entries in (("a", ENTRIES), ("b", looser)):
        (tmp_path / name).mkdir()
        stratify_flows(flows.root, tmp_path / name, make_catalog(tmp_path / f"catalog_{name}", entries), REF)
    diff = diff_runs(tmp_path / "a", tmp_path / "b")
    assert (diff.only_in_a, diff.only_in_b) == (0, 0)
    assert diff.pathology("hypertension").gained > 0 and diff.pathology("hypertension").lost == 0
    assert all(p.gained == p.lost == 0 for p in diff.pathologies if p.pathology_id != "hypertension")
    assert diff.a.catalog_digest != diff.b.catalog_digest
    assert sum(diff.transition(level, level - 1) for level in (3, 4, 5)) > 0, "a looser rule moves residents up"


def test_rendering_the_matrix_and_the_pathologies(tmp_path: Path) -> None:
    diff = diff_runs(*two_runs(tmp_path), changed_file=tmp_path / "changed.parquet")
    console = Console(record=True, width=160)
    render_diff(diff, console)
    text = console.export_text()
    assert "Liv. 2 Cronicità polipatologica" in text and "non in A" in text and "non in B" in text
    assert "Diabete mellito" in text and "+1" in text and "-1" in text
    assert "solo in A 1" in text and "changed.parquet" in text
