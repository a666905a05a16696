"""PDTA templates: the yearly activities of each care pathway, as validated data files.

A template is one YAML file in ``presa/care/pdta/`` (FHIR: a ``PlanDefinition`` of type clinical-protocol, one
``ActivityDefinition`` per activity). Its header names the pathway, the catalog pathology ids it serves
(``catalog_ids``) and its sources; each activity gives:

- ``code``: the DPCM 12/01/2017 nomenclator code, or ``null`` for work that is not an outpatient service (GP
  visits, most education); ``alt_codes`` and ``code_dm1996`` are alternatives kept for the clinician
- ``kind`` (gp_visit, specialist_visit, lab, instrumental, education), ``discipline``, ``provider`` (gp,
  specialist, laboratory, imaging, nurse, psychologist, rehabilitation)
- ``times_per_year``: for a stable patient; below 1 means every few years (0.5 = every two years)
- ``when``: the conditions the merge can check - ``age_min``, ``age_max``, ``sex``, ``levels``
- ``condition``: a clinical condition in words, which only the clinician can check
- ``include_by_default``: false makes the activity a suggestion offered to the clinician, not part of the plan
- ``precedes_visit``: the result feeds a visit, so the calendar books it a few working days before one
- ``escalation``: more frequent schedules by clinical stage, for the clinician (the merge keeps the base one)
- ``evidence`` (verified, guideline, inferred), ``source`` (a key of the template's ``sources``), ``note``

Exactly one template is marked ``generic: true``: the generic chronic follow-up, used for a pathology that has
no template of its own. Every code must exist in the nomenclator (``presa/codes/data``). A malformed template
raises :class:`PdtaError` naming the file, the activity and the field.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from presa.yamlfile import read_yaml

M = TypeVar("M", bound=BaseModel)

DEFAULT_PDTA_DIR = Path(__file__).parent / "pdta"
NOMENCLATOR_FILE = Path(__file__).parent.parent / "codes" / "data" / "outpatient_catalog_dpcm2017.csv"

Kind = Literal["gp_visit", "specialist_visit", "lab", "instrumental", "education"]
Provider = Literal["gp", "specialist", "laboratory", "imaging", "nurse", "psychologist", "rehabilitation"]
Sex = Literal["M", "F"]
Evidence = Literal["verified", "guideline", "inferred"]
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]

VISIT_KINDS: frozenset[str] = frozenset({"gp_visit", "specialist_visit"})
GP_VISIT_KEY = "gp_visit"


class PdtaError(ValueError):
    """A template that cannot be used, with the place of the fault."""

    def __init__(self, file: str, activity: str | None, field: str | None, message: str) -> None:
        self.file, self.activity, self.field, self.message = file, activity, field, message
        where = file + (f", activity '{activity}'" if activity else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Applicability(_Strict):
    """The patient conditions the merge checks: all given ones must hold."""

    age_min: int | None = Field(default=None, ge=0, le=120)
    age_max: int | None = Field(default=None, ge=0, le=120)
    sex: Sex | None = None
    levels: tuple[Annotated[int, Field(ge=1, le=5)], ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _meaningful(self) -> Applicability:
        if self.age_min is None and self.age_max is None and self.sex is None and self.levels is None:
            raise ValueError("give at least one of age_min, age_max, sex, levels")
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError(f"age_min {self.age_min} is above age_max {self.age_max}")
        return self


class Escalation(_Strict):
    when: str = Field(min_length=2)
    times_per_year: float = Field(gt=0, le=52)


class SourceRef(_Strict):
    key: Slug
    title: str = Field(min_length=5)
    url: str | None
    used_for: str | None = None


class ActivitySpec(_Strict):
    code: str | None
    code_dm1996: str | None = None
    alt_codes: tuple[str, ...] = ()
    description_it: str = Field(min_length=3)
    description_en: str = Field(min_length=3)
    kind: Kind
    discipline: Slug | None = None
    provider: Provider
    times_per_year: float = Field(gt=0, le=52)
    when: Applicability | None = None
    condition: str | None = None
    escalation: tuple[Escalation, ...] = ()
    precedes_visit: bool = False
    include_by_default: bool
    evidence: Evidence
    source: Slug
    note: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ActivitySpec:
        if self.kind == "gp_visit" and self.code is not None:
            raise ValueError("a GP visit is paid by capitation and has no nomenclator code: give code null")
        if self.kind == "specialist_visit" and self.discipline is None:
            raise ValueError("a specialist visit needs its discipline")
        if self.kind in VISIT_KINDS and self.precedes_visit:
            raise ValueError("precedes_visit is for exams that feed a visit, not for visits")
        if self.times_per_year > 1 and self.times_per_year != int(self.times_per_year):
            raise ValueError("above once a year, times_per_year must be a whole number")
        return self


class TemplateHeader(_Strict):
    id: Slug
    name_it: str = Field(min_length=3)
    name_en: str = Field(min_length=3)
    catalog_ids: tuple[Slug, ...]
    generic: bool = False
    schema_version: Literal[1]
    status: Literal["draft", "reviewed"]
    code_system: str
    note: str | None = None
    sources: tuple[SourceRef, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _serves_something(self) -> TemplateHeader:
        if not self.generic and not self.catalog_ids:
            raise ValueError("a pathway template must list the catalog ids it serves")
        if self.generic and self.catalog_ids:
            raise ValueError("the generic follow-up serves pathologies without a template: leave catalog_ids empty")
        return self


@dataclass(frozen=True, slots=True, eq=False)
class TemplateActivity:
    """One activity of a template, with what the merge needs precomputed (compared by identity)."""

    key: str
    spec: ActivitySpec
    age_min: int
    age_max: int
    sex: Sex | None
    levels: frozenset[int] | None

    def applies_to(self, level: int, age: int, sex: Sex) -> bool:
        return (
            self.age_min <= age <= self.age_max
            and (self.sex is None or self.sex == sex)
            and (self.levels is None or level in self.levels)
        )


@dataclass(frozen=True, slots=True)
class Template:
    header: TemplateHeader
    activities: tuple[TemplateActivity, ...]
    file: str

    @property
    def id(self) -> str:
        return self.header.id


@dataclass(frozen=True, eq=False)
class TemplateSet:
    """All templates of a directory, indexed by the catalog pathology id they serve.

    Compared and hashed by identity, so that a loaded set can key the merge's cache.
    """

    templates: tuple[Template, ...]
    by_pathology: Mapping[str, Template]
    generic: Template
    age_breakpoints: tuple[int, ...]
    digest: str

    def template(self, template_id: str) -> Template:
        for t in self.templates:
            if t.id == template_id:
                return t
        raise KeyError(template_id)

    def names_it(self) -> dict[str, str]:
        return {t.id: t.header.name_it for t in self.templates}


def merge_key(template_id: str, spec: ActivitySpec) -> str:
    """What makes two activities the same work, so that the merge plans it once.

    All GP visits are one cadence. A coded service is the same service whoever asks for it, except control
    visits, where the generic code 89.01 stands for several disciplines. Uncoded education belongs to its
    pathway: a lifestyle talk and an anticoagulation talk are not the same session.
    """
    if spec.kind == "gp_visit":
        return GP_VISIT_KEY
    if spec.code is None:
        return f"{template_id}.{spec.kind}.{spec.discipline or 'general'}"
    if spec.kind == "specialist_visit":
        return f"{spec.code}.{spec.discipline}"
    return spec.code


def load_templates(directory: Path = DEFAULT_PDTA_DIR) -> TemplateSet:
    """Read and validate every template of a directory; raise PdtaError naming file, activity and field."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise PdtaError(str(directory), None, None, "no template files (*.yaml)")
    codes = nomenclator_codes()
    digest = hashlib.sha256()
    templates = []
    for file in files:
        digest.update(file.name.encode() + file.read_bytes())
        templates.append(_read_template(file, codes))
    return _index(tuple(templates), digest.hexdigest()[:16])


@cache
def default_templates() -> TemplateSet:
    """The templates shipped with presa, loaded once per process."""
    return load_templates()


@cache
def nomenclator_codes() -> frozenset[str]:
    """The service codes of the DPCM 12/01/2017 outpatient nomenclator."""
    with NOMENCLATOR_FILE.open(encoding="utf-8", newline="") as handle:
        return frozenset(row["code"] for row in csv.DictReader(handle))


def _read_template(file: Path, codes: frozenset[str]) -> Template:
    raw = _read_yaml(file)
    if not isinstance(raw, dict):
        raise PdtaError(file.name, None, None, "must hold a mapping with a header and activities")
    raw_activities = raw.get("activities")
    if not isinstance(raw_activities, list) or not raw_activities:
        raise PdtaError(file.name, None, "activities", "must be a non-empty list")
    header_fields = {k: v for k, v in raw.items() if k != "activities"}
    header = _validate(TemplateHeader, header_fields, file.name, None)
    if file.stem != header.id:
        raise PdtaError(file.name, None, "id", f"id '{header.id}' differs from the file name")
    source_keys = {s.key for s in header.sources}
    activities = []
    for position, raw_activity in enumerate(raw_activities, start=1):
        name = _activity_name(position, raw_activity)
        spec = _validate(ActivitySpec, raw_activity, file.name, name)
        _check_codes(spec, codes, file.name, name)
        if spec.source not in source_keys:
            raise PdtaError(file.name, name, "source", f"'{spec.source}' is not a key of the template's sources")
        activities.append(_compile(header.id, spec))
    if header.generic and not any(a.spec.kind == "gp_visit" and a.spec.when is None for a in activities):
        raise PdtaError(file.name, None, "activities", "the generic follow-up must always include a GP visit")
    return Template(header, tuple(activities), file.name)


def _activity_name(position: int, raw: Any) -> str:
    label = (raw.get("code") or raw.get("kind")) if isinstance(raw, dict) else None
    return f"#{position}" + (f" {label}" if label else "")


def _check_codes(spec: ActivitySpec, codes: frozenset[str], file: str, name: str) -> None:
    if spec.code is not None and spec.code not in codes:
        raise PdtaError(file, name, "code", f"'{spec.code}' is not in the DPCM 2017 outpatient nomenclator")
    for alt in spec.alt_codes:
        if alt not in codes:
            raise PdtaError(file, name, "alt_codes", f"'{alt}' is not in the DPCM 2017 outpatient nomenclator")


def _compile(template_id: str, spec: ActivitySpec) -> TemplateActivity:
    when = spec.when
    return TemplateActivity(
        key=merge_key(template_id, spec),
        spec=spec,
        age_min=when.age_min if when and when.age_min is not None else 0,
        age_max=when.age_max if when and when.age_max is not None else 200,
        sex=when.sex if when else None,
        levels=frozenset(when.levels) if when and when.levels else None,
    )


def _index(templates: tuple[Template, ...], digest: str) -> TemplateSet:
    generic = [t for t in templates if t.header.generic]
    if len(generic) != 1:
        names = ", ".join(t.file for t in generic) or "none"
        raise PdtaError("pdta", None, "generic", f"exactly one generic follow-up template is needed, found: {names}")
    by_pathology: dict[str, Template] = {}
    for t in templates:  # ids are unique already: each is its file's name
        for pathology in t.header.catalog_ids:
            if pathology in by_pathology:
                other = by_pathology[pathology].file
                raise PdtaError(t.file, None, "catalog_ids", f"'{pathology}' is already served by {other}")
            by_pathology[pathology] = t
    return TemplateSet(templates, by_pathology, generic[0], _age_breakpoints(templates), digest)


def _age_breakpoints(templates: tuple[Template, ...]) -> tuple[int, ...]:
    """The ages at which some activity starts or stops applying: patients between two of them merge alike."""
    points = {a.age_min for t in templates for a in t.activities} | {
        a.age_max + 1 for t in templates for a in t.activities
    }
    return tuple(sorted(points))


def _read_yaml(file: Path) -> Any:
    try:
        return read_yaml(file)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PdtaError(file.name, None, None, f"not valid YAML: {exc}") from exc


def _validate(model: type[M], raw: Any, file: str, activity: str | None) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise PdtaError(file, activity, field, first["msg"]) from None
