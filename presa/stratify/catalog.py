"""The chronic-pathology catalog: versioned data files, validated into a typed model.

A catalog is a directory holding ``catalog.yaml`` (version, defaults, macro-areas, level rule) and one YAML file per
macro-area with a list of pathology entries. Each entry's ``criteria`` is a tree of nodes; a node is a mapping with
exactly one key:

- ``exemption: {codes: [prefix...], window_months: n}`` - an exemption whose validity overlaps the window
- ``drug: {atc: [prefix...], min_prescriptions: k | min_ddd: x, window_months: n}``
- ``discharge: {icd9: [prefix...], position: main | any, min_discharges: k, window_months: n}``
- ``outpatient: {codes: [prefix...], min_services: k, window_months: n}``
- ``age: {min: a, max: b}``, ``sex: M | F`` - conditions on the resident
- ``all: [node...]``, ``any: [node...]``, ``not: node`` - combinations

``excluded_by: [pathology id...]`` drops the pathology when the resident has any of those (dialysis excludes
chronic kidney disease not on dialysis, for instance). A malformed catalog raises :class:`CatalogError` naming
the file, the entry and the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from presa.yamlfile import read_yaml

M = TypeVar("M", bound=BaseModel)

DEFAULT_CATALOG_DIR = Path(__file__).parent / "catalog"

Source = Literal["exemptions", "prescriptions", "discharges", "outpatient"]


class CatalogError(ValueError):
    """A catalog file that cannot be used, with the place of the fault."""

    def __init__(self, file: str, entry: str | None, field: str | None, message: str) -> None:
        self.file, self.entry, self.field, self.message = file, entry, field, message
        where = file + (f", entry '{entry}'" if entry else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _non_empty_codes(codes: list[str]) -> list[str]:
    cleaned = [c.strip().upper() for c in codes]
    if not cleaned or any(not c for c in cleaned):
        raise ValueError("must be a non-empty list of non-empty code prefixes")
    return cleaned


class ExemptionRule(_Strict):
    codes: list[str]
    window_months: int | None = Field(default=None, ge=1, le=120)
    id: str | None = None

    _codes = field_validator("codes")(_non_empty_codes)


class DrugRule(_Strict):
    atc: list[str]
    min_prescriptions: int | None = Field(default=None, ge=1, le=366)
    min_ddd: float | None = Field(default=None, gt=0)
    window_months: int | None = Field(default=None, ge=1, le=120)
    id: str | None = None

    _codes = field_validator("atc")(_non_empty_codes)

    @model_validator(mode="after")
    def _one_threshold(self) -> DrugRule:
        if self.min_prescriptions is not None and self.min_ddd is not None:
            raise ValueError("give min_prescriptions or min_ddd, not both")
        return self


class DischargeRule(_Strict):
    icd9: list[str]
    position: Literal["main", "any"] = "any"
    min_discharges: int = Field(default=1, ge=1, le=100)
    window_months: int | None = Field(default=None, ge=1, le=120)
    id: str | None = None

    @field_validator("icd9")
    @classmethod
    def _icd9(cls, codes: list[str]) -> list[str]:
        # Flows carry ICD-9-CM without the dot (SDO convention); the catalog may write it either way.
        return [c.replace(".", "") for c in _non_empty_codes(codes)]


class OutpatientRule(_Strict):
    codes: list[str]
    min_services: int = Field(default=1, ge=1, le=366)
    window_months: int | None = Field(default=None, ge=1, le=120)
    id: str | None = None

    _codes = field_validator("codes")(_non_empty_codes)


class AgeRule(_Strict):
    min: int | None = Field(default=None, ge=0, le=120)
    max: int | None = Field(default=None, ge=0, le=120)

    @model_validator(mode="after")
    def _bounds(self) -> AgeRule:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ExemptionNode(_Strict):
    exemption: ExemptionRule


class DrugNode(_Strict):
    drug: DrugRule


class DischargeNode(_Strict):
    discharge: DischargeRule


class OutpatientNode(_Strict):
    outpatient: OutpatientRule


class AgeNode(_Strict):
    age: AgeRule


class SexNode(_Strict):
    sex: Literal["M", "F"]


class AllNode(_Strict):
    all: Annotated[list[Node], Field(min_length=1)]


class AnyNode(_Strict):
    any: Annotated[list[Node], Field(min_length=1)]


class NotNode(_Strict):
    not_: Node = Field(alias="not")


_NODE_TAGS = {
    "exemption": "ExemptionNode",
    "drug": "DrugNode",
    "discharge": "DischargeNode",
    "outpatient": "OutpatientNode",
    "age": "AgeNode",
    "sex": "SexNode",
    "all": "AllNode",
    "any": "AnyNode",
    "not": "NotNode",
}


def _node_kind(value: Any) -> str | None:
    """The node's one key picks its model, so an error names the field inside it, not another kind's."""
    if isinstance(value, BaseModel):
        return type(value).__name__
    if isinstance(value, dict) and len(value) == 1:
        return _NODE_TAGS.get(next(iter(value)))
    return None


Node = Annotated[
    Annotated[ExemptionNode, Tag("ExemptionNode")]
    | Annotated[DrugNode, Tag("DrugNode")]
    | Annotated[DischargeNode, Tag("DischargeNode")]
    | Annotated[OutpatientNode, Tag("OutpatientNode")]
    | Annotated[AgeNode, Tag("AgeNode")]
    | Annotated[SexNode, Tag("SexNode")]
    | Annotated[AllNode, Tag("AllNode")]
    | Annotated[AnyNode, Tag("AnyNode")]
    | Annotated[NotNode, Tag("NotNode")],
    Discriminator(
        _node_kind,
        custom_error_type="criteria_node",
        custom_error_message=f"a criteria node is a mapping with exactly one key, one of: {', '.join(_NODE_TAGS)}",
    ),
]
RecordRule = ExemptionRule | DrugRule | DischargeRule | OutpatientRule

for _model in (AllNode, AnyNode, NotNode):
    _model.model_rebuild()


class Pathology(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=48)]
    name_it: str
    name_en: str
    macro_area: str
    priority: int = Field(ge=1, description="main-pathology order: the lowest priority a resident has is the main")
    criteria: Node
    excluded_by: list[str] = []
    source: str = Field(min_length=10)
    confidence: Literal["verified", "partly_verified", "inferred"]
    note: str | None = None


class MacroArea(_Strict):
    id: str
    name_it: str
    name_en: str


class DefaultWindows(_Strict):
    exemption: int = Field(ge=1, le=120)
    drug: int = Field(ge=1, le=120)
    discharge: int = Field(ge=1, le=120)
    outpatient: int = Field(ge=1, le=120)
    service_use: int = Field(
        ge=1, le=120, description="window in which any record makes a non-chronic resident an occasional user"
    )


class Level(_Strict):
    level: int = Field(ge=1, le=9)
    name_it: str
    name_en: str
    min_pathologies: int = Field(ge=0)
    max_pathologies: int | None = Field(default=None, ge=0)
    uses_services: bool | None = None
    source: str


class CatalogHeader(_Strict):
    name: str
    version: str
    description: str
    default_windows_months: DefaultWindows
    macro_areas: list[MacroArea]
    levels: list[Level]
    sources: list[dict[str, str]]


@dataclass(frozen=True)
class Leaf:
    """A record rule placed in the catalog: its stable id, its pathology, its source flow and its window."""

    id: str
    pathology_id: str
    source: Source
    rule: RecordRule
    window_months: int


@dataclass(frozen=True)
class Catalog:
    header: CatalogHeader
    pathologies: tuple[Pathology, ...]
    digest: str
    directory: Path

    @property
    def version(self) -> str:
        return self.header.version

    def pathology(self, pathology_id: str) -> Pathology:
        for p in self.pathologies:
            if p.id == pathology_id:
                return p
        raise KeyError(pathology_id)

    def leaves(self) -> Iterator[Leaf]:
        """Every record rule of the catalog, in catalog order, with ids unique in the catalog."""
        for p in self.pathologies:
            yield from _leaves_of(p.criteria, p.id, self.header.default_windows_months, [0])


_SOURCE_OF: dict[type, tuple[Source, str]] = {
    ExemptionRule: ("exemptions", "exemption"),
    DrugRule: ("prescriptions", "drug"),
    DischargeRule: ("discharges", "discharge"),
    OutpatientRule: ("outpatient", "outpatient"),
}


def record_rule_of(node: Node) -> RecordRule | None:
    """The record rule a node carries, or None for a combination or a resident condition."""
    for attr in ("exemption", "drug", "discharge", "outpatient"):
        rule = getattr(node, attr, None)
        if rule is not None:
            return rule  # type: ignore[no-any-return]
    return None


def _leaves_of(node: Node, pathology_id: str, windows: DefaultWindows, counter: list[int]) -> Iterator[Leaf]:
    rule = record_rule_of(node)
    if rule is not None:
        counter[0] += 1
        source, kind = _SOURCE_OF[type(rule)]
        window = rule.window_months or getattr(windows, kind)
        yield Leaf(rule.id or f"{pathology_id}.{kind}{counter[0]}", pathology_id, source, rule, window)
    for child in _children(node):
        yield from _leaves_of(child, pathology_id, windows, counter)


def nodes_of(node: Node) -> Iterator[Node]:
    """A criteria tree's nodes, the root first."""
    yield node
    for child in _children(node):
        yield from nodes_of(child)


def _children(node: Node) -> list[Node]:
    if isinstance(node, AllNode):
        return node.all
    if isinstance(node, AnyNode):
        return node.any
    if isinstance(node, NotNode):
        return [node.not_]
    return []


def load_catalog(directory: Path = DEFAULT_CATALOG_DIR) -> Catalog:
    """Read and validate a catalog directory; raise CatalogError naming file, entry and field."""
    header_file = directory / "catalog.yaml"
    if not header_file.is_file():
        raise CatalogError(str(header_file), None, None, "catalog.yaml not found")
    header = _validate(CatalogHeader, _read_yaml(header_file), header_file.name, None)
    digest = hashlib.sha256(header_file.read_bytes())
    area_ids = {a.id for a in header.macro_areas}
    pathologies: list[Pathology] = []
    files = sorted(p for p in directory.glob("*.yaml") if p.name != "catalog.yaml")
    if not files:
        raise CatalogError(str(directory), None, None, "no pathology files (*.yaml besides catalog.yaml)")
    for file in files:
        digest.update(file.name.encode() + file.read_bytes())
        entries = _read_yaml(file)
        if not isinstance(entries, list):
            raise CatalogError(file.name, None, None, "must hold a list of pathology entries")
        for position, raw in enumerate(entries, start=1):
            name = raw.get("id") if isinstance(raw, dict) else None
            entry = _validate(Pathology, raw, file.name, str(name or f"#{position}"))
            if entry.macro_area not in area_ids:
                raise CatalogError(file.name, entry.id, "macro_area", f"unknown macro-area '{entry.macro_area}'")
            pathologies.append(entry)
    catalog = Catalog(header, tuple(pathologies), digest.hexdigest()[:16], directory.resolve())
    _check_references(catalog)
    return catalog


def _check_references(catalog: Catalog) -> None:
    ids = [p.id for p in catalog.pathologies]
    seen: set[str] = set()
    for pid in ids:
        if pid in seen:
            raise CatalogError("catalog", pid, "id", "pathology id used twice")
        seen.add(pid)
    for p in catalog.pathologies:
        for other in p.excluded_by:
            if other not in seen:
                raise CatalogError("catalog", p.id, "excluded_by", f"unknown pathology '{other}'")
            if other == p.id:
                raise CatalogError("catalog", p.id, "excluded_by", "a pathology cannot exclude itself")
    _check_exclusions_acyclic(catalog)
    leaf_ids: set[str] = set()
    for leaf in catalog.leaves():
        if leaf.id in leaf_ids:
            raise CatalogError("catalog", leaf.pathology_id, "criteria.id", f"criterion id '{leaf.id}' used twice")
        leaf_ids.add(leaf.id)
    levels = sorted(catalog.header.levels, key=lambda lv: lv.level)
    if [lv.level for lv in levels] != list(range(1, len(levels) + 1)):
        raise CatalogError("catalog.yaml", None, "levels", "levels must be numbered 1..n without gaps")


def _check_exclusions_acyclic(catalog: Catalog) -> None:
    """A cycle of exclusions would leave a resident with none of the pathologies in it."""
    excluded_by = {p.id: p.excluded_by for p in catalog.pathologies}

    def visit(pid: str, path: tuple[str, ...]) -> None:
        for other in excluded_by[pid]:
            if other in path:
                cycle = " -> ".join((*path[path.index(other) :], other))
                raise CatalogError("catalog", pid, "excluded_by", f"exclusions form a cycle: {cycle}")
            visit(other, (*path, other))

    for pid in excluded_by:
        visit(pid, (pid,))


def _read_yaml(file: Path) -> Any:
    try:
        return read_yaml(file)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CatalogError(file.name, None, None, f"not valid YAML: {exc}") from exc


def _validate(model: type[M], raw: Any, file: str, entry: str | None) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part)) or None
        raise CatalogError(file, entry, field, first["msg"]) from None


def _is_union_tag(part: object) -> bool:
    """Pydantic names each tried union member in an error location; they mean nothing to a catalog author."""
    return isinstance(part, str) and part.endswith("Node")
