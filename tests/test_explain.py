"""Explaining a resident: the fired criteria of each pathology and, record by record, the flow rows behind them."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from presa.stratify.catalog import Leaf, load_catalog
from presa.stratify.compile import window_start
from presa.stratify.engine import stratify_flows
from presa.stratify.explain import (
    UnknownResidentError,
    describe_rule,
    explain_resident,
    matching_records,
    render_explanation,
)
from presa.stratify.runview import RunError, open_run
from presa.stratify.summary import read_run_info, run_catalog
from tests.storebuilder import StoreBuilder
from tests.test_summary import REF, RunBuilder, make_catalog

FIRST_DAY_12 = window_start(REF, 12)  # 2025-01-01
FIRST_DAY_24 = window_start(REF, 24)  # 2024-01-01


def leaf(tmp_path: Path, leaf_id: str) -> Leaf:
    return next(x for x in make_catalog(tmp_path / "leafcat").leaves() if x.id == leaf_id)


def test_drug_records_inside_the_window_under_the_prefixes(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("anna", ["hypertension"])
    run.store.drug("anna", FIRST_DAY_12 - timedelta(days=1), "C09AA05")  # line 2: the day before the window
    run.store.drug("anna", FIRST_DAY_12, "C09AA05", ddd=30.0)  # line 3: first day inside
    run.store.drug("anna", date(2025, 6, 1), "C08CA01")  # line 4: another class
    run.store.drug("anna", REF, "C07AB07")  # line 5: last day inside, second prefix
    run.store.drug("anna", REF + timedelta(days=1), "C09AA05")  # line 6: after the reference date
    run.fired("anna", "hypertension.drug2", 2, FIRST_DAY_12, REF, ddd=58.0)
    explanation = explain_resident(run.write(tmp_path / "run"), "anna")

    assert (explanation.level, explanation.level_name_it) == (3, "Cronicità in fase iniziale")
    assert explanation.pathologies == ("hypertension",) and explanation.main_pathology == "hypertension"
    hypertension = explanation.pathology("hypertension")
    assert (hypertension.status, hypertension.is_main, hypertension.name_it) == (
        "assigned",
        True,
        "Ipertensione arteriosa",
    )
    [criterion] = hypertension.criteria
    assert (criterion.window_start, criterion.window_end, criterion.n_records) == (FIRST_DAY_12, REF, 2)
    assert [(r.source_file, r.source_line, r.record_date, r.code) for r in criterion.records] == [
        ("prescriptions.csv", 3, FIRST_DAY_12, "C09AA05"),
        ("prescriptions.csv", 5, REF, "C07AB07"),
    ]
    assert criterion.records[0].ddd == 30.0 and criterion.records[0].matched_columns == ("atc",)


def test_discharge_positions_follow_the_rule(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("bruno", ["heart_failure", "diabetes"], sex="M")
    run.store.discharge("bruno", date(2024, 3, 1), "4280", admission_date=date(2024, 2, 20))  # line 2
    run.store.discharge("bruno", date(2025, 3, 1), "4019", dx_2="4281", dx_3="25000")  # line 3: 428 secondary
    run.store.discharge("bruno", date(2025, 7, 1), "4289")  # line 4
    run.store.discharge("bruno", date(2023, 1, 1), "25002")  # line 5: diabetes rule has a 36-month window
    run.store.discharge("bruno", date(2022, 12, 31), "25002")  # line 6: one day before it
    run.fired("bruno", "heart_failure.discharge1", 2, date(2024, 3, 1), date(2025, 7, 1))
    run.fired("bruno", "diabetes.discharge2", 2, date(2023, 1, 1), date(2025, 3, 1))
    explanation = explain_resident(run.write(tmp_path / "run"), "bruno")

    [heart] = explanation.pathology("heart_failure").criteria
    assert [(r.source_line, r.matched_columns) for r in heart.records] == [(2, ("dx_main",)), (4, ("dx_main",))]
    assert heart.records[0].admission_date == date(2024, 2, 20)
    assert heart.window_start == FIRST_DAY_24
    [diabetes] = explanation.pathology("diabetes").criteria
    assert diabetes.window_start == date(2023, 1, 1)
    assert [(r.source_line, r.code, r.matched_columns) for r in diabetes.records] == [
        (3, "25000", ("dx_3",)),
        (5, "25002", ("dx_main",)),
    ]
    assert [p.pathology_id for p in explanation.evidence] == ["heart_failure", "diabetes"], "main pathology first"


def test_exemptions_count_when_their_validity_overlaps_the_window(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("carla", ["hypertension"])
    run.store.exemption("carla", "0031", date(2010, 1, 1), FIRST_DAY_12 - timedelta(days=1))  # line 2: ended
    run.store.exemption("carla", "0031", date(2010, 1, 1), FIRST_DAY_12)  # line 3: ends on the first day
    run.store.exemption("carla", "0031", date(2024, 6, 1))  # line 4: open-ended
    run.store.exemption("carla", "0031", REF + timedelta(days=1))  # line 5: starts after the reference date
    run.store.exemption("carla", "0A31", date(2024, 6, 1))  # line 6: another code
    run.fired("carla", "hypertension.exemption1", 2, date(2010, 1, 1), REF)
    [criterion] = explain_resident(run.write(tmp_path / "run"), "carla").pathology("hypertension").criteria
    assert [(r.source_line, r.end_date) for r in criterion.records] == [(3, FIRST_DAY_12), (4, None)]


def test_an_excluded_pathology_says_by_which(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("dario", ["dialysis"], sex="M")
    run.store.discharge("dario", date(2025, 2, 1), "5856")
    for day in (3, 5, 7):
        run.store.service("dario", date(2025, 4, day), "39.95.1")
    run.fired("dario", "dialysis.outpatient1", 3, date(2025, 4, 3), date(2025, 4, 7))
    run.fired("dario", "ckd.discharge1", 1, date(2025, 2, 1), date(2025, 2, 1), assigned=False)
    explanation = explain_resident(run.write(tmp_path / "run"), "dario")
    ckd = explanation.pathology("ckd")
    assert (ckd.status, ckd.excluded_by) == ("excluded", ("dialysis",))
    assert [r.code for r in ckd.criteria[0].records] == ["5856"]
    dialysis = explanation.pathology("dialysis")
    assert dialysis.status == "assigned" and len(dialysis.criteria[0].records) == 3
    assert [p.pathology_id for p in explanation.evidence] == ["dialysis", "ckd"]


def test_a_criterion_that_fired_without_its_pathology_holding(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("elena", [], age=40, uses_services=True)  # copd's drug branch wants age 45 or more
    for month in (2, 5, 8):
        run.store.drug("elena", date(2025, month, 1), "R03AK06")
    run.fired("elena", "copd.drug1", 3, date(2025, 2, 1), date(2025, 8, 1), assigned=False)
    explanation = explain_resident(run.write(tmp_path / "run"), "elena")
    copd = explanation.pathology("copd")
    assert (copd.status, copd.excluded_by) == ("not_met", ())
    assert len(copd.criteria[0].records) == 3
    assert explanation.level == 4 and explanation.pathologies == ()


def test_an_unknown_resident_is_a_clear_error(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("anna", ["hypertension"])
    run_dir = run.write(tmp_path / "run")
    with pytest.raises(UnknownResidentError, match="resident 'nobody' is not in the population of run"):
        explain_resident(run_dir, "nobody")


def test_a_catalog_edited_since_the_run_is_refused(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("anna", ["hypertension"])
    run_dir = run.write(tmp_path / "run")
    area = tmp_path / "catalog" / "area.yaml"
    area.write_text(area.read_text(encoding="utf-8").replace("C07AB", "C07AA"), encoding="utf-8")
    with pytest.raises(RunError, match="has changed since run"):
        explain_resident(run_dir, "anna")


def test_matching_records_is_a_pure_filter(tmp_path: Path) -> None:
    rule = leaf(tmp_path, "hypertension.drug2")
    rows = [
        {"source_file": "f.csv", "source_line": 9, "dispensing_date": date(2025, 5, 5), "atc": "C09DA01", "ddd": 1.0},
        {"source_file": "f.csv", "source_line": 10, "dispensing_date": date(2025, 5, 5), "atc": "C10AA01", "ddd": 1.0},
    ]
    found = matching_records(rows, rule, date(2025, 1, 1), REF)
    assert [r.source_line for r in found] == [9]
    assert matching_records(rows, rule, date(2025, 6, 1), REF) == ()


def test_rules_described_in_italian(tmp_path: Path) -> None:
    assert describe_rule(leaf(tmp_path, "hypertension.drug2")) == (
        "almeno 2 prescrizioni di farmaci ATC C09*, C07AB* negli ultimi 12 mesi"
    )
    assert describe_rule(leaf(tmp_path, "heart_failure.discharge1")) == (
        "almeno 2 ricoveri con diagnosi principale ICD-9-CM 428* negli ultimi 24 mesi"
    )
    assert describe_rule(leaf(tmp_path, "diabetes.drug1")) == "almeno 100 DDD di farmaci ATC A10B* negli ultimi 12 mesi"


def test_rendering_shows_level_status_and_sources(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("dario", ["dialysis"], sex="M")
    run.store.discharge("dario", date(2025, 2, 1), "5856")
    for day in (3, 5, 7):
        run.store.service("dario", date(2025, 4, day), "39.95.1")
    run.fired("dario", "dialysis.outpatient1", 3, date(2025, 4, 3), date(2025, 4, 7))
    run.fired("dario", "ckd.discharge1", 1, date(2025, 2, 1), date(2025, 2, 1), assigned=False)
    console = Console(record=True, width=140)
    render_explanation(explain_resident(run.write(tmp_path / "run"), "dario"), console)
    text = console.export_text()
    assert "Residente dario" in text and "Livello 3 · Cronicità in fase iniziale" in text
    assert "esclusa da Dialisi" in text and "assegnata · principale" in text
    assert "outpatient.csv" in text and "07/04/2025" in text and "in dx_main" in text
    assert "finestra 01/01/2024 – 31/12/2025" in text


def test_every_record_the_engine_counted_is_shown(tmp_path: Path) -> None:
    """On a run made by the engine, explain finds exactly the records behind each count and date of the evidence."""
    catalog = make_catalog(tmp_path / "catalog")
    rng = random.Random(11)
    store = StoreBuilder()
    for n in range(120):
        rid = f"r{n}"
        store.resident(rid, sex=rng.choice("MF"), birth_date=date(rng.randint(1935, 2005), rng.randint(1, 12), 10))
        for _ in range(rng.randint(0, 6)):
            day = REF - timedelta(days=rng.randint(-20, 500))
            store.drug(
                rid, day, rng.choice(["C09AA05", "C07AB07", "A10BA02", "R03AK06"]), ddd=float(rng.randint(20, 60))
            )
        for _ in range(rng.randint(0, 2)):
            dx = rng.choice(["4280", "25000", "5856", "4019"])
            store.discharge(
                rid, REF - timedelta(days=rng.randint(0, 1200)), dx, dx_2=rng.choice([None, "4281", "25001"])
            )
        if rng.random() < 0.3:
            start = REF - timedelta(days=rng.randint(0, 3000))
            store.exemption(rid, rng.choice(["0031", "057"]), start, rng.choice([None, start + timedelta(days=400)]))
        for _ in range(rng.choice([0, 0, 3])):
            store.service(rid, REF - timedelta(days=rng.randint(0, 300)), "39.95.1")
    run_dir = tmp_path / "run"
    flows = store.write(run_dir / "flows")
    stratify_flows(flows.root, run_dir, catalog, REF)

    con = open_run(run_dir)
    evidence = con.execute(
        "SELECT resident_id, criterion_id, n_records, ddd, first_date, last_date FROM evidence"
    ).fetchall()
    carried = dict(con.execute("SELECT resident_id, pathologies FROM residents").fetchall())
    con.close()
    assert len(evidence) > 50, "the random store must exercise the criteria"
    explained = {rid: explain_resident(run_dir, rid) for rid in {row[0] for row in evidence}}
    for rid, criterion_id, n_records, ddd, first, last in evidence:
        pathology_id = criterion_id.split(".")[0]
        [criterion] = [c for c in explained[rid].pathology(pathology_id).criteria if c.criterion_id == criterion_id]
        records = criterion.records
        assert len(records) == n_records, (rid, criterion_id)
        assert min(r.record_date for r in records) == first, (rid, criterion_id)
        if criterion.source == "exemptions":
            assert max(r.end_date or criterion.window_end for r in records) == last
        else:
            assert max(r.record_date for r in records) == last, (rid, criterion_id)
        if ddd is not None:
            assert sum(r.ddd or 0.0 for r in records) == pytest.approx(ddd)
    for rid, explanation in explained.items():
        assigned = [p.pathology_id for p in explanation.evidence if p.status == "assigned"]
        assert assigned == list(carried[rid] or []), rid


def test_the_run_catalog_is_the_one_of_run_json(tmp_path: Path) -> None:
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("anna", ["hypertension"])
    info = read_run_info(run.write(tmp_path / "run"))
    assert run_catalog(info).digest == load_catalog(tmp_path / "catalog").digest
    assert info.reference_date == REF and info.flows.root == tmp_path / "run" / "flows"
