"""The summary of a run: figures computed by DuckDB from hand-written runs whose every count is known.

``RunBuilder`` writes a run directory as the engine does (presa/stratify/layout.py): residents.parquet,
evidence.parquet, run.json and the validated flows under flows/. test_charts, test_explain and test_diff use it too.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from presa.stratify.catalog import Catalog, load_catalog
from presa.stratify.compile import criteria_rows, pathology_rows
from presa.stratify.engine import PARAM_SCHEMAS, stratify_flows
from presa.stratify.layout import RunPaths
from presa.stratify.runview import RunError
from presa.stratify.summary import (
    age_band_order,
    compute_summary,
    it_date,
    it_decimal,
    it_int,
    it_percent,
    rank_gps,
    read_run_info,
    read_summary,
    run_catalog,
    write_summary,
)
from presa.stratify.terminal import ats_table, clusters_table, levels_table, pathologies_table, print_summary
from tests.storebuilder import HEADER, StoreBuilder, pathology, write_catalog

REF = date(2025, 12, 31)

ENTRIES = [
    pathology("dialysis", {"outpatient": {"codes": ["39.95"], "min_services": 3}}, 1, name_it="Dialisi"),
    pathology(
        "ckd", {"discharge": {"icd9": ["585"]}}, 5, name_it="Insufficienza renale cronica", excluded_by=["dialysis"]
    ),
    pathology(
        "heart_failure",
        {"discharge": {"icd9": ["428"], "position": "main", "min_discharges": 2}},
        10,
        name_it="Scompenso cardiaco",
    ),
    pathology(
        "copd",
        {
            "any": [
                {"all": [{"drug": {"atc": ["R03"], "min_prescriptions": 3}}, {"age": {"min": 45}}]},
                {"exemption": {"codes": ["057"]}},
            ]
        },
        15,
        name_it="BPCO",
    ),
    pathology(
        "diabetes",
        {"any": [{"drug": {"atc": ["A10B"], "min_ddd": 100}}, {"discharge": {"icd9": ["250"], "window_months": 36}}]},
        20,
        name_it="Diabete mellito",
    ),
    pathology(
        "hypertension",
        {"any": [{"exemption": {"codes": ["0031"]}}, {"drug": {"atc": ["C09", "C07AB"], "min_prescriptions": 2}}]},
        30,
        name_it="Ipertensione arteriosa",
    ),
]


def italian_header() -> dict[str, Any]:
    """The test header with the shipped catalog's levels, so that names read as an analyst sees them."""
    header = copy.deepcopy(HEADER)
    header["levels"] = [lv.model_dump(exclude_none=True) for lv in load_catalog().header.levels]
    return header


def make_catalog(directory: Path, entries: list[dict[str, Any]] | None = None) -> Catalog:
    return load_catalog(write_catalog(directory, entries or ENTRIES, italian_header()))


# The engine's integer facts (presa/stratify/layout.py); the runview joins them with the registry and the names.
RESIDENT_SCHEMA = pa.schema(
    [
        ("resident_key", pa.int64()),
        ("age", pa.int16()),
        ("n_pathologies", pa.int16()),
        ("cluster_no", pa.int32()),
        ("uses_services", pa.bool_()),
        ("level", pa.int16()),
    ]
)
EVIDENCE_SCHEMA = pa.schema(
    [
        ("resident_key", pa.int64()),
        ("criterion_no", pa.int32()),
        ("n_records", pa.int64()),
        ("ddd", pa.float64()),
        ("first_date", pa.date32()),
        ("last_date", pa.date32()),
        ("assigned", pa.bool_()),
    ]
)
CLUSTER_SCHEMA = pa.schema(
    [
        ("cluster_no", pa.int32()),
        ("set_lo", pa.int64()),
        ("set_hi", pa.int64()),
        ("n_pathologies", pa.int32()),
        ("pathologies", pa.list_(pa.string())),
        ("main_pathology", pa.string()),
        ("cluster", pa.string()),
    ]
)


@dataclass
class RunBuilder:
    """Residents with the pathologies a test gives them, their fired criteria and their flow records.

    Level, main pathology and cluster follow the catalog as the engine derives them, so a test states only the
    pathologies. Records go to ``store`` (tests.storebuilder) and end up in RUN/flows; criteria.parquet and
    pathologies.parquet are the engine's own parameter rows for the catalog.
    """

    catalog: Catalog
    reference: date = REF
    store: StoreBuilder = field(default_factory=StoreBuilder)
    residents: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def resident(
        self,
        resident_id: str,
        pathologies: tuple[str, ...] | list[str] = (),
        *,
        age: int = 70,
        sex: str = "F",
        ats: str = "321",
        gp_id: str = "GP1",
        uses_services: bool | None = None,
    ) -> RunBuilder:
        born = date(self.reference.year - age, self.reference.month, min(self.reference.day, 28))
        self.store.resident(resident_id, birth_date=born, sex=sex, ats=ats, gp_id=gp_id)
        ordered = sorted(pathologies, key=lambda p: (self.catalog.pathology(p).priority, p))
        uses = bool(ordered) or bool(uses_services)
        self.residents.append(
            {
                "resident_key": len(self.residents) + 1,
                "resident_id": resident_id,
                "age": age,
                "pathologies": ordered,
                "uses_services": uses,
                "level": self.level_of(len(ordered), uses),
            }
        )
        return self

    def level_of(self, n_pathologies: int, uses_services: bool) -> int:
        for lv in self.catalog.header.levels:
            top = lv.max_pathologies if lv.max_pathologies is not None else n_pathologies
            if lv.min_pathologies <= n_pathologies <= top and lv.uses_services in (None, uses_services):
                return lv.level
        raise AssertionError(f"no level for {n_pathologies} pathologies")

    def fired(
        self,
        resident_id: str,
        criterion_id: str,
        n_records: int,
        first_date: date,
        last_date: date,
        *,
        assigned: bool = True,
        ddd: float | None = None,
    ) -> RunBuilder:
        number = next(
            c["criterion_no"] for c in criteria_rows(self.catalog, self.reference) if c["criterion_id"] == criterion_id
        )
        key = next(r["resident_key"] for r in self.residents if r["resident_id"] == resident_id)
        self.evidence.append(
            {
                "resident_key": key,
                "criterion_no": number,
                "n_records": n_records,
                "ddd": ddd,
                "first_date": first_date,
                "last_date": last_date,
                "assigned": assigned,
            }
        )
        return self

    def clusters(self) -> list[dict[str, Any]]:
        """One row per distinct set of pathologies, numbered in label order as the engine does."""
        bits = {row["pathology_id"]: row for row in pathology_rows(self.catalog)}
        labels = sorted({" + ".join(r["pathologies"]) for r in self.residents if r["pathologies"]})
        rows = []
        for number, label in enumerate(labels, start=1):
            members = label.split(" + ")
            rows.append(
                {
                    "cluster_no": number,
                    "set_lo": sum(bits[p]["bit_lo"] for p in members),
                    "set_hi": sum(bits[p]["bit_hi"] for p in members),
                    "n_pathologies": len(members),
                    "pathologies": members,
                    "main_pathology": members[0],
                    "cluster": label,
                }
            )
        return rows

    def write(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        paths = RunPaths(run_dir)
        self.store.write(paths.flows)
        clusters = self.clusters()
        number_of = {c["cluster"]: c["cluster_no"] for c in clusters}
        facts = [
            {
                "resident_key": r["resident_key"],
                "age": r["age"],
                "n_pathologies": len(r["pathologies"]),
                "cluster_no": number_of.get(" + ".join(r["pathologies"])),
                "uses_services": r["uses_services"],
                "level": r["level"],
            }
            for r in self.residents
        ]
        tables = {
            paths.residents: pa.Table.from_pylist(facts, schema=RESIDENT_SCHEMA),
            paths.evidence: pa.Table.from_pylist(self.evidence, schema=EVIDENCE_SCHEMA),
            paths.clusters: pa.Table.from_pylist(clusters, schema=CLUSTER_SCHEMA),
            paths.criteria: pa.Table.from_pylist(
                list(criteria_rows(self.catalog, self.reference)), schema=PARAM_SCHEMAS["criteria"]
            ),
            paths.pathologies: pa.Table.from_pylist(
                list(pathology_rows(self.catalog)), schema=PARAM_SCHEMAS["pathologies"]
            ),
        }
        for path, table in tables.items():
            pq.write_table(table, path)
        info = {
            "catalog": {
                "name": self.catalog.header.name,
                "version": self.catalog.version,
                "digest": self.catalog.digest,
                "directory": str(self.catalog.directory),
            },
            "reference_date": self.reference.isoformat(),
            "windows": self.catalog.header.default_windows_months.model_dump(),
            "flows": "flows",
            "population": len(self.residents),
            "seconds": {"engine": 0.1},
        }
        paths.run_json.write_text(json.dumps(info), encoding="utf-8")
        return run_dir


def small_run(tmp_path: Path) -> Path:
    """Ten residents over two ATS and three GPs, every figure countable by hand."""
    run = RunBuilder(make_catalog(tmp_path / "catalog"))
    run.resident("r1", ["hypertension"], age=70, sex="F", gp_id="GP1")
    run.resident("r2", ["hypertension", "diabetes"], age=80, sex="M", gp_id="GP1")
    run.resident("r3", ["diabetes", "hypertension", "copd", "heart_failure"], age=90, ats="322", gp_id="GP2")
    run.resident("r4", ["hypertension"], age=50, sex="M", ats="322", gp_id="GP2")
    run.resident("r5", [], age=30, uses_services=True, gp_id="GP1")
    run.resident("r6", [], age=10, sex="M", gp_id="GP3")
    run.resident("r7", [], age=40, ats="322", gp_id="GP2")
    run.resident("r8", ["copd"], age=66, sex="M", gp_id="GP3")
    run.resident("r9", ["diabetes", "hypertension"], age=72, gp_id="GP1")
    run.resident("r10", [], age=20, sex="M", gp_id="GP3")
    return run.write(tmp_path / "run")


def test_levels_with_italian_names_shares_and_sex(tmp_path: Path) -> None:
    summary = compute_summary(small_run(tmp_path), gp_min_list_size=1)
    assert summary.run.population == 10 and summary.run.chronic == 6
    assert summary.run.chronic_share == pytest.approx(0.6)
    assert [(lv.level, lv.residents, lv.males, lv.females) for lv in summary.levels] == [
        (1, 1, 0, 1),
        (2, 2, 1, 1),
        (3, 3, 2, 1),
        (4, 1, 0, 1),
        (5, 3, 2, 1),
    ]
    assert summary.level(1).name_it == "Fragilità clinica"
    assert summary.level(5).share == pytest.approx(0.3)
    assert summary.run.reference_date == REF and summary.run.catalog_version == "t1"


def test_pathologies_prevalence_count_and_main(tmp_path: Path) -> None:
    summary = compute_summary(small_run(tmp_path))
    hypertension = summary.pathology("hypertension")
    assert (hypertension.residents, hypertension.as_main) == (5, 2)
    assert hypertension.per_1000 == pytest.approx(500.0)
    assert hypertension.name_it == "Ipertensione arteriosa"
    diabetes = summary.pathology("diabetes")
    assert (diabetes.residents, diabetes.as_main) == (3, 2), "diabetes outranks hypertension as main pathology"
    assert summary.pathology("heart_failure").as_main == 1
    assert summary.pathology("dialysis").residents == 0, "pathologies nobody has are listed too"
    assert [p.pathology_id for p in summary.pathologies][:3] == ["hypertension", "diabetes", "copd"]


def test_ats_and_gp_figures(tmp_path: Path) -> None:
    summary = compute_summary(small_run(tmp_path), gp_min_list_size=1)
    milan = next(a for a in summary.ats if a.ats == "321")
    assert (milan.population, milan.chronic, milan.by_level) == (7, 4, {2: 2, 3: 2, 4: 1, 5: 2})
    assert milan.name_it == "Città Metropolitana di Milano"
    gp1 = next(gp for gp in summary.gps if gp.gp_id == "GP1")
    assert (gp1.list_size, gp1.chronic, gp1.ats) == (4, 3, "321")
    assert gp1.chronic_share == pytest.approx(0.75)
    assert gp1.by_level == {2: 2, 3: 1, 4: 1}
    assert [gp.gp_id for gp in summary.gps_top] == ["GP1", "GP2", "GP3"]
    assert [gp.gp_id for gp in summary.gps_bottom] == ["GP3", "GP2", "GP1"]


def test_small_gp_lists_are_left_out_of_the_ranking(tmp_path: Path) -> None:
    summary = compute_summary(small_run(tmp_path), gp_min_list_size=1)
    assert [gp.gp_id for gp in rank_gps(summary.gps, 4, 10, highest=True)] == ["GP1"]
    default = compute_summary(tmp_path / "run")
    assert default.gp_min_list_size == 100 and default.gps_top == [] and len(default.gps) == 3


def test_clusters_with_labels_shares_and_main(tmp_path: Path) -> None:
    summary = compute_summary(small_run(tmp_path))
    first, second = summary.clusters[:2]
    assert (first.cluster, first.residents, first.main_pathology) == ("diabetes + hypertension", 2, "diabetes")
    assert first.label_it == "Diabete mellito + Ipertensione arteriosa"
    assert first.share_of_chronic == pytest.approx(2 / 6) and first.per_1000 == pytest.approx(200.0)
    assert (second.cluster, second.residents, second.n_pathologies) == ("hypertension", 2, 1)
    four = next(c for c in summary.clusters if c.n_pathologies == 4)
    assert four.main_name_it == "Scompenso cardiaco"
    assert four.pathologies == ["heart_failure", "copd", "diabetes", "hypertension"]
    assert len(compute_summary(tmp_path / "run", top_clusters=2).clusters) == 2


def test_age_sex_and_multimorbidity(tmp_path: Path) -> None:
    summary = compute_summary(small_run(tmp_path))
    bands = [f.age_band for f in summary.multimorbidity]
    assert bands == ["0-14", "15-44", "45-64", "65-74", "75-84", "85+"]
    women_65 = next(f for f in summary.age_sex if (f.age_band, f.sex) == ("65-74", "F"))
    assert (women_65.population, women_65.chronic) == (2, 2)
    assert women_65.chronic_per_1000 == pytest.approx(1000.0)
    young = next(f for f in summary.age_sex if (f.age_band, f.sex) == ("15-44", "M"))
    assert (young.population, young.chronic) == (1, 0)
    band_65 = next(f for f in summary.multimorbidity if f.age_band == "65-74")
    assert (band_65.population, band_65.one, band_65.two) == (3, 2, 1)
    assert band_65.multimorbid_share == pytest.approx(1 / 3)
    oldest = summary.multimorbidity[-1]
    assert (oldest.four_or_more, oldest.multimorbid_share) == (1, 1.0)
    assert sum(f.population for f in summary.age_sex) == summary.run.population


def test_summary_json_round_trip(tmp_path: Path) -> None:
    run_dir = small_run(tmp_path)
    written = write_summary(run_dir, gp_min_list_size=1)
    stored = json.loads(RunPaths(run_dir).summary_json.read_text(encoding="utf-8"))
    assert stored["run"]["reference_date"] == "2025-12-31"
    assert stored["levels"][0]["name_it"] == "Fragilità clinica"
    assert read_summary(run_dir) == written
    assert read_summary(RunPaths(run_dir).summary_json).ats[0].by_level == {2: 2, 3: 2, 4: 1, 5: 2}


def test_an_empty_population_has_zero_shares(tmp_path: Path) -> None:
    run_dir = RunBuilder(make_catalog(tmp_path / "catalog")).write(tmp_path / "run")
    summary = compute_summary(run_dir)
    assert summary.run.population == 0 and summary.run.chronic_share == 0.0
    assert [lv.residents for lv in summary.levels] == [0, 0, 0, 0, 0]
    assert summary.clusters == [] and summary.pathology("ckd").per_1000 == 0.0


def test_not_a_run_and_a_changed_catalog_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="is not a stratification run"):
        compute_summary(tmp_path)
    run_dir = small_run(tmp_path)
    (tmp_path / "catalog" / "area.yaml").write_text(
        (tmp_path / "catalog" / "area.yaml").read_text(encoding="utf-8").replace("BPCO", "Broncopneumopatia"),
        encoding="utf-8",
    )
    info = read_run_info(run_dir)
    with pytest.raises(RunError, match="has changed since run"):
        run_catalog(info)
    assert compute_summary(run_dir).pathology("copd").name_it == "BPCO", "names are those the run recorded"


def test_a_run_whose_catalog_is_gone_still_has_a_summary(tmp_path: Path) -> None:
    run_dir = small_run(tmp_path)
    shutil.rmtree(tmp_path / "catalog")
    summary = compute_summary(run_dir)
    assert [lv.name_it for lv in summary.levels] == [f"Livello {n}" for n in range(1, 6)]
    assert summary.pathology("hypertension").name_it == "Ipertensione arteriosa"


def test_summary_of_a_run_made_by_the_engine(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog")
    store = StoreBuilder()
    store.resident("a", sex="M").exemption("a", "0031", date(2020, 1, 1)).discharge("a", date(2025, 3, 1), "25000")
    store.resident("b").exemption("b", "0031", date(2020, 1, 1))
    store.resident("c", birth_date=date(2015, 1, 1)).er("c", date(2025, 6, 1))
    store.resident("d", ats="325", gp_id="GP9")
    flows = store.write(tmp_path / "flows")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stratify_flows(flows.root, run_dir, catalog, REF)
    summary = compute_summary(run_dir, gp_min_list_size=1)
    assert [lv.residents for lv in summary.levels] == [0, 1, 1, 1, 1]
    assert summary.pathology("hypertension").residents == 2 and summary.pathology("diabetes").as_main == 1
    assert summary.clusters[0].label_it == "Diabete mellito + Ipertensione arteriosa"
    assert {a.ats: a.population for a in summary.ats} == {"321": 3, "325": 1}
    assert [f.age_band for f in summary.multimorbidity] == ["0-14", "75-84"]


def test_italian_formatting() -> None:
    assert it_int(1234567) == "1.234.567" and it_int(12) == "12"
    assert it_decimal(1234.56) == "1.234,6" and it_decimal(0.5, 2) == "0,50"
    assert it_percent(0.1234) == "12,3%"
    assert it_date(date(2025, 1, 2)) == "02/01/2025"
    assert sorted(["85+", "15-44", "0-14", "5-9"], key=age_band_order) == ["0-14", "5-9", "15-44", "85+"]


def test_terminal_tables_in_italian(tmp_path: Path) -> None:
    summary = compute_summary(small_run(tmp_path), gp_min_list_size=1)
    console = Console(record=True, width=150)
    print_summary(summary, console, top=3)
    text = console.export_text()
    assert "Stratificazione al 31/12/2025" in text and "popolazione 10" in text and "cronici 6 (60,0%)" in text
    assert "Fragilità clinica" in text and "ATS 322 Insubria" in text
    assert "Diabete mellito + Ipertensione arteriosa" in text and "33,3%" in text
    levels = levels_table(summary)
    assert levels.row_count == 5 and [c.header for c in levels.columns][2] == "Residenti"
    assert pathologies_table(summary, top=2).row_count == 2
    assert clusters_table(summary, top=3).row_count == 3 and ats_table(summary).row_count == 2
