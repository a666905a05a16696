"""PDTA templates: the shipped ones load and are sound; malformed ones are refused with file, activity, field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from presa.care.pdta import DEFAULT_PDTA_DIR, PdtaError, load_templates, merge_key, nomenclator_codes

GENERIC_ACTIVITIES: list[dict[str, Any]] = [
    {
        "code": None,
        "description_it": "Visita del MMG",
        "description_en": "GP visit",
        "kind": "gp_visit",
        "provider": "gp",
        "times_per_year": 2,
        "include_by_default": True,
        "evidence": "inferred",
        "source": "ref",
    }
]


def activity(**fields: Any) -> dict[str, Any]:
    """A valid lab activity with the given fields changed: tests name only what they care about."""
    base: dict[str, Any] = {
        "code": "90.28.1",
        "description_it": "Emoglobina glicata",
        "description_en": "HbA1c",
        "kind": "lab",
        "provider": "laboratory",
        "times_per_year": 1,
        "precedes_visit": True,
        "include_by_default": True,
        "evidence": "verified",
        "source": "ref",
    }
    base.update(fields)
    return base


def write_template(
    directory: Path,
    template_id: str,
    activities: list[dict[str, Any]],
    *,
    catalog_ids: list[str] | None = None,
    generic: bool = False,
    **header: Any,
) -> Path:
    """Write one template file; ``catalog_ids`` defaults to the template id."""
    content: dict[str, Any] = {
        "id": template_id,
        "name_it": f"Percorso {template_id}",
        "name_en": f"Pathway {template_id}",
        "catalog_ids": [] if generic else (catalog_ids if catalog_ids is not None else [template_id]),
        "schema_version": 1,
        "status": "draft",
        "code_system": "DPCM 12/01/2017",
        "sources": [{"key": "ref", "title": "A reference", "url": None}],
        "activities": activities,
    }
    if generic:
        content["generic"] = True
    content.update(header)
    file = directory / f"{template_id}.yaml"
    file.write_text(yaml.safe_dump(content, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return file


def template_dir(tmp_path: Path, **templates: list[dict[str, Any]]) -> Path:
    """A directory with a minimal generic follow-up and the given pathway templates."""
    write_template(tmp_path, "generic", GENERIC_ACTIVITIES, generic=True)
    for template_id, activities in templates.items():
        write_template(tmp_path, template_id, activities)
    return tmp_path


def refusal(directory: Path) -> PdtaError:
    with pytest.raises(PdtaError) as caught:
        load_templates(directory)
    return caught.value


def test_shipped_templates_serve_at_least_twelve_catalog_pathologies() -> None:
    templates = load_templates()
    assert len(templates.by_pathology) >= 12
    assert templates.generic.id == "generic_chronic_follow_up"
    assert templates.generic.header.catalog_ids == ()


def test_shipped_templates_use_the_catalog_ids_not_the_research_ids() -> None:
    served = set(load_templates().by_pathology)
    assert {"diabetes_type2", "dyslipidaemia", "cardiac_arrhythmia"} <= served
    assert not {"diabetes_t2", "dyslipidemia", "atrial_fibrillation"} & served
    assert load_templates().by_pathology["alzheimer"].id == "dementia"


def test_every_shipped_code_is_in_the_nomenclator_and_every_activity_cites_a_source() -> None:
    codes = nomenclator_codes()
    assert len(codes) == 2108
    for template in load_templates().templates:
        sources = {s.key: s for s in template.header.sources}
        for act in template.activities:
            spec = act.spec
            assert spec.code is None or spec.code in codes, (template.id, spec.code)
            assert all(alt in codes for alt in spec.alt_codes), (template.id, spec.alt_codes)
            assert sources[spec.source].title, (template.id, spec.source)


def test_every_pathway_has_one_gp_visit_cadence() -> None:
    for template in load_templates().templates:
        gp_visits = [a for a in template.activities if a.spec.kind == "gp_visit"]
        assert len(gp_visits) == 1, template.id
        assert gp_visits[0].key == "gp_visit"


def test_merge_key_tells_control_visits_apart_by_discipline_and_keeps_uncoded_education_per_pathway(
    tmp_path: Path,
) -> None:
    directory = template_dir(
        tmp_path,
        rheum=[
            activity(code="89.01", kind="specialist_visit", discipline="reumatologia", precedes_visit=False),
            activity(code=None, kind="education", discipline="medicina_generale", precedes_visit=False),
        ],
    )
    keys = {a.spec.kind: a.key for a in load_templates(directory).template("rheum").activities}
    assert keys == {"specialist_visit": "89.01.reumatologia", "education": "rheum.education.medicina_generale"}
    lab = load_templates(directory).template("rheum").activities[0].spec.model_copy(update={"kind": "lab"})
    assert merge_key("other", lab) == "89.01"


def test_a_template_with_a_bad_frequency_is_refused_naming_file_activity_and_field(tmp_path: Path) -> None:
    directory = template_dir(tmp_path, diab=[activity(), activity(code="90.27.1", times_per_year=-1)])
    error = refusal(directory)
    assert (error.file, error.activity, error.field) == ("diab.yaml", "#2 90.27.1", "times_per_year")
    assert "diab.yaml, activity '#2 90.27.1', field 'times_per_year'" in str(error)


def test_a_code_outside_the_nomenclator_is_refused(tmp_path: Path) -> None:
    error = refusal(template_dir(tmp_path, diab=[activity(code="99.99.9")]))
    assert (error.file, error.activity, error.field) == ("diab.yaml", "#1 99.99.9", "code")
    error = refusal(template_dir(tmp_path, diab=[activity(alt_codes=["90.28.1", "00.00"])]))
    assert error.field == "alt_codes"


def test_an_activity_citing_an_unknown_source_is_refused(tmp_path: Path) -> None:
    error = refusal(template_dir(tmp_path, diab=[activity(source="nowhere")]))
    assert (error.activity, error.field) == ("#1 90.28.1", "source")


def test_a_missing_field_and_an_unknown_field_are_refused(tmp_path: Path) -> None:
    incomplete = activity()
    del incomplete["include_by_default"]
    error = refusal(template_dir(tmp_path, diab=[incomplete]))
    assert (error.activity, error.field) == ("#1 90.28.1", "include_by_default")
    error = refusal(template_dir(tmp_path, diab=[activity(frequency=3)]))
    assert (error.activity, error.field) == ("#1 90.28.1", "frequency")


def test_conditions_that_cannot_hold_are_refused(tmp_path: Path) -> None:
    error = refusal(template_dir(tmp_path, diab=[activity(when={"age_min": 80, "age_max": 70})]))
    assert (error.activity, error.field) == ("#1 90.28.1", "when")
    error = refusal(template_dir(tmp_path, diab=[activity(when={"levels": [0]})]))
    assert error.field == "when.levels.0"
    error = refusal(template_dir(tmp_path, diab=[activity(when={"sex": "X"})]))
    assert error.field == "when.sex"


def test_incoherent_activities_are_refused(tmp_path: Path) -> None:
    gp_with_code = activity(code="89.01", kind="gp_visit", provider="gp", precedes_visit=False)
    assert "capitation" in refusal(template_dir(tmp_path, diab=[gp_with_code])).message
    visit_without_discipline = activity(code="89.01.8", kind="specialist_visit", precedes_visit=False)
    assert "discipline" in refusal(template_dir(tmp_path, diab=[visit_without_discipline])).message
    fractional = activity(times_per_year=2.5)
    assert "whole number" in refusal(template_dir(tmp_path, diab=[fractional])).message


def test_the_header_is_checked(tmp_path: Path) -> None:
    write_template(tmp_path, "generic", GENERIC_ACTIVITIES, generic=True)
    write_template(tmp_path, "diab", [activity()], catalog_ids=[])
    error = refusal(tmp_path)
    assert (error.file, error.activity, error.field) == ("diab.yaml", None, None)
    assert "catalog ids" in error.message
    write_template(tmp_path, "diab", [activity()], id="diabetes")
    assert refusal(tmp_path).field == "id"


def test_a_pathology_served_twice_is_refused(tmp_path: Path) -> None:
    directory = template_dir(tmp_path, first=[activity()])
    write_template(directory, "second", [activity()], catalog_ids=["first"])
    error = refusal(directory)
    assert (error.file, error.field) == ("second.yaml", "catalog_ids")


def test_exactly_one_generic_follow_up_is_required(tmp_path: Path) -> None:
    write_template(tmp_path, "diab", [activity()])
    assert refusal(tmp_path).field == "generic"
    write_template(tmp_path, "generic", [activity()], generic=True)
    assert "GP visit" in refusal(tmp_path).message


def test_invalid_yaml_and_empty_directories_are_refused(tmp_path: Path) -> None:
    assert "no template files" in refusal(tmp_path).message
    (tmp_path / "broken.yaml").write_text("id: [unclosed\n", encoding="utf-8")
    error = refusal(tmp_path)
    assert error.file == "broken.yaml"
    assert "not valid YAML" in error.message


def test_the_shipped_directory_is_the_default() -> None:
    assert load_templates().digest == load_templates(DEFAULT_PDTA_DIR).digest
