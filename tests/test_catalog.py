"""The catalog model: what a well-formed catalog becomes; every malformed one refused naming file, entry, field."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from presa.stratify.catalog import (
    DEFAULT_CATALOG_DIR,
    CatalogError,
    DischargeRule,
    DrugRule,
    ExemptionRule,
    OutpatientRule,
    load_catalog,
)
from presa.stratify.compile import compile_catalog
from tests.storebuilder import HEADER as BASE_HEADER
from tests.storebuilder import pathology, write_catalog

HEADER: dict[str, Any] = dict(BASE_HEADER)
WINDOWS: dict[str, int] = dict(HEADER["default_windows_months"])

HTN = pathology("hypertension", {"drug": {"atc": ["C09"], "min_prescriptions": 2}}, 30)
CKD = pathology("ckd", {"discharge": {"icd9": ["585"]}}, 5, excluded_by=["dialysis"])
DIALYSIS = pathology("dialysis", {"outpatient": {"codes": ["39.95"], "min_services": 8}}, 1)


def refused(tmp_path: Path, entries: list[dict[str, Any]], header: dict[str, Any] | None = None) -> CatalogError:
    directory = write_catalog(tmp_path / "catalog", entries, header)
    with pytest.raises(CatalogError) as caught:
        load_catalog(directory)
    return caught.value


def with_criteria(criteria: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return [HTN, {**pathology("broken", criteria, 10), **extra}]


# --------------------------------------------------------------------------------------------- well-formed catalogs


def test_a_well_formed_catalog_loads_with_normalised_codes_and_resolved_windows(tmp_path: Path) -> None:
    entries = [
        pathology(
            "copd",
            {
                "any": [
                    {"exemption": {"codes": [" 057 "]}},
                    {"drug": {"atc": ["r03bb"], "min_prescriptions": 2, "window_months": 6}},
                    {"discharge": {"icd9": ["491.2", "496"], "position": "main"}},
                    {"outpatient": {"codes": ["89.37.1"], "min_services": 2, "id": "copd.spirometry"}},
                ]
            },
            20,
        )
    ]
    catalog = load_catalog(write_catalog(tmp_path / "catalog", entries))
    leaves = list(catalog.leaves())
    assert [leaf.id for leaf in leaves] == ["copd.exemption1", "copd.drug2", "copd.discharge3", "copd.spirometry"]
    assert [leaf.source for leaf in leaves] == ["exemptions", "prescriptions", "discharges", "outpatient"]
    # Explicit windows win; the others come from the header's defaults (exemption 12, discharge 24, outpatient 12).
    assert [leaf.window_months for leaf in leaves] == [12, 6, 24, 12]
    exemption, drug, discharge, outpatient = (leaf.rule for leaf in leaves)
    assert isinstance(exemption, ExemptionRule) and exemption.codes == ["057"], "trimmed"
    assert isinstance(drug, DrugRule) and drug.atc == ["R03BB"], "upper case"
    assert isinstance(discharge, DischargeRule) and discharge.icd9 == ["4912", "496"], "ICD-9-CM without the dot"
    assert discharge.min_discharges == 1 and discharge.position == "main"
    assert isinstance(outpatient, OutpatientRule) and outpatient.codes == ["89.37.1"], "nomenclator dots kept"


def test_the_digest_follows_the_content_of_every_file(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", [HTN])
    first = load_catalog(directory).digest
    assert load_catalog(directory).digest == first, "same files, same digest"
    write_catalog(directory, [{**HTN, "priority": 31}])
    assert load_catalog(directory).digest != first


def test_entries_of_several_files_are_read_in_file_order(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", [HTN])
    (directory / "0_renal.yaml").write_text(yaml.safe_dump([DIALYSIS, CKD]), encoding="utf-8")
    catalog = load_catalog(directory)
    assert [p.id for p in catalog.pathologies] == ["dialysis", "ckd", "hypertension"]
    assert catalog.pathology("ckd").excluded_by == ["dialysis"]
    with pytest.raises(KeyError):
        catalog.pathology("nothing")


# --------------------------------------------------------------------------------------------- malformed entries


@pytest.mark.parametrize(
    ("criteria", "extra", "field", "message"),
    [
        ({"drug": {"atc": ["C09"]}}, {"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"drug": {"atc": ["C09"], "min_packs": 2}}, {}, "criteria.drug.min_packs", "Extra inputs"),
        ({"lab": {"codes": ["90.27.1"]}}, {}, "criteria", "exactly one key"),
        ({"drug": {"atc": ["C09"]}, "exemption": {"codes": ["0031"]}}, {}, "criteria", "exactly one key"),
        ({"drug": {"atc": ["C09"], "window_months": 0}}, {}, "criteria.drug.window_months", "greater than or equal"),
        (
            {"exemption": {"codes": ["0031"], "window_months": 121}},
            {},
            "criteria.exemption.window_months",
            "less than or equal to 120",
        ),
        (
            {"any": [{"exemption": {"codes": ["0031"]}}, {"discharge": {"icd9": ["401"], "window_months": -3}}]},
            {},
            "criteria.any.1.discharge.window_months",
            "greater than or equal",
        ),
        ({"exemption": {"codes": []}}, {}, "criteria.exemption.codes", "non-empty list"),
        ({"drug": {"atc": ["C09", "  "]}}, {}, "criteria.drug.atc", "non-empty code prefixes"),
        ({"discharge": {"icd9": []}}, {}, "criteria.discharge.icd9", "non-empty list"),
        ({"outpatient": {"codes": [""]}}, {}, "criteria.outpatient.codes", "non-empty"),
        (
            {"drug": {"atc": ["C09"], "min_prescriptions": 2, "min_ddd": 60}},
            {},
            "criteria.drug",
            "not both",
        ),
        ({"drug": {"atc": ["C09"], "min_prescriptions": 0}}, {}, "criteria.drug.min_prescriptions", "greater"),
        ({"drug": {"atc": ["C09"], "min_ddd": 0}}, {}, "criteria.drug.min_ddd", "greater than 0"),
        ({"outpatient": {"codes": ["39.95"], "min_services": 0}}, {}, "criteria.outpatient.min_services", "greater"),
        ({"discharge": {"icd9": ["428"], "position": "first"}}, {}, "criteria.discharge.position", "'main' or 'any'"),
        (
            {"all": [{"drug": {"atc": ["C09"]}}, {"age": {"min": 70, "max": 60}}]},
            {},
            "criteria.all.1.age",
            "min 70 is above max 60",
        ),
        ({"all": [{"drug": {"atc": ["C09"]}}, {"age": {}}]}, {}, "criteria.all.1.age", "give min, max or both"),
        ({"all": [{"drug": {"atc": ["C09"]}}, {"age": {"min": 130}}]}, {}, "criteria.all.1.age.min", "less than"),
        ({"all": [{"drug": {"atc": ["C09"]}}, {"sex": "X"}]}, {}, "criteria.all.1.sex", "'M' or 'F'"),
        ({"any": []}, {}, "criteria.any", "at least 1 item"),
        ({"drug": {"atc": ["C09"]}}, {"confidence": "sure"}, "confidence", "'verified', 'partly_verified'"),
        ({"drug": {"atc": ["C09"]}}, {"priority": 0}, "priority", "greater than or equal to 1"),
        ({"drug": {"atc": ["C09"]}}, {"source": "wiki"}, "source", "at least 10 characters"),
        ({"drug": {"atc": ["C09"]}}, {"macro_area": "space"}, "macro_area", "unknown macro-area 'space'"),
    ],
)
def test_a_malformed_entry_is_refused_naming_file_entry_and_field(
    tmp_path: Path, criteria: dict[str, Any], extra: dict[str, Any], field: str, message: str
) -> None:
    error = refused(tmp_path, with_criteria(criteria, **extra))
    assert (error.file, error.entry, error.field) == ("area.yaml", "broken", field)
    assert message in error.message
    assert str(error).startswith(f"area.yaml, entry 'broken', field '{field}': ")


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    entry = {k: v for k, v in pathology("broken", {"drug": {"atc": ["C09"]}}, 10).items() if k != "name_it"}
    error = refused(tmp_path, [HTN, entry])
    assert (error.entry, error.field, error.message) == ("broken", "name_it", "Field required")


def test_an_entry_without_an_id_is_named_by_its_position(tmp_path: Path) -> None:
    entry = {k: v for k, v in pathology("x", {"drug": {"atc": ["C09"]}}, 10).items() if k != "id"}
    error = refused(tmp_path, [HTN, entry])
    assert (error.entry, error.field) == ("#2", "id")


def test_a_malformed_id_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, [pathology("Heart-Failure", {"discharge": {"icd9": ["428"]}}, 1)])
    assert (error.entry, error.field) == ("Heart-Failure", "id")
    assert "pattern" in error.message


# ------------------------------------------------------------------------------------ references between entries


def test_a_duplicate_id_is_refused_even_across_files(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", [HTN])
    (directory / "other.yaml").write_text(yaml.safe_dump([{**HTN, "priority": 31}]), encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(directory)
    assert (caught.value.entry, caught.value.field, caught.value.message) == (
        "hypertension",
        "id",
        "pathology id used twice",
    )


def test_an_unknown_excluded_by_id_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, [HTN, CKD])
    assert (error.entry, error.field, error.message) == ("ckd", "excluded_by", "unknown pathology 'dialysis'")


def test_a_pathology_cannot_exclude_itself(tmp_path: Path) -> None:
    error = refused(tmp_path, [{**HTN, "excluded_by": ["hypertension"]}])
    assert (error.entry, error.field) == ("hypertension", "excluded_by")
    assert "cannot exclude itself" in error.message


def test_a_cycle_of_exclusions_is_refused_naming_its_path(tmp_path: Path) -> None:
    entries = [
        pathology("a", {"drug": {"atc": ["C09"]}}, 1, excluded_by=["b"]),
        pathology("b", {"drug": {"atc": ["C08"]}}, 2, excluded_by=["c"]),
        pathology("c", {"drug": {"atc": ["C07"]}}, 3, excluded_by=["a"]),
    ]
    error = refused(tmp_path, entries)
    assert error.field == "excluded_by"
    assert "exclusions form a cycle" in error.message
    assert "a -> b -> c -> a" in error.message


def test_a_chain_of_exclusions_without_a_cycle_is_accepted(tmp_path: Path) -> None:
    transplant = pathology("kidney_transplant", {"discharge": {"icd9": ["V42.0"]}}, 2, excluded_by=["dialysis"])
    catalog = load_catalog(write_catalog(tmp_path / "catalog", [DIALYSIS, CKD, transplant]))
    assert {p.id: p.excluded_by for p in catalog.pathologies} == {
        "dialysis": [],
        "ckd": ["dialysis"],
        "kidney_transplant": ["dialysis"],
    }


def test_a_criterion_id_used_twice_is_refused(tmp_path: Path) -> None:
    entries = [
        pathology("a", {"drug": {"atc": ["C09"], "id": "shared"}}, 1),
        pathology("b", {"drug": {"atc": ["C08"], "id": "shared"}}, 2),
    ]
    error = refused(tmp_path, entries)
    assert (error.entry, error.field) == ("b", "criteria.id")
    assert "criterion id 'shared' used twice" in error.message


# --------------------------------------------------------------------------------------------- files and header


def test_a_directory_without_catalog_yaml_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match=r"catalog\.yaml not found"):
        load_catalog(tmp_path / "empty")


def test_a_catalog_without_pathology_files_is_refused(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", [HTN])
    (directory / "area.yaml").unlink()
    with pytest.raises(CatalogError, match="no pathology files"):
        load_catalog(directory)


def test_a_pathology_file_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", [HTN])
    (directory / "area.yaml").write_text(yaml.safe_dump({"hypertension": HTN}), encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(directory)
    assert caught.value.file == "area.yaml"
    assert "list of pathology entries" in caught.value.message


def test_a_file_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", [HTN])
    (directory / "area.yaml").write_text("- id: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(directory)
    assert caught.value.file == "area.yaml"
    assert "not valid YAML" in caught.value.message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"default_windows_months": {**WINDOWS, "drug": 0}}, "default_windows_months.drug"),
        (
            {"default_windows_months": {**WINDOWS, "discharge": 121}},
            "default_windows_months.discharge",
        ),
        ({"default_windows_months": {"drug": 12}}, "default_windows_months.exemption"),
        ({"version": None}, "version"),
        ({"editor": "me"}, "editor"),
    ],
)
def test_a_malformed_header_is_refused_naming_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    error = refused(tmp_path, [HTN], {**HEADER, **change})
    assert (error.file, error.entry, error.field) == ("catalog.yaml", None, field)


def test_levels_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    levels = [lv for lv in HEADER["levels"] if lv["level"] != 3]
    error = refused(tmp_path, [HTN], {**HEADER, "levels": levels})
    assert (error.file, error.field) == ("catalog.yaml", "levels")
    assert "without gaps" in error.message


def test_a_level_rule_with_a_hole_is_refused_when_compiled(tmp_path: Path) -> None:
    """Levels 1..n in order but nobody with exactly two pathologies: the rule has a hole."""
    levels: list[dict[str, Any]] = [dict(lv) for lv in HEADER["levels"]]
    levels[1] = {**levels[1], "min_pathologies": 3}
    catalog = load_catalog(write_catalog(tmp_path / "catalog", [HTN], {**HEADER, "levels": levels}))
    with pytest.raises(CatalogError, match="0 levels match 2 pathologies"):
        compile_catalog(catalog, date(2025, 12, 31))


def test_the_shipped_header_is_the_verified_level_rule() -> None:
    """Levels 1-3 by pathology count as published on dati.lombardia.it; 4 and 5 by service use."""
    header = load_catalog(DEFAULT_CATALOG_DIR).header
    rule = {lv.level: (lv.min_pathologies, lv.max_pathologies, lv.uses_services) for lv in header.levels}
    assert rule == {1: (4, None, None), 2: (2, 3, None), 3: (1, 1, None), 4: (0, 0, True), 5: (0, 0, False)}
    assert all("dati.lombardia.it" in lv.source for lv in header.levels if lv.level <= 3)
