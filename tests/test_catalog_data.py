"""The shipped catalog as data: complete, sourced, written in real codes, consistent with the synthetic generator,
and right on hand-made patients run through the real engine."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from presa.stratify.catalog import (
    DEFAULT_CATALOG_DIR,
    AllNode,
    AnyNode,
    Catalog,
    DischargeRule,
    DrugRule,
    ExemptionRule,
    Node,
    NotNode,
    OutpatientRule,
    Pathology,
    load_catalog,
    record_rule_of,
)
from presa.stratify.engine import stratify_flows
from presa.stratify.runview import open_run
from tests.storebuilder import StoreBuilder

ROOT = Path(__file__).resolve().parent.parent
CODES_DIR = ROOT / "presa" / "codes" / "data"
PROFILES = ROOT / "presa" / "synth" / "data" / "profiles.yaml"
FLOWS_YAML = ROOT / "presa" / "flows" / "data" / "flows.yaml"
REF = date(2025, 12, 31)

# An ATC prefix is a whole level of the code: A, A10, A10B, A10BA or A10BA02.
ATC_LEVEL = re.compile(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")
# An exemption prefix: R + part of a rare-disease code, or a chronic condition code (DM 329/1999, DPCM 2017)
# optionally followed by "." and the start of the ICD-9-CM code the certificate carries.
EXEMPTION = re.compile(r"^(?:R[A-Z0-9]{0,5}|(?P<condition>[0-9A-C][0-9A-Z][0-9]{1,2})(?:\.(?P<icd9>[0-9V][0-9.]*)?)?)$")
# Outpatient codes the DPCM 2017 list in presa/codes lacks, each with the catalogue code whose text cites it.
OUTPATIENT_OUTSIDE_LIST = {"99.25": "34.92"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def profiles() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load(PROFILES.read_text(encoding="utf-8"))["pathologies"]
    return data


def read_codes(name: str) -> dict[str, str]:
    with (CODES_DIR / name).open(encoding="utf-8", newline="") as f:
        return {row["code"]: row["description_it"] for row in csv.DictReader(f)}


def positive_rules(node: Node, negated: bool = False) -> Iterator[Any]:
    """The record rules whose presence makes the pathology more likely (not those under a `not`)."""
    rule = record_rule_of(node)
    if rule is not None:
        if not negated:
            yield rule
        return
    if isinstance(node, NotNode):
        yield from positive_rules(node.not_, not negated)
    elif isinstance(node, AllNode | AnyNode):
        for child in node.all if isinstance(node, AllNode) else node.any:
            yield from positive_rules(child, negated)


def prefixes(p: Pathology) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"atc": [], "exemption": [], "icd9": [], "outpatient": []}
    for rule in positive_rules(p.criteria):
        if isinstance(rule, DrugRule):
            out["atc"] += rule.atc
        elif isinstance(rule, ExemptionRule):
            out["exemption"] += rule.codes
        elif isinstance(rule, DischargeRule):
            out["icd9"] += rule.icd9
        elif isinstance(rule, OutpatientRule):
            out["outpatient"] += rule.codes
    return out


def all_leaf_codes(catalog: Catalog, kind: type) -> list[tuple[str, str]]:
    attrs: dict[type, str] = {DrugRule: "atc", DischargeRule: "icd9", ExemptionRule: "codes", OutpatientRule: "codes"}
    attr = attrs[kind]
    return [
        (leaf.pathology_id, code)
        for leaf in catalog.leaves()
        if isinstance(leaf.rule, kind)
        for code in getattr(leaf.rule, attr)
    ]


# --------------------------------------------------------------------------------------------------- completeness


def test_the_shipped_catalog_loads_with_about_65_pathologies(catalog: Catalog) -> None:
    assert 60 <= len(catalog.pathologies) <= 70
    assert len({p.id for p in catalog.pathologies}) == len(catalog.pathologies)


def test_it_holds_the_same_pathologies_as_the_synthetic_generator(
    catalog: Catalog, profiles: dict[str, dict[str, Any]]
) -> None:
    assert {p.id for p in catalog.pathologies} == set(profiles)


def test_every_macro_area_is_used_and_each_file_holds_its_own_area(catalog: Catalog) -> None:
    areas = {a.id for a in catalog.header.macro_areas}
    assert len(areas) == 15
    assert {p.macro_area for p in catalog.pathologies} == areas
    files = {f.stem for f in DEFAULT_CATALOG_DIR.glob("*.yaml")} - {"catalog"}
    assert files == areas
    for area in areas:
        entries = yaml.safe_load((DEFAULT_CATALOG_DIR / f"{area}.yaml").read_text(encoding="utf-8"))
        assert {e["macro_area"] for e in entries} == {area}, area


def test_priorities_are_distinct_so_the_main_pathology_is_never_a_tie(catalog: Catalog) -> None:
    priorities = [p.priority for p in catalog.pathologies]
    assert len(set(priorities)) == len(priorities)
    rank = {p.id: p.priority for p in catalog.pathologies}
    # The most demanding conditions lead their cluster (Corrao et al. 2023 name dialysis, heart failure, active
    # cancer, dementias among the strongest predictors); the common risk-factor conditions come last.
    for demanding, common in [
        ("dialysis", "chronic_kidney_disease"),
        ("active_cancer", "cancer_follow_up"),
        ("heart_failure", "hypertension"),
        ("alzheimer", "depression"),
        ("diabetes_type2", "hypertension"),
        ("copd", "asthma"),
        ("hypertension", "dyslipidaemia"),
    ]:
        assert rank[demanding] < rank[common], (demanding, common)


def test_every_entry_cites_a_public_source_and_states_its_confidence(catalog: Catalog) -> None:
    named_sources = ("ICD-9-CM", "ATC", "DPCM", "DM 279/2001", "DM 329/1999")
    for p in catalog.pathologies:
        assert any(s in p.source for s in named_sources), p.id
        assert p.name_it.strip() and p.name_en.strip(), p.id
        if p.confidence == "partly_verified":
            assert "http" in p.source, f"{p.id}: what was verified must say where"
    assert {p.confidence for p in catalog.pathologies} <= {"partly_verified", "inferred"}, (
        "no entry is verified: the regional algorithm (DGR X/6164/2017 annex) was not readable"
    )


def test_exclusions_are_the_clinical_ones(catalog: Catalog) -> None:
    excluded_by = {p.id: set(p.excluded_by) for p in catalog.pathologies if p.excluded_by}
    assert excluded_by == {
        "chronic_kidney_disease": {"dialysis"},
        "kidney_transplant": {"dialysis"},
        "diabetes_type1": {"diabetes_type2"},
        "hyperthyroidism": {"hypothyroidism"},
        "dementia": {"alzheimer"},
        "cancer_follow_up": {"active_cancer"},
        "chronic_pancreatitis": {"cystic_fibrosis"},
    }


def test_docs_list_every_pathology_with_its_criteria_and_measured_accuracy(catalog: Catalog) -> None:
    doc = (ROOT / "docs" / "CATALOG.md").read_text(encoding="utf-8")
    for p in catalog.pathologies:
        rows = [line for line in doc.splitlines() if line.startswith(f"| {p.id} |")]
        described = [r for r in rows if f"| {p.name_it} | {p.macro_area} | {p.priority} |" in r]
        measured = [r for r in rows if re.search(r"\| [01]\.[0-9]{4} \|", r)]
        assert len(described) == 1 and described[0].endswith(f"| {p.confidence} |"), p.id
        assert len(measured) == 1, p.id


# ---------------------------------------------------------------------------------------------------- real codes


def test_every_icd9_prefix_begins_a_code_of_the_italian_icd9cm_2007(catalog: Catalog) -> None:
    codes = [c.replace(".", "") for c in read_codes("icd9cm_diagnoses_it.csv")]
    assert len(codes) > 16_000
    leaves = all_leaf_codes(catalog, DischargeRule)
    assert len(leaves) > 150
    unknown = [(pid, prefix) for pid, prefix in leaves if not any(c.startswith(prefix) for c in codes)]
    assert unknown == []


def test_every_outpatient_prefix_begins_a_code_of_the_dpcm_2017_nomenclator(catalog: Catalog) -> None:
    catalogue = read_codes("outpatient_catalog_dpcm2017.csv")
    leaves = all_leaf_codes(catalog, OutpatientRule)
    assert {prefix for _, prefix in leaves} >= {"39.95", "54.98", "92.2"}
    for pid, prefix in leaves:
        if prefix in OUTPATIENT_OUTSIDE_LIST:
            citing = OUTPATIENT_OUTSIDE_LIST[prefix]
            assert prefix in catalogue[citing], f"{citing} should cite {prefix}"
            continue
        assert any(code.startswith(prefix) for code in catalogue), (pid, prefix)


def test_every_atc_prefix_is_a_whole_atc_level(catalog: Catalog) -> None:
    leaves = all_leaf_codes(catalog, DrugRule)
    assert len(leaves) > 100
    malformed = [(pid, atc) for pid, atc in leaves if not ATC_LEVEL.match(atc)]
    assert malformed == []


def test_every_exemption_prefix_is_a_condition_code_with_a_real_icd9_part(catalog: Catalog) -> None:
    icd9 = [c.replace(".", "") for c in read_codes("icd9cm_diagnoses_it.csv")]
    flow_pattern = re.compile(yaml.safe_load(FLOWS_YAML.read_text())["tables"]["exemptions"]["columns"][1]["pattern"])
    for pid, prefix in all_leaf_codes(catalog, ExemptionRule):
        match = EXEMPTION.match(prefix)
        assert match, (pid, prefix)
        if match["condition"]:
            assert flow_pattern.match(match["condition"]), (pid, prefix)
        if match["icd9"]:
            part = match["icd9"].replace(".", "")
            assert any(code.startswith(part) for code in icd9), (pid, prefix)


def test_no_three_character_exemption_prefix_swallows_a_longer_condition_code(catalog: Catalog) -> None:
    """003 (haemolytic anaemia) is also the beginning of 0031 (hypertension with organ damage)."""
    conditions = {m["condition"] for _, c in all_leaf_codes(catalog, ExemptionRule) if (m := EXEMPTION.match(c))}
    conditions.discard(None)
    for pid, prefix in all_leaf_codes(catalog, ExemptionRule):
        longer = [c for c in conditions if c != prefix and c.startswith(prefix)]
        assert longer == [], f"{pid}: {prefix} also matches {longer}; end it with a dot"


# --------------------------------------------------------------------------------- consistency with the generator

# Codes the generator writes for one pathology that the catalog does not find for it, or finds for another one,
# each on purpose. Any other overlap is a catalog bug (a prefix too wide) and fails the test below.
EXPECTED_OVERLAPS: dict[tuple[str, str], set[str]] = {
    # (pathology the code is generated for, code) -> pathologies whose positive rules match it besides its own
    ("diabetes_type2", "A10AE04"): {"diabetes_type1"},  # insulin add-on; type 1 is excluded by type 2
    ("diabetes_type1", "013.250"): {"diabetes_type2"},  # the exemption does not tell the type; type 2 needs no insulin
    ("dialysis", "023.585"): {"chronic_kidney_disease"},  # excluded by dialysis
    ("dialysis", "5856"): {"chronic_kidney_disease"},  # excluded by dialysis
    # Immunosuppressants and the exemption 052.V42 are the same for every organ: the follow-up tells the organ.
    **{
        (organ, code): {"kidney_transplant", "liver_transplant", "other_organ_transplant"} - {organ}
        for organ, codes in (
            ("kidney_transplant", ("L04AD02", "L04AD01", "L04AA06", "052.V42")),
            ("liver_transplant", ("L04AD02", "L04AA06", "052.V42")),
            ("other_organ_transplant", ("L04AD02", "L04AD01", "L04AA06", "052.V42")),
        )
        for code in codes
    },
    # Rare-disease codes of named pathologies begin with R; rare_disease leaves them out with a `not`.
    ("motor_neuron_disease", "RF0100"): {"rare_disease"},
    ("coagulation_defects", "RDG020"): {"rare_disease"},
}
# Generated codes the pathology's own criteria do not use: the reason is in the entry's note or comments.
NOT_FOUND_BY_OWN = {
    ("diabetes_type2", "A10AE04"),  # insulin add-on: type 2 is found by its oral agents
    ("diabetes_type1", "013.250"),  # type 1 is found by insulin
    ("dialysis", "023.585"),  # the exemption does not tell dialysis from CKD
}


def generated_codes(profile: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, code) of every identifying record the generator writes for a pathology (visits and labs excluded)."""
    yield from (("atc", d[0]) for d in profile.get("drugs", []))
    yield from (("exemption", c) for c in profile.get("exemption", {}).get("codes", []))
    yield from (("icd9", c) for c in profile.get("admissions", {}).get("dx", []))
    yield from (("icd9", c) for c in profile.get("secondary_dx", []))
    for programme in ("sessions", "chemo", "radiotherapy"):
        yield from (("outpatient", c[0]) for c in profile.get(programme, {}).get("codes", []))


def test_what_the_generator_writes_is_found_by_its_own_pathology_and_no_other(
    catalog: Catalog, profiles: dict[str, dict[str, Any]]
) -> None:
    by_pathology = {p.id: prefixes(p) for p in catalog.pathologies}
    overlaps: dict[tuple[str, str], set[str]] = {}
    not_found: set[tuple[str, str]] = set()
    checked = 0
    for pid, profile in profiles.items():
        for kind, code in generated_codes(profile):
            checked += 1
            owners = {q for q, pre in by_pathology.items() if any(code.startswith(x) for x in pre[kind])}
            if pid not in owners:
                not_found.add((pid, code))
            if owners - {pid}:
                overlaps[(pid, code)] = owners - {pid}
    assert checked > 300
    assert not_found == NOT_FOUND_BY_OWN
    assert overlaps == EXPECTED_OVERLAPS


def test_one_off_prescriptions_of_the_generators_noise_stay_under_every_threshold(catalog: Catalog) -> None:
    """presa/synth/data/acute.yaml dispenses one ACE inhibitor or one ICS/LABA inhaler to non-chronic adults."""
    acute = yaml.safe_load((ROOT / "presa" / "synth" / "data" / "acute.yaml").read_text(encoding="utf-8"))
    one_off = [d[0] for d in acute["prescriptions"]["one_off_drugs"]]
    everyday = [d[0] for d in acute["prescriptions"]["drugs"]]
    for leaf in catalog.leaves():
        if not isinstance(leaf.rule, DrugRule):
            continue
        assert not any(a.startswith(x) for a in everyday for x in leaf.rule.atc), leaf.id
        if any(a.startswith(x) for a in one_off for x in leaf.rule.atc):
            assert leaf.rule.min_ddd is None and (leaf.rule.min_prescriptions or 1) >= 2, leaf.id


# ------------------------------------------------------------------------------ hand-made patients, real engine


def monthly(store: StoreBuilder, rid: str, atc: str, times: int, *, last: date = REF, ddd: float = 28.0) -> None:
    for k in range(times):
        store.drug(rid, last - timedelta(days=30 * k + 5), atc, ddd=ddd)


def sessions(store: StoreBuilder, rid: str, code: str, first: date, last: date) -> None:
    day = first
    while day <= last:
        store.service(rid, day, code)
        day += timedelta(days=2)


OLD = {"birth_date": date(1945, 3, 1)}
YOUNG = {"birth_date": date(1995, 3, 1)}


def vignettes() -> StoreBuilder:
    s = StoreBuilder()
    s.resident("one_ace", **OLD).drug("one_ace", date(2025, 5, 2), "C09AA05", ddd=56.0)
    s.resident("two_ace", **OLD)
    monthly(s, "two_ace", "C09AA05", 2, ddd=56.0)
    s.resident("t2_oral_and_insulin", **OLD)
    monthly(s, "t2_oral_and_insulin", "A10BA02", 6)
    monthly(s, "t2_oral_and_insulin", "A10AE04", 6)
    s.resident("t1_insulin", **YOUNG).exemption("t1_insulin", "013.250", date(2010, 1, 1))
    monthly(s, "t1_insulin", "A10AE04", 6)
    monthly(s, "t1_insulin", "A10AB05", 6)
    s.resident("t2_diet", **OLD).exemption("t2_diet", "013.250", date(2015, 1, 1))
    s.resident("dialysis", **OLD).exemption("dialysis", "023.585", date(2018, 1, 1))
    sessions(s, "dialysis", "39.95.4", date(2025, 1, 2), REF)
    s.resident("kidney_tx", **OLD).exemption("kidney_tx", "052.V42", date(2019, 1, 1))
    monthly(s, "kidney_tx", "L04AD02", 8)
    s.service("kidney_tx", date(2025, 3, 1), "89.01.B").service("kidney_tx", date(2025, 9, 1), "89.01.B")
    s.resident("heart_tx", **OLD).exemption("heart_tx", "052.V42", date(2019, 1, 1))
    monthly(s, "heart_tx", "L04AD02", 8)
    s.service("heart_tx", date(2025, 2, 1), "89.01.3").service("heart_tx", date(2025, 8, 1), "89.01.3")
    s.service("heart_tx", date(2025, 4, 1), "89.01.L")
    s.resident("graft_failed", **OLD).exemption("graft_failed", "052.V42", date(2015, 1, 1))
    s.discharge("graft_failed", date(2025, 2, 1), "99681")
    sessions(s, "graft_failed", "39.95.4", date(2025, 8, 1), REF)
    s.resident("transplanted_this_year", **OLD)
    sessions(s, "transplanted_this_year", "39.95.4", date(2025, 1, 2), date(2025, 5, 31))
    s.discharge("transplanted_this_year", date(2025, 6, 20), "V420")
    s.resident("htn_organ_damage", **OLD).exemption("htn_organ_damage", "0031.401", date(2012, 1, 1))
    s.resident("pulm_htn", **OLD).exemption("pulm_htn", "0A02.416", date(2016, 1, 1))
    s.resident("ihd", **OLD).exemption("ihd", "0A02.414", date(2016, 1, 1))
    s.resident("cancer_on_chemo", **OLD).exemption("cancer_on_chemo", "048.V10", date(2016, 1, 1))
    for day in (date(2025, 9, 1), date(2025, 9, 22), date(2025, 10, 13)):
        s.service("cancer_on_chemo", day, "99.25")
    s.resident("cancer_cured", **OLD).exemption("cancer_cured", "048.V10", date(2016, 1, 1))
    s.resident("alzheimer", **OLD).exemption("alzheimer", "029.331", date(2021, 1, 1))
    s.exemption("alzheimer", "011.290", date(2020, 1, 1))
    s.resident("ics_laba_old", **OLD)
    monthly(s, "ics_laba_old", "R03AK06", 4)
    s.resident("ics_laba_young", **YOUNG)
    monthly(s, "ics_laba_young", "R03AK06", 4)
    s.resident("tamsulosin_woman", sex="F", **OLD)
    monthly(s, "tamsulosin_woman", "G04CA02", 3)
    s.resident("tamsulosin_man", sex="M", **OLD)
    monthly(s, "tamsulosin_man", "G04CA02", 3)
    s.resident("als", **OLD).exemption("als", "RF0100", date(2023, 1, 1))
    s.resident("other_rare", **YOUNG).exemption("other_rare", "RCG040", date(2003, 1, 1))
    s.resident("denosumab", sex="F", **OLD).drug("denosumab", date(2025, 7, 1), "M05BX04", ddd=180.0)
    s.resident("nintedanib", **OLD)
    monthly(s, "nintedanib", "L01EX09", 6, ddd=30.0)
    s.resident("imatinib", **OLD)
    monthly(s, "imatinib", "L01EA01", 6, ddd=30.0)
    s.resident("graves_then_hypo", **OLD).exemption("graves_then_hypo", "032.242", date(2010, 1, 1))
    monthly(s, "graves_then_hypo", "H03AA01", 6)
    s.resident("frail", **OLD).exemption("frail", "021.428", date(2019, 1, 1))
    s.exemption("frail", "0A31.401", date(2010, 1, 1)).exemption("frail", "057.496", date(2017, 1, 1))
    s.discharge("frail", date(2025, 4, 10), "4280", dx_2="42731", dx_3="2720")
    return s


@pytest.fixture(scope="module")
def patients(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("vignettes")
    flows = vignettes().write(root / "flows")
    (root / "run").mkdir()
    stratify_flows(flows.root, root / "run", catalog, REF)
    con = open_run(root / "run")
    rows = con.execute("SELECT resident_id, pathologies, main_pathology, level FROM residents").fetchall()
    return {rid: {"pathologies": set(p or []), "main": main, "level": level} for rid, p, main, level in rows}


@pytest.mark.parametrize(
    ("resident", "expected"),
    [
        ("one_ace", set()),  # a first prescription never renewed
        ("two_ace", {"hypertension"}),
        ("t2_oral_and_insulin", {"diabetes_type2"}),  # not also type 1
        ("t1_insulin", {"diabetes_type1"}),
        ("t2_diet", {"diabetes_type2"}),  # exemption without insulin
        ("dialysis", {"dialysis"}),  # not also CKD
        ("kidney_tx", {"kidney_transplant"}),  # nephrology follow-up tells the organ
        ("heart_tx", {"other_organ_transplant"}),  # cardiology follow-up, no nephrology or hepatology
        ("graft_failed", {"dialysis"}),  # back on dialysis
        ("transplanted_this_year", {"kidney_transplant"}),  # dialysis stopped months ago
        ("htn_organ_damage", {"hypertension"}),  # 0031 is not 003 (haemolytic anaemia)
        ("pulm_htn", {"pulmonary_hypertension"}),  # 0A02.416 is not ischaemic
        ("ihd", {"ischaemic_heart_disease"}),
        ("cancer_on_chemo", {"active_cancer"}),  # not also follow-up
        ("cancer_cured", {"cancer_follow_up"}),
        ("alzheimer", {"alzheimer"}),  # not also dementia
        ("ics_laba_old", {"copd"}),
        ("ics_laba_young", {"asthma"}),
        ("tamsulosin_woman", set()),
        ("tamsulosin_man", {"benign_prostatic_hyperplasia"}),
        ("als", {"motor_neuron_disease"}),  # not also rare_disease
        ("other_rare", {"rare_disease"}),
        ("denosumab", {"osteoporosis"}),  # one dispensing is six months of therapy
        ("nintedanib", {"interstitial_lung_disease"}),  # not active cancer
        ("imatinib", {"active_cancer"}),
        ("graves_then_hypo", {"hypothyroidism"}),
        ("frail", {"heart_failure", "hypertension", "copd", "cardiac_arrhythmia", "dyslipidaemia"}),
    ],
)
def test_hand_made_patients_get_the_clinically_right_pathologies(
    patients: dict[str, dict[str, Any]], resident: str, expected: set[str]
) -> None:
    assert patients[resident]["pathologies"] == expected


def test_the_most_demanding_pathology_leads_and_the_count_sets_the_level(patients: dict[str, dict[str, Any]]) -> None:
    assert patients["frail"]["main"] == "heart_failure"
    assert patients["frail"]["level"] == 1
    assert patients["t2_oral_and_insulin"]["level"] == 3
    assert patients["one_ace"]["level"] == 4, "uses services, no chronic pathology"
