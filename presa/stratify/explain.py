"""Why a resident of a run is where they are: their row, each pathology's fired criteria, the records behind them.

``explain_resident`` reads the resident's row and evidence through the run's views (presa/stratify/runview.py),
then, for every fired criterion, finds record by record the matching rows of the run's validated flows, with the
code prefixes of the catalog the run was made with and the window the run recorded for the criterion. A pathology
whose criteria fired but that the resident does not carry is explained too: either another pathology excluded it
(``excluded_by`` says which), or its criteria as a whole did not hold (one branch of an ``all`` fired, a ``not``
ruled it out, an age or sex condition failed).

Windows, the same definition as the engine's (presa.stratify.compile.window_start): a criterion of ``m`` months at
the run's reference date ``R`` covers the dates ``d`` with ``R - m months < d <= R``. The first day inside is
``R`` minus ``m`` months (clamped to the end of a shorter month) plus one day, the last is ``R`` itself. A record
counts when its date (dispensing, service, discharge) is inside; an exemption counts when its validity
``[start_date, end_date]`` (no end date: still valid) overlaps the window.

``render_explanation`` prints the result with rich, in Italian.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import duckdb
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from presa.flows.layout import FlowPaths
from presa.stratify.catalog import (
    Catalog,
    DischargeRule,
    DrugRule,
    ExemptionRule,
    Leaf,
    OutpatientRule,
    RecordRule,
)
from presa.stratify.compile import CODE_COLUMNS, holds, leaf_ids_by_rule
from presa.stratify.runview import RunError
from presa.stratify.summary import (
    RunInfo,
    ats_label,
    connect_run,
    it_date,
    it_decimal,
    read_run_info,
    run_catalog,
)

PathologyStatus = Literal["assigned", "excluded", "not_met"]


class UnknownResidentError(RunError):
    """A resident id that is not in the run's population."""


# The column whose date places a record in a window (an exemption's is the start of its validity).
DATE_COLUMNS = {
    "prescriptions": "dispensing_date",
    "outpatient": "service_date",
    "discharges": "discharge_date",
    "exemptions": "start_date",
}


@dataclass(frozen=True)
class FlowRecord:
    """One row of a validated flow that a criterion matched, with where it came from."""

    table: str
    source_file: str
    source_line: int
    record_date: date  # dispensing, service or discharge date; an exemption's start of validity
    code: str
    matched_columns: tuple[str, ...]
    end_date: date | None = None  # an exemption's end of validity (None: open-ended)
    admission_date: date | None = None  # a discharge's admission
    ddd: float | None = None  # a prescription's defined daily doses


@dataclass(frozen=True)
class CriterionEvidence:
    """A criterion that fired for the resident: the engine's counts and the records that make them."""

    criterion_id: str
    source: str
    description_it: str
    window_start: date
    window_end: date
    n_records: int
    ddd: float | None
    first_date: date | None
    last_date: date | None
    records: tuple[FlowRecord, ...]


@dataclass(frozen=True)
class PathologyEvidence:
    pathology_id: str
    name_it: str
    priority: int
    status: PathologyStatus
    is_main: bool
    excluded_by: tuple[str, ...]
    criteria: tuple[CriterionEvidence, ...]


@dataclass(frozen=True)
class ResidentExplanation:
    resident_id: str
    resident_key: int
    sex: str
    age: int
    age_band: str
    ats: str
    gp_id: str
    level: int
    level_name_it: str
    pathologies: tuple[str, ...]
    main_pathology: str | None
    cluster: str | None
    uses_services: bool
    reference_date: date
    catalog_version: str
    evidence: tuple[PathologyEvidence, ...]

    def pathology(self, pathology_id: str) -> PathologyEvidence:
        for p in self.evidence:
            if p.pathology_id == pathology_id:
                return p
        raise KeyError(pathology_id)


@dataclass(frozen=True)
class _Fired:
    """A row of the run's evidence, with the window the run gave its criterion."""

    pathology_id: str
    criterion_id: str
    n_records: int
    ddd: float | None
    first_date: date | None
    last_date: date | None
    assigned: bool
    window_start: date
    window_end: date


# ----------------------------------------------------------------------------------------------------- explaining


def explain_resident(run_dir: Path, resident_id: str, *, catalog: Catalog | None = None) -> ResidentExplanation:
    """Everything that placed ``resident_id`` where the run put them; an unknown resident raises UnknownResidentError.

    ``catalog`` defaults to the one run.json names, refused if edited since the run.
    """
    info = read_run_info(run_dir)
    catalog = catalog or run_catalog(info)
    con = connect_run(info)
    try:
        row = resident_row(con, info, resident_id)
        fired = fired_criteria(con, int(row["resident_key"]))
        records = FlowReader(con, info.flows, int(row["resident_key"]))
        evidence = pathology_evidence(catalog, row, fired, records)
    finally:
        con.close()
    level_names = {lv.level: lv.name_it for lv in catalog.header.levels}
    return ResidentExplanation(
        resident_id=row["resident_id"],
        resident_key=int(row["resident_key"]),
        sex=row["sex"],
        age=int(row["age"]),
        age_band=row["age_band"],
        ats=row["ats"],
        gp_id=row["gp_id"],
        level=int(row["level"]),
        level_name_it=level_names.get(int(row["level"]), ""),
        pathologies=tuple(row["pathologies"] or ()),
        main_pathology=row["main_pathology"],
        cluster=row["cluster"],
        uses_services=bool(row["uses_services"]),
        reference_date=info.reference_date,
        catalog_version=info.catalog_version,
        evidence=evidence,
    )


def resident_row(con: duckdb.DuckDBPyConnection, info: RunInfo, resident_id: str) -> dict[str, Any]:
    result = con.execute("SELECT * FROM residents WHERE resident_id = ?", [resident_id])
    names = [d[0] for d in result.description or []]
    row = result.fetchone()
    if row is None:
        raise UnknownResidentError(
            f"resident '{resident_id}' is not in the population of run {info.paths.root} "
            f"(reference date {info.reference_date.isoformat()})"
        )
    return dict(zip(names, row, strict=True))


def fired_criteria(con: duckdb.DuckDBPyConnection, resident_key: int) -> list[_Fired]:
    rows = con.execute(
        "SELECT e.pathology_id, e.criterion_id, e.n_records, e.ddd, e.first_date, e.last_date, e.assigned, "
        "c.window_start, c.window_end "
        "FROM evidence AS e JOIN criteria AS c ON c.criterion_id = e.criterion_id "
        "WHERE e.resident_key = ? ORDER BY e.pathology_id, e.criterion_id",
        [resident_key],
    ).fetchall()
    return [
        _Fired(p, c, int(n), ddd, first, last, bool(assigned), start, end)
        for p, c, n, ddd, first, last, assigned, start, end in rows
    ]


class FlowReader:
    """The resident's rows of each validated flow table, read once per table."""

    def __init__(self, con: duckdb.DuckDBPyConnection, flows: FlowPaths, resident_key: int) -> None:
        self._con, self._flows, self._key = con, flows, resident_key
        self._rows: dict[str, list[dict[str, Any]]] = {}

    def rows(self, table: str) -> list[dict[str, Any]]:
        if table not in self._rows:
            path = self._flows.table(table)
            if not path.is_file():
                raise RunError(f"the validated flow {path} is missing: the records behind the criteria cannot be shown")
            result = self._con.execute(
                "SELECT * FROM read_parquet(?) WHERE resident_key = ? ORDER BY source_file, source_line",
                [str(path), self._key],
            )
            names = [d[0] for d in result.description or []]
            self._rows[table] = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        return self._rows[table]


def pathology_evidence(
    catalog: Catalog, row: dict[str, Any], fired: list[_Fired], records: FlowReader
) -> tuple[PathologyEvidence, ...]:
    """One entry per pathology with a fired criterion: carried ones in the resident's order, then the others."""
    leaves = {leaf.id: leaf for leaf in catalog.leaves()}
    catalog_order = {leaf_id: n for n, leaf_id in enumerate(leaves)}
    unknown = sorted({f.criterion_id for f in fired} - leaves.keys())
    if unknown:
        raise RunError(f"criteria {', '.join(unknown)} of the run's evidence are not in catalog {catalog.version}")
    by_pathology: dict[str, list[_Fired]] = {}
    for f in fired:
        by_pathology.setdefault(f.pathology_id, []).append(f)
    present = pathologies_present(catalog, by_pathology, int(row["age"]), row["sex"])
    carried = list(row["pathologies"] or ())
    entries = []
    for pathology_id, rows in by_pathology.items():
        pathology = catalog.pathology(pathology_id)
        status, excluders = pathology_status(
            any(f.assigned for f in rows), pathology.excluded_by, pathology_id, present
        )
        criteria = tuple(
            criterion_evidence(leaves[f.criterion_id], f, records)
            for f in sorted(rows, key=lambda f: catalog_order[f.criterion_id])
        )
        entries.append(
            PathologyEvidence(
                pathology_id=pathology_id,
                name_it=pathology.name_it,
                priority=pathology.priority,
                status=status,
                is_main=pathology_id == row["main_pathology"],
                excluded_by=excluders,
                criteria=criteria,
            )
        )

    def order(entry: PathologyEvidence) -> tuple[int, int, int, str]:
        place = carried.index(entry.pathology_id) if entry.pathology_id in carried else len(carried)
        return (place, ("assigned", "excluded", "not_met").index(entry.status), entry.priority, entry.pathology_id)

    return tuple(sorted(entries, key=order))


def pathologies_present(catalog: Catalog, by_pathology: dict[str, list[_Fired]], age: int, sex: str) -> set[str]:
    """The pathologies whose criteria hold before exclusions, by the reference semantics of the engine."""
    leaf_ids = leaf_ids_by_rule(catalog)
    return {
        pathology_id
        for pathology_id, rows in by_pathology.items()
        if holds(catalog.pathology(pathology_id).criteria, {f.criterion_id for f in rows}, leaf_ids, age, sex)
    }


def pathology_status(
    assigned: bool, excluded_by: Iterable[str], pathology_id: str, present: set[str]
) -> tuple[PathologyStatus, tuple[str, ...]]:
    """Assigned; excluded (and by which present pathologies); or its criteria did not hold as a whole."""
    if assigned:
        return "assigned", ()
    excluders = tuple(other for other in excluded_by if other in present)
    if pathology_id in present and excluders:
        return "excluded", excluders
    return "not_met", ()


def criterion_evidence(leaf: Leaf, fired: _Fired, records: FlowReader) -> CriterionEvidence:
    """A fired criterion with its records, looked up in the window the run gave it (both ends included)."""
    return CriterionEvidence(
        criterion_id=leaf.id,
        source=leaf.source,
        description_it=describe_rule(leaf),
        window_start=fired.window_start,
        window_end=fired.window_end,
        n_records=fired.n_records,
        ddd=fired.ddd,
        first_date=fired.first_date,
        last_date=fired.last_date,
        records=matching_records(records.rows(leaf.source), leaf, fired.window_start, fired.window_end),
    )


# ------------------------------------------------------------------------------------------------ record matching


def rule_prefixes(rule: RecordRule) -> tuple[str, ...]:
    if isinstance(rule, DrugRule):
        return tuple(rule.atc)
    if isinstance(rule, DischargeRule):
        return tuple(rule.icd9)
    return tuple(rule.codes)


def code_columns(leaf: Leaf) -> tuple[str, ...]:
    """Where the rule looks for its codes: a discharge rule with ``position: main`` reads dx_main only."""
    if isinstance(leaf.rule, DischargeRule) and leaf.rule.position == "main":
        return ("dx_main",)
    return CODE_COLUMNS[leaf.source]


def matching_records(rows: list[dict[str, Any]], leaf: Leaf, start: date, end: date) -> tuple[FlowRecord, ...]:
    """The rows of the leaf's flow inside the window ``[start, end]`` with a code under one of its prefixes."""
    prefixes = rule_prefixes(leaf.rule)
    columns = code_columns(leaf)
    matched = []
    for row in rows:
        if not in_window(row, leaf.source, start, end):
            continue
        hits = tuple(c for c in columns if row.get(c) and str(row[c]).startswith(prefixes))
        if hits:
            matched.append(flow_record(row, leaf.source, hits))
    return tuple(matched)


def in_window(row: dict[str, Any], table: str, start: date, end: date) -> bool:
    if table == "exemptions":
        return bool(row["start_date"] <= end and (row["end_date"] is None or row["end_date"] >= start))
    return bool(start <= row[DATE_COLUMNS[table]] <= end)


def flow_record(row: dict[str, Any], table: str, hits: tuple[str, ...]) -> FlowRecord:
    return FlowRecord(
        table=table,
        source_file=row["source_file"],
        source_line=int(row["source_line"]),
        record_date=row[DATE_COLUMNS[table]],
        code=str(row[hits[0]]),
        matched_columns=hits,
        end_date=row.get("end_date"),
        admission_date=row.get("admission_date"),
        ddd=row.get("ddd"),
    )


def describe_rule(leaf: Leaf) -> str:
    """The criterion in words an Italian analyst reads at a glance; prefixes end with '*'."""
    rule = leaf.rule
    codes = ", ".join(f"{p}*" for p in rule_prefixes(rule))
    months = f"negli ultimi {leaf.window_months} mesi"
    if isinstance(rule, ExemptionRule):
        return f"esenzione {codes} valida in almeno un giorno degli ultimi {leaf.window_months} mesi"
    if isinstance(rule, DrugRule):
        if rule.min_ddd is not None:
            return f"almeno {it_decimal(rule.min_ddd, 0)} DDD di farmaci ATC {codes} {months}"
        k = rule.min_prescriptions or 1
        return f"almeno {k} {'prescrizione' if k == 1 else 'prescrizioni'} di farmaci ATC {codes} {months}"
    if isinstance(rule, DischargeRule):
        where = "principale" if rule.position == "main" else "principale o secondaria"
        k = rule.min_discharges
        return f"almeno {k} {'ricovero' if k == 1 else 'ricoveri'} con diagnosi {where} ICD-9-CM {codes} {months}"
    assert isinstance(rule, OutpatientRule)
    k = rule.min_services
    return f"almeno {k} {'prestazione' if k == 1 else 'prestazioni'} ambulatoriali {codes} {months}"


# ------------------------------------------------------------------------------------------------------ rendering

STATUS_IT: dict[PathologyStatus, str] = {
    "assigned": "assegnata",
    "excluded": "esclusa",
    "not_met": "criteri non soddisfatti",
}
STATUS_STYLE: dict[PathologyStatus, str] = {"assigned": "green", "excluded": "yellow", "not_met": "dim"}
TABLE_IT = {
    "prescriptions": "farmaceutica",
    "outpatient": "specialistica ambulatoriale",
    "discharges": "SDO",
    "exemptions": "esenzioni",
}


def render_explanation(explanation: ResidentExplanation, console: Console | None = None) -> None:
    (console or Console()).print(explanation_group(explanation))


def explanation_group(explanation: ResidentExplanation) -> Group:
    parts: list[Any] = [resident_panel(explanation)]
    if not explanation.evidence:
        parts.append(Text("Nessun criterio del catalogo è scattato per questo residente.", style="italic"))
    parts.extend(pathology_panel(p, explanation) for p in explanation.evidence)
    return Group(*parts)


def resident_panel(e: ResidentExplanation) -> Panel:
    names = {p.pathology_id: p.name_it for p in e.evidence}
    carried = ", ".join(names.get(p, p) + (" (principale)" if p == e.main_pathology else "") for p in e.pathologies)
    lines = [
        Text.assemble(("Livello ", "bold"), (f"{e.level} · {e.level_name_it}", "bold magenta")),
        Text(_person(e)),
        Text(f"Patologie ({len(e.pathologies)}): {carried or 'nessuna'}"),
        Text(f"Uso dei servizi nell'ultimo anno: {'sì' if e.uses_services else 'no'}"),
        Text(f"Data di riferimento {it_date(e.reference_date)} · catalogo {e.catalog_version}", style="dim"),
    ]
    return Panel(Group(*lines), title=f"Residente {e.resident_id}", title_align="left", border_style="magenta")


def _person(e: ResidentExplanation) -> str:
    sex = {"M": "maschio", "F": "femmina"}.get(e.sex, e.sex)
    return f"{sex}, {e.age} anni (fascia {e.age_band}) · {ats_label(e.ats)} · medico {e.gp_id}"


def pathology_panel(p: PathologyEvidence, e: ResidentExplanation) -> Panel:
    status = STATUS_IT[p.status]
    if p.status == "excluded":
        names = {other.pathology_id: other.name_it for other in e.evidence}
        status += " da " + ", ".join(names.get(x, x) for x in p.excluded_by)
    if p.is_main:
        status += " · principale"
    parts: list[Any] = []
    for c in p.criteria:
        parts.append(criterion_heading(c))
        parts.append(records_table(c))
    title = Text.assemble((p.name_it, "bold"), f" ({p.pathology_id}) — ", (status, STATUS_STYLE[p.status]))
    return Panel(Group(*parts), title=title, title_align="left", border_style=STATUS_STYLE[p.status])


def criterion_heading(c: CriterionEvidence) -> Text:
    counts = f"{c.n_records} record" + (f", {it_decimal(c.ddd)} DDD" if c.ddd is not None else "")
    return Text.assemble(
        (c.criterion_id, "bold cyan"),
        f": {c.description_it}",
        (f"\n  finestra {it_date(c.window_start)} – {it_date(c.window_end)} · {counts}", "dim"),
    )


def records_table(c: CriterionEvidence) -> Table:
    table = Table(box=box.SIMPLE, padding=(0, 1), show_edge=False)
    for header in ("Flusso", "File", "Riga", "Data", "Codice", "Dettagli"):
        # File, line, date and code are how an analyst finds the record in the delivery: never cut them short.
        table.add_column(
            header,
            justify="right" if header == "Riga" else "left",
            no_wrap=header in ("File", "Riga", "Data", "Codice"),
        )
    for r in c.records:
        table.add_row(
            TABLE_IT.get(r.table, r.table),
            r.source_file,
            str(r.source_line),
            it_date(r.record_date),
            r.code,
            _details(r),
        )
    if not c.records:
        table.add_row("—", "nessun record trovato nei flussi della run", "", "", "", "")
    return table


def _details(r: FlowRecord) -> str:
    if r.table == "exemptions":
        return f"valida fino al {it_date(r.end_date)}" if r.end_date else "senza scadenza"
    if r.table == "discharges":
        admitted = f"ricovero dal {it_date(r.admission_date)}" if r.admission_date else ""
        return ", ".join(x for x in (admitted, "in " + "/".join(r.matched_columns)) if x)
    if r.table == "prescriptions" and r.ddd is not None:
        return f"{it_decimal(r.ddd)} DDD"
    return ""
