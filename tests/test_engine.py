"""The stratification engine on hand-made residents: each criterion kind, window edges, thresholds,
combinations, exclusions and the level rule, run by real DuckDB over real Parquet files."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlglot import exp

from presa.stratify.catalog import Catalog, CatalogError, load_catalog
from presa.stratify.compile import (
    age_bounds,
    age_class,
    compile_catalog,
    holds,
    leaf_ids_by_rule,
    mask_words,
    to_dialect,
    window_start,
)
from presa.stratify.engine import stratify_flows
from presa.stratify.runview import open_run
from tests.storebuilder import StoreBuilder, pathology, write_catalog

REF = date(2025, 12, 31)

CATALOG = [
    pathology(
        "hypertension",
        {
            "any": [
                {"exemption": {"codes": ["0031"]}},
                {"drug": {"atc": ["C09", "C07AB"], "min_prescriptions": 2}},
            ]
        },
        30,
    ),
    pathology(
        "diabetes",
        {"any": [{"drug": {"atc": ["A10B"], "min_ddd": 100}}, {"discharge": {"icd9": ["250"]}}]},
        20,
    ),
    pathology("heart_failure", {"discharge": {"icd9": ["428"], "position": "main", "min_discharges": 2}}, 10),
    pathology("dialysis", {"outpatient": {"codes": ["39.95"], "min_services": 3}}, 1),
    pathology("ckd", {"discharge": {"icd9": ["585"]}}, 5, excluded_by=["dialysis"]),
    pathology(
        "copd",
        {
            "any": [
                {"all": [{"drug": {"atc": ["R03"], "min_prescriptions": 3}}, {"age": {"min": 45}}]},
                {"exemption": {"codes": ["057"]}},
            ]
        },
        15,
    ),
    pathology(
        "type1",
        {"all": [{"drug": {"atc": ["A10A"], "min_prescriptions": 2}}, {"not": {"drug": {"atc": ["A10B"]}}}]},
        25,
    ),
    pathology("osteoporosis", {"all": [{"drug": {"atc": ["M05BA"], "min_prescriptions": 2}}, {"sex": "F"}]}, 40),
]


def stratify(
    tmp_path: Path, store: StoreBuilder, entries: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    flows = store.write(tmp_path / "flows")
    catalog = load_catalog(write_catalog(tmp_path / "catalog", entries or CATALOG))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stratify_flows(flows.root, run_dir, catalog, REF)
    con = open_run(run_dir)
    rows = con.execute("SELECT * FROM residents").fetchall()
    names = [d[0] for d in con.description]  # type: ignore[union-attr]
    return {row[1]: dict(zip(names, row, strict=True)) for row in rows}


def evidence(tmp_path: Path) -> list[tuple[Any, ...]]:
    return (
        open_run(tmp_path / "run")
        .execute(
            "SELECT resident_id, pathology_id, criterion_id, n_records, first_date, last_date, assigned "
            "FROM evidence ORDER BY ALL"
        )
        .fetchall()
    )


def test_window_start_is_the_day_after_the_same_day_m_months_earlier() -> None:
    assert window_start(date(2025, 12, 31), 12) == date(2025, 1, 1)
    assert window_start(date(2025, 3, 31), 1) == date(2025, 3, 1)  # 28 Feb + 1 day
    assert window_start(date(2024, 3, 31), 1) == date(2024, 3, 1)  # leap year: 29 Feb + 1 day
    assert window_start(date(2025, 12, 31), 24) == date(2024, 1, 1)


def test_drug_threshold_and_window_edges(tmp_path: Path) -> None:
    first_day = window_start(REF, 12)
    store = StoreBuilder()
    store.resident("one_rx").drug("one_rx", date(2025, 5, 1), "C09AA05")
    store.resident("two_rx").drug("two_rx", first_day, "C09AA05").drug("two_rx", REF, "C07AB07")
    store.resident("early").drug("early", first_day - timedelta(days=1), "C09AA05").drug("early", REF, "C09AA05")
    store.resident("late").drug("late", date(2026, 1, 1), "C09AA05").drug("late", REF, "C09AA05")
    store.resident("other_class").drug("other_class", REF, "C07AA05").drug("other_class", REF, "C07AA05")
    result = stratify(tmp_path, store)
    assert result["one_rx"]["pathologies"] is None
    assert result["two_rx"]["pathologies"] == ["hypertension"]
    assert result["early"]["pathologies"] is None, "a prescription the day before the window must not count"
    assert result["late"]["pathologies"] is None, "a prescription after the reference date must not count"
    assert result["other_class"]["pathologies"] is None, "C07AA is outside the C07AB prefix"
    assert ("two_rx", "hypertension", "hypertension.drug2", 2, first_day, REF, True) in evidence(tmp_path)


def test_ddd_threshold(tmp_path: Path) -> None:
    store = StoreBuilder()
    store.resident("low").drug("low", date(2025, 3, 1), "A10BA02", ddd=60.0).drug(
        "low", date(2025, 6, 1), "A10BA02", ddd=39.5
    )
    store.resident("enough").drug("enough", date(2025, 3, 1), "A10BA02", ddd=60.0).drug(
        "enough", date(2025, 6, 1), "A10BA02", ddd=40.0
    )
    result = stratify(tmp_path, store)
    assert result["low"]["pathologies"] is None
    assert result["enough"]["pathologies"] == ["diabetes"]


def test_discharge_positions_counts_and_window(tmp_path: Path) -> None:
    store = StoreBuilder()
    store.resident("secondary").discharge("secondary", date(2024, 2, 1), "4019", dx_4="25000")
    store.resident("too_old").discharge("too_old", date(2023, 12, 31), "25000")
    # heart failure wants 2 discharges with 428 as main diagnosis
    store.resident("hf_once").discharge("hf_once", date(2025, 1, 10), "4280", dx_2="4281")
    store.resident("hf_secondary").discharge("hf_secondary", date(2025, 1, 10), "4280").discharge(
        "hf_secondary", date(2025, 5, 10), "4019", dx_2="4280"
    )
    store.resident("hf_twice").discharge("hf_twice", date(2024, 1, 1), "4280").discharge("hf_twice", REF, "4289")
    result = stratify(tmp_path, store)
    assert result["secondary"]["pathologies"] == ["diabetes"]
    assert result["too_old"]["pathologies"] is None
    assert result["hf_once"]["pathologies"] is None, "two matching positions of one discharge count once"
    assert result["hf_secondary"]["pathologies"] is None, "position: main ignores secondary diagnoses"
    assert result["hf_twice"]["pathologies"] == ["heart_failure"]


def test_exemption_validity_must_overlap_the_window(tmp_path: Path) -> None:
    store = StoreBuilder()
    store.resident("open").exemption("open", "0031", date(2010, 1, 1))
    store.resident("ended").exemption("ended", "0031", date(2010, 1, 1), date(2024, 12, 31))
    store.resident("ends_in_window").exemption("ends_in_window", "0031", date(2010, 1, 1), date(2025, 1, 1))
    store.resident("future").exemption("future", "0031", date(2026, 1, 1))
    result = stratify(tmp_path, store)
    assert result["open"]["pathologies"] == ["hypertension"]
    assert result["ended"]["pathologies"] is None
    assert result["ends_in_window"]["pathologies"] == ["hypertension"]
    assert result["future"]["pathologies"] is None


def test_outpatient_services_threshold(tmp_path: Path) -> None:
    store = StoreBuilder()
    store.resident("two").service("two", date(2025, 1, 2), "39.95.1").service("two", date(2025, 1, 4), "39.95.1")
    store.resident("three").service("three", date(2025, 1, 2), "39.95.1").service("three", date(2025, 1, 4), "39.95.2")
    store.service("three", date(2025, 1, 6), "39.95.1")
    result = stratify(tmp_path, store)
    assert result["two"]["pathologies"] is None
    assert result["three"]["pathologies"] == ["dialysis"]


def test_combinations_age_sex_and_not(tmp_path: Path) -> None:
    store = StoreBuilder()
    for rid, born in (
        ("young", date(1990, 1, 1)),
        ("old", date(1960, 1, 1)),
        ("turns45", date(1980, 12, 31)),
    ):
        store.resident(rid, birth_date=born)
        for month in (2, 5, 8):
            store.drug(rid, date(2025, month, 1), "R03AK06")
    store.resident("young_exempt", birth_date=date(1990, 1, 1)).exemption("young_exempt", "057", date(2020, 1, 1))
    store.resident("insulin_only").drug("insulin_only", date(2025, 1, 1), "A10AB01").drug(
        "insulin_only", date(2025, 2, 1), "A10AB01"
    )
    store.resident("insulin_and_oral").drug("insulin_and_oral", date(2025, 1, 1), "A10AB01")
    store.drug("insulin_and_oral", date(2025, 2, 1), "A10AB01").drug(
        "insulin_and_oral", date(2025, 3, 1), "A10BA02", ddd=10.0
    )
    for rid, sex in (("woman", "F"), ("man", "M")):
        store.resident(rid, sex=sex).drug(rid, date(2025, 1, 1), "M05BA04").drug(rid, date(2025, 7, 1), "M05BA04")
    result = stratify(tmp_path, store)
    assert result["young"]["pathologies"] is None
    assert result["old"]["pathologies"] == ["copd"]
    assert result["turns45"]["age"] == 45 and result["turns45"]["pathologies"] == ["copd"]
    assert result["young_exempt"]["pathologies"] == ["copd"]
    assert result["insulin_only"]["pathologies"] == ["type1"]
    assert result["insulin_and_oral"]["pathologies"] is None, "an oral antidiabetic rules out type 1"
    assert result["woman"]["pathologies"] == ["osteoporosis"]
    assert result["man"]["pathologies"] is None


def test_exclusion_keeps_the_evidence_but_not_the_pathology(tmp_path: Path) -> None:
    store = StoreBuilder()
    store.resident("dialysed").discharge("dialysed", date(2025, 3, 1), "5856")
    for day in (3, 5, 7):
        store.service("dialysed", date(2025, 4, day), "39.95.1")
    store.resident("ckd_only").discharge("ckd_only", date(2025, 3, 1), "5853")
    result = stratify(tmp_path, store)
    assert result["dialysed"]["pathologies"] == ["dialysis"]
    assert result["ckd_only"]["pathologies"] == ["ckd"]
    rows = {(r[0], r[1]): r[6] for r in evidence(tmp_path)}
    assert rows[("dialysed", "ckd")] is False and rows[("dialysed", "dialysis")] is True


def test_levels_main_pathology_cluster_and_population(tmp_path: Path) -> None:
    store = StoreBuilder()
    store.resident("four")
    store.exemption("four", "0031", date(2020, 1, 1)).exemption("four", "057", date(2020, 1, 1))
    store.discharge("four", date(2025, 1, 1), "25000", dx_2="5853")
    store.resident("two").exemption("two", "0031", date(2020, 1, 1)).discharge("two", date(2025, 1, 1), "25000")
    store.resident("one").exemption("one", "0031", date(2020, 1, 1))
    store.resident("user").er("user", date(2025, 6, 1))
    store.resident("old_user").er("old_user", date(2024, 6, 1))
    store.resident("nobody")
    store.resident("dead", death_date=date(2025, 6, 1)).exemption("dead", "0031", date(2020, 1, 1))
    store.resident("registered_later", registration_date=date(2026, 1, 1))
    result = stratify(tmp_path, store)
    assert {rid: r["level"] for rid, r in result.items()} == {
        "four": 1,
        "two": 2,
        "one": 3,
        "user": 4,
        "old_user": 5,
        "nobody": 5,
    }
    four = result["four"]
    assert four["n_pathologies"] == 4
    assert four["pathologies"] == ["ckd", "copd", "diabetes", "hypertension"], "ordered by priority, main first"
    assert four["main_pathology"] == "ckd"
    assert four["cluster"] == "ckd + copd + diabetes + hypertension"
    assert result["one"]["uses_services"] is True and result["nobody"]["uses_services"] is False
    with_evidence = {row[0] for row in evidence(tmp_path)}
    assert "one" in with_evidence and "dead" not in with_evidence, "no evidence for who is out of the population"


def test_sql_agrees_with_the_python_semantics_on_random_residents(tmp_path: Path) -> None:
    rng = random.Random(7)
    catalog_dir = write_catalog(tmp_path / "catalog", CATALOG)
    catalog = load_catalog(catalog_dir)
    codes = [
        ("C09AA05", "drug"),
        ("A10BA02", "drug"),
        ("A10AB01", "drug"),
        ("R03AK06", "drug"),
        ("M05BA04", "drug"),
    ]
    store = StoreBuilder()
    for n in range(300):
        rid = f"r{n}"
        store.resident(rid, sex=rng.choice("MF"), birth_date=date(rng.randint(1930, 2010), rng.randint(1, 12), 15))
        for _ in range(rng.randint(0, 6)):
            atc, _ = rng.choice(codes)
            store.drug(rid, REF - timedelta(days=rng.randint(0, 500)), atc, ddd=float(rng.randint(10, 60)))
        if rng.random() < 0.2:
            store.discharge(
                rid, REF - timedelta(days=rng.randint(0, 900)), rng.choice(["4280", "25000", "5853", "4019"])
            )
        if rng.random() < 0.1:
            store.exemption(rid, rng.choice(["0031", "057"]), date(2015, 1, 1))
        if rng.random() < 0.1:
            for _ in range(rng.randint(1, 4)):
                store.service(rid, REF - timedelta(days=rng.randint(0, 300)), "39.95.1")
    result = stratify(tmp_path, store)
    assert_python_semantics(tmp_path, catalog, result)


def assert_python_semantics(tmp_path: Path, catalog: Catalog, result: dict[str, dict[str, Any]]) -> None:
    """Each resident's pathologies are those whose trees hold in Python on the rules that fired, less exclusions."""
    fired: dict[str, set[str]] = {}
    for rid, _pid, criterion, *_ in evidence(tmp_path):
        fired.setdefault(rid, set()).add(criterion)
    leaf_ids = leaf_ids_by_rule(catalog)
    for rid, row in result.items():
        present = {
            p.id
            for p in catalog.pathologies
            if holds(p.criteria, fired.get(rid, set()), leaf_ids, row["age"], row["sex"])
        }
        expected = {p for p in present if not set(catalog.pathology(p).excluded_by) & present}
        assert set(row["pathologies"] or []) == expected, rid


def test_rules_past_the_first_mask_word_agree_with_the_python_semantics(tmp_path: Path) -> None:
    """151 rules: a resident's fired rules span three 62-bit words, and a tree may mix rules of two words."""
    atc = [f"C{n:02d}" for n in range(1, 76)]
    entries = [
        pathology(
            f"p{n:02d}",
            {"any": [{"drug": {"atc": [atc[n]], "min_prescriptions": 2}}, {"discharge": {"icd9": [f"{100 + n}"]}}]},
            n + 1,
        )
        for n in range(74)
    ]
    # Its rules are the 61st to 63rd: the first two in the first word, the third in the second.
    entries.insert(
        30,
        pathology(
            "mixed",
            {
                "all": [
                    {"drug": {"atc": [atc[0]]}},
                    {"not": {"discharge": {"icd9": ["173"]}}},
                    {"any": [{"age": {"min": 50}}, {"drug": {"atc": [atc[74]]}}]},
                ]
            },
            99,
        ),
    )
    rng = random.Random(11)
    store = StoreBuilder()
    for n in range(200):
        rid = f"r{n}"
        store.resident(rid, birth_date=date(rng.randint(1930, 2010), 6, 15))
        for _ in range(rng.randint(0, 8)):
            store.drug(rid, REF - timedelta(days=rng.randint(0, 300)), rng.choice(atc[:3] + atc[-3:]) + "AA01")
        if rng.random() < 0.5:
            store.discharge(rid, REF - timedelta(days=rng.randint(0, 300)), rng.choice(["100", "173", "172", "101"]))
    result = stratify(tmp_path, store, entries)
    catalog = load_catalog(tmp_path / "catalog")
    assert mask_words(catalog) == 3
    criteria = compile_catalog(catalog, REF).tables["criteria"]
    assert {c["mask_word"] for c in criteria if c["criterion_id"].startswith("mixed")} == {0, 1}
    assert any(r["pathologies"] and "mixed" in r["pathologies"] for r in result.values())
    assert any("p73" in (r["pathologies"] or []) for r in result.values()), "a pathology of the last word holds"
    assert_python_semantics(tmp_path, catalog, result)


def test_the_trees_answer_alike_for_every_age_of_an_age_class(tmp_path: Path) -> None:
    entries = [
        pathology("adult", {"all": [{"drug": {"atc": ["R03"]}}, {"age": {"min": 18, "max": 64}}]}, 1),
        pathology("senior", {"all": [{"drug": {"atc": ["R03"]}}, {"not": {"age": {"max": 74}}}]}, 2),
    ]
    catalog = load_catalog(write_catalog(tmp_path / "catalog", entries))
    assert age_bounds(catalog) == [18, 65, 75]
    sql = age_class(catalog, exp.column("age"))
    con = duckdb.connect()
    classes = dict(con.execute(f"SELECT age, {sql} FROM range(0, 121) AS t(age)").fetchall())
    leaf_ids = leaf_ids_by_rule(catalog)
    for fired in (set(), {leaf.id for leaf in catalog.leaves()}):
        for age, age_of_class in classes.items():
            for p in catalog.pathologies:
                assert holds(p.criteria, fired, leaf_ids, age, "F") == holds(
                    p.criteria, fired, leaf_ids, age_of_class, "F"
                ), (p.id, age, age_of_class)
    assert sorted(set(classes.values())) == [0, 18, 65, 75]


def test_a_run_written_with_assigned_in_its_evidence_file_reads_it_from_there(tmp_path: Path) -> None:
    """Runs written before the run view worked ``assigned`` out carry it in evidence.parquet."""
    store = StoreBuilder()
    store.resident("one").exemption("one", "0031", date(2020, 1, 1))
    stratify(tmp_path, store)
    run_evidence = tmp_path / "run" / "evidence.parquet"
    table = pq.read_table(run_evidence)
    assert "assigned" not in table.column_names
    pq.write_table(table.append_column("assigned", pa.array([False] * table.num_rows)), run_evidence)
    assert [row[6] for row in evidence(tmp_path)] == [False]


def test_a_catalog_that_holds_without_records_is_refused(tmp_path: Path) -> None:
    entries = [pathology("everyone_old", {"any": [{"age": {"min": 65}}, {"drug": {"atc": ["C09"]}}]}, 1)]
    catalog = load_catalog(write_catalog(tmp_path / "catalog", entries))
    with pytest.raises(CatalogError, match=r"everyone_old.*holds with no record"):
        compile_catalog(catalog, REF)


def test_the_shipped_catalog_compiles_and_transpiles_to_spark() -> None:
    program = compile_catalog(load_catalog(), REF)
    assert len(program.tables["criteria"]) >= len(program.tables["pathologies"])
    spark = program.sql("spark")
    assert "CREATE TEMPORARY VIEW stratified" in spark
    for _, select in program.stages:
        assert to_dialect(select, "spark")


@pytest.mark.parametrize("data_after_reference", [False, True])
def test_service_use_is_the_same_from_the_store_or_by_scanning(tmp_path: Path, data_after_reference: bool) -> None:
    """Past the store's last record the per-resident last service date answers; before it, a scan does."""
    store = StoreBuilder()
    store.resident("recent").er("recent", date(2025, 6, 1))
    store.resident("only_before_window").drug("only_before_window", date(2024, 12, 31), "J01CA04")
    store.resident("exempt_only").exemption("exempt_only", "0A31", date(1990, 1, 1), date(2000, 1, 1))
    store.resident("never")
    if data_after_reference:
        store.resident("later").service("later", date(2026, 2, 1), "89.7")
        store.service("only_before_window", date(2026, 3, 1), "89.7")
    result = stratify(tmp_path, store)
    levels = {rid: row["level"] for rid, row in result.items() if rid != "later"}
    assert levels == {"recent": 4, "only_before_window": 5, "exempt_only": 5, "never": 5}
