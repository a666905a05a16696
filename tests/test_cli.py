"""The real `presa` command, run as a subprocess: help, one-line errors, and a whole run on a small population."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

PRESA = [sys.executable, "-m", "presa.cli"]
COMMANDS = ("synth", "validate", "stratify", "explain", "diff", "accuracy", "catalog", "demo")

# Thresholds for the whole-run test, justified in docs/CATALOG.md ("Accuracy on the synthetic population"):
# every true pathology leaves a trace the catalog can see, so overall sensitivity is high; what is missed are
# patients whose only trace falls outside a window or under a threshold (therapy gaps, one-off prescriptions),
# as in real data. Specificity stays near 1 because non-cases of a pathology rarely carry its codes.
MIN_OVERALL_SENSITIVITY = 0.85
MIN_OVERALL_SPECIFICITY = 0.995
MIN_OVERALL_PPV = 0.85


def presa(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PRESA, *map(str, args)], capture_output=True, text=True, check=False, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"presa {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cli")
    presa("synth", "--residents", "20000", "--seed", "3", "--out", root / "flows")
    presa("stratify", root / "flows", "--out", root / "run", "--reference-date", "2025-12-31")
    yield root


def test_every_command_has_help() -> None:
    top = presa("--help").stdout
    for command in COMMANDS:
        assert command in top
        assert "Usage" in presa(command, "--help").stdout


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("stratify", "/no/such/flows", "--out", "/tmp/presa-never"), "flows directory /no/such/flows does not exist"),
        (("catalog", "--catalog", "/no/such/catalog"), "catalog.yaml not found"),
        (("catalog", "--sql", "--dialect", "oracle"), "--dialect: 'oracle' is not one of duckdb, spark"),
        (("explain", "/no/such/run", "R1"), "is not a stratification run"),
        (("synth", "--out", "/tmp/presa-never", "--format", "xml"), "--format: 'xml' is not one of parquet, csv"),
    ],
)
def test_errors_are_one_line_with_a_reason_and_non_zero_exit(args: tuple[str, ...], reason: str) -> None:
    result = presa(*args, check=False)
    assert result.returncode != 0
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_catalog_is_refused_naming_entry_and_field(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shipped = Path(__file__).resolve().parent.parent / "presa" / "stratify" / "catalog" / "catalog.yaml"
    (catalog / "catalog.yaml").write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    (catalog / "bad.yaml").write_text(
        "- id: broken\n  name_it: x\n  name_en: x\n  macro_area: cardiovascular\n  priority: 1\n"
        "  criteria: {drug: {atc: [C09], min_prescriptions: 0}}\n  source: a source of ten chars\n"
        "  confidence: inferred\n",
        encoding="utf-8",
    )
    result = presa("catalog", "--catalog", catalog, check=False)
    assert result.returncode == 1
    assert "bad.yaml, entry 'broken', field 'criteria.drug.min_prescriptions'" in result.stderr


def test_stratify_reconciles_counts_and_writes_every_output(population: Path) -> None:
    run = population / "run"
    info = json.loads((run / "run.json").read_text())
    for table, counts in info["load"].items():
        assert counts["read"] == counts["accepted"] + counts["rejected"], table
        assert counts["rejected"] > 0, f"the synthetic {table} carry malformed rows that must be rejected"
    for name in ("residents", "evidence", "clusters", "criteria", "pathologies"):
        assert (run / f"{name}.parquet").is_file()
    for chart in ("report.html",):
        assert (run / "charts" / chart).stat().st_size > 10_000
    assert list((run / "charts").glob("*.png"))
    levels = duckdb.connect(str(run / "stratification.duckdb"), read_only=True).execute(
        "SELECT level, COUNT(*) FROM residents GROUP BY level ORDER BY level"
    )
    counts = dict(levels.fetchall())
    assert set(counts) == {1, 2, 3, 4, 5}
    chronic_share = (counts[1] + counts[2] + counts[3]) / sum(counts.values())
    assert 0.25 < chronic_share < 0.42, "about a third of residents are chronic"


def test_accuracy_against_the_ground_truth(population: Path) -> None:
    from presa.stratify.accuracy import measure_accuracy, overall

    total = overall(measure_accuracy(population / "run", population / "flows" / "truth.parquet"))
    assert total.sensitivity is not None and total.sensitivity >= MIN_OVERALL_SENSITIVITY
    assert total.specificity is not None and total.specificity >= MIN_OVERALL_SPECIFICITY
    assert total.ppv is not None and total.ppv >= MIN_OVERALL_PPV
    printed = presa("accuracy", population / "run", "--truth", population / "flows" / "truth.parquet").stdout
    assert "sensitivity" in printed and "hypertension" in printed


def test_explain_names_the_records_behind_a_level(population: Path) -> None:
    con = duckdb.connect(str(population / "run" / "stratification.duckdb"), read_only=True)
    row = con.execute("SELECT resident_id, main_pathology FROM residents WHERE level = 1 LIMIT 1").fetchone()
    assert row is not None
    printed = presa("explain", population / "run", row[0]).stdout
    assert row[0] in printed and row[1] in printed
    assert ".parquet" in printed or ".csv" in printed, "record by record, with the source file"


def test_diff_of_two_reference_dates(population: Path) -> None:
    earlier = population / "run-2025-06"
    presa("stratify", population / "run" / "flows", "--out", earlier, "--reference-date", "2025-06-30", "--no-charts")
    changed = population / "changed.parquet"
    printed = presa("diff", earlier, population / "run", "--changed", changed).stdout
    assert "→" in printed or "->" in printed
    n_changed = duckdb.execute(f"SELECT COUNT(*) FROM read_parquet('{changed}')").fetchone()
    assert n_changed is not None and n_changed[0] > 0
