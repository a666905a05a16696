"""Compile a catalog into a stratification program: small parameter tables plus a few named SQL SELECTs.

The program is dialect-neutral data. Values (codes, thresholds, windows) live in parameter tables, never spliced
into SQL; the only constants in the text are the per-flow scan bounds, date literals built with sqlglot from
``date`` objects so that scans can skip rows early. DuckDB runs the text as it is and ``to_dialect`` transpiles it
for Spark with sqlglot. Passes, each a small pure function:

1. ``criteria_rows``: one row per record rule (leaf) with its window resolved against the reference date;
2. ``prefix_rows``: the code prefixes of every leaf, per flow column, to be expanded against the observed codes;
3. ``pathology_condition``: each pathology's criteria tree as a boolean SQL expression over a resident's fired
   leaves (a bitmask in a few 64-bit words) and the resident's age and sex;
4. ``stages``: the named SELECTs, in order.

Windows: a rule of ``m`` months at reference date ``R`` covers the dates ``d`` with ``R - m months < d <= R``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlglot
from sqlglot import exp

from presa.stratify.catalog import (
    AgeNode,
    AllNode,
    AnyNode,
    Catalog,
    CatalogError,
    DischargeRule,
    DrugRule,
    ExemptionRule,
    Leaf,
    Node,
    NotNode,
    OutpatientRule,
    SexNode,
    nodes_of,
    record_rule_of,
)

# The flow column each record rule's codes are matched against; discharges list every diagnosis position.
CODE_COLUMNS: dict[str, tuple[str, ...]] = {
    "prescriptions": ("atc",),
    "outpatient": ("service_code",),
    "exemptions": ("exemption_code",),
    "discharges": ("dx_main", "dx_2", "dx_3", "dx_4", "dx_5", "dx_6"),
}
FLOW_TABLES = ("residents", "prescriptions", "outpatient", "discharges", "er_visits", "exemptions")
WORD_BITS = 62  # bits used of a signed 64-bit integer, so that sums of distinct bits stay positive


def months_before(day: date, months: int) -> date:
    """The same day ``months`` earlier, clamped to the month's end (31 March minus 1 month is 28/29 February)."""
    total = day.year * 12 + (day.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    next_month = date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - timedelta(days=1)).day
    return date(year, month, min(day.day, last_day))


def window_start(reference: date, months: int) -> date:
    """First day inside a window of ``months`` ending on ``reference``.

    >>> window_start(date(2025, 12, 31), 12)
    datetime.date(2025, 1, 1)
    """
    return months_before(reference, months) + timedelta(days=1)


@dataclass(frozen=True)
class Program:
    """A compiled catalog: parameter tables (name -> rows) and named SELECTs run in order."""

    tables: dict[str, tuple[dict[str, Any], ...]]
    stages: tuple[tuple[str, str], ...]
    reference_date: date

    @property
    def stage_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.stages)

    def sql(self, dialect: str = "duckdb") -> str:
        """The whole program as one script, each stage a CREATE TEMPORARY VIEW, in ``dialect``."""
        parts = []
        for name, select in self.stages:
            text = to_dialect(select, dialect)
            parts.append(f"-- {name}\nCREATE TEMPORARY VIEW {name} AS\n{text};")
        return "\n\n".join(parts) + "\n"


def to_dialect(select: str, dialect: str) -> str:
    """Transpile a stage from DuckDB SQL; unsupported constructs raise instead of passing silently."""
    if dialect == "duckdb":
        return select
    return sqlglot.transpile(
        select, read="duckdb", write=dialect, pretty=True, unsupported_level=sqlglot.ErrorLevel.RAISE
    )[0]


# ---------------------------------------------------------------------------------------------- pass 1: criteria


def criteria_rows(catalog: Catalog, reference: date) -> tuple[dict[str, Any], ...]:
    """One row per leaf: its number, pathology, source flow, thresholds, window and place in the residents' masks."""
    rows = []
    pathology_no = {p.id: n for n, p in enumerate(catalog.pathologies, start=1)}
    for number, leaf in enumerate(catalog.leaves(), start=1):
        min_count, min_ddd = _thresholds(leaf)
        mask_word, mask_bit = mask_place(number)
        rows.append(
            {
                "criterion_no": number,
                "criterion_id": leaf.id,
                "pathology_no": pathology_no[leaf.pathology_id],
                "source": leaf.source,
                "min_count": min_count,
                "min_ddd": min_ddd,
                "main_only": isinstance(leaf.rule, DischargeRule) and leaf.rule.position == "main",
                "window_start": window_start(reference, leaf.window_months),
                "window_end": reference,
                "mask_word": mask_word,
                "mask_bit": mask_bit,
            }
        )
    return tuple(rows)


def _thresholds(leaf: Leaf) -> tuple[int, float | None]:
    rule = leaf.rule
    if isinstance(rule, DrugRule):
        if rule.min_ddd is not None:
            return 1, rule.min_ddd
        return rule.min_prescriptions or 1, None
    if isinstance(rule, DischargeRule):
        return rule.min_discharges, None
    if isinstance(rule, OutpatientRule):
        return rule.min_services, None
    return 1, None


def mask_place(criterion_no: int) -> tuple[int, int]:
    """Where a leaf's bit is in a resident's mask of fired leaves: (word, bit value), from its number (1, 2, ...)."""
    word, bit = divmod(criterion_no - 1, WORD_BITS)
    return word, 1 << bit


def mask_words(catalog: Catalog) -> int:
    return -(-sum(1 for _ in catalog.leaves()) // WORD_BITS)


# ----------------------------------------------------------------------------------------------- pass 2: prefixes


def prefix_rows(catalog: Catalog) -> tuple[dict[str, Any], ...]:
    """One row per (leaf, code prefix), to be expanded against the distinct codes observed in its flow.

    Every diagnosis position of a discharge uses the same code system, so codes are pooled per table.
    """
    rows: list[dict[str, Any]] = []
    for number, leaf in enumerate(catalog.leaves(), start=1):
        rows.extend({"criterion_no": number, "table_name": leaf.source, "prefix": prefix} for prefix in _codes_of(leaf))
    return tuple(rows)


def _codes_of(leaf: Leaf) -> list[str]:
    rule = leaf.rule
    if isinstance(rule, DrugRule):
        return rule.atc
    if isinstance(rule, DischargeRule):
        return rule.icd9
    if isinstance(rule, ExemptionRule | OutpatientRule):
        return rule.codes
    raise TypeError(type(rule))


# --------------------------------------------------------------------------------------- pass 3: pathology trees


def pathology_condition(node: Node, places: dict[str, tuple[int, int]], leaf_ids: dict[int, str]) -> exp.Expression:
    """The criteria tree as a boolean expression over ``mask_0``, ``mask_1``... (fired leaves), ``age`` and ``sex``.

    ``places`` maps a leaf id to its (word, bit value) in the masks; ``leaf_ids`` maps id(rule) -> leaf id, so that
    each rule object finds its bit.
    """
    rule = record_rule_of(node)
    if rule is not None:
        word, bit = places[leaf_ids[id(rule)]]
        return exp.NEQ(
            this=exp.paren(exp.BitwiseAnd(this=exp.column(f"mask_{word}"), expression=exp.Literal.number(bit))),
            expression=exp.Literal.number(0),
        )
    if isinstance(node, AgeNode):
        terms: list[exp.Expression] = []
        if node.age.min is not None:
            terms.append(exp.GTE(this=exp.column("age"), expression=exp.Literal.number(node.age.min)))
        if node.age.max is not None:
            terms.append(exp.LTE(this=exp.column("age"), expression=exp.Literal.number(node.age.max)))
        return exp.paren(exp.and_(*terms))
    if isinstance(node, SexNode):
        return exp.EQ(this=exp.column("sex"), expression=exp.Literal.string(node.sex))
    if isinstance(node, AllNode):
        return exp.paren(exp.and_(*(pathology_condition(c, places, leaf_ids) for c in node.all)))
    if isinstance(node, AnyNode):
        return exp.paren(exp.or_(*(pathology_condition(c, places, leaf_ids) for c in node.any)))
    if isinstance(node, NotNode):
        return exp.not_(exp.paren(pathology_condition(node.not_, places, leaf_ids)))
    raise TypeError(type(node))


def holds(node: Node, fired: set[str], leaf_ids: dict[int, str], age: int, sex: str) -> bool:
    """Evaluate a criteria tree in Python: the reference semantics the SQL must agree with."""
    rule = record_rule_of(node)
    if rule is not None:
        return leaf_ids[id(rule)] in fired
    if isinstance(node, AgeNode):
        return (node.age.min is None or age >= node.age.min) and (node.age.max is None or age <= node.age.max)
    if isinstance(node, SexNode):
        return sex == node.sex
    if isinstance(node, AllNode):
        return all(holds(c, fired, leaf_ids, age, sex) for c in node.all)
    if isinstance(node, AnyNode):
        return any(holds(c, fired, leaf_ids, age, sex) for c in node.any)
    if isinstance(node, NotNode):
        return not holds(node.not_, fired, leaf_ids, age, sex)
    raise TypeError(type(node))


def leaf_ids_by_rule(catalog: Catalog) -> dict[int, str]:
    return {id(leaf.rule): leaf.id for leaf in catalog.leaves()}


def check_anchored(catalog: Catalog) -> None:
    """Refuse a pathology whose criteria can hold with no record at all: it would tag whole age groups."""
    leaf_ids = leaf_ids_by_rule(catalog)
    probes = [(age, sex) for age in (0, 17, 18, 44, 45, 64, 65, 120) for sex in ("M", "F")]
    for pathology in catalog.pathologies:
        for age, sex in probes:
            if holds(pathology.criteria, set(), leaf_ids, age, sex):
                raise CatalogError(
                    "catalog", pathology.id, "criteria", f"holds with no record at all (age {age}, sex {sex})"
                )


def pathology_set(catalog: Catalog) -> tuple[str, str]:
    """The set of pathologies whose trees hold, as two integers (bit_lo, bit_hi of each): DuckDB SQL text.

    Each word is a sum of ``CASE WHEN <tree> THEN <bit> ELSE 0 END``, one term per pathology in that word.
    """
    places = {leaf.id: mask_place(number) for number, leaf in enumerate(catalog.leaves(), start=1)}
    leaf_ids = leaf_ids_by_rule(catalog)
    words: tuple[list[exp.Expression], list[exp.Expression]] = ([], [])
    for row, pathology in zip(pathology_rows(catalog), catalog.pathologies, strict=True):
        word, bit = (0, row["bit_lo"]) if row["bit_lo"] else (1, row["bit_hi"])
        condition = pathology_condition(pathology.criteria, places, leaf_ids)
        words[word].append(exp.Case().when(condition, exp.Literal.number(bit), copy=False).else_("0", copy=False))
    return _sum_of(words[0]), _sum_of(words[1])


def _sum_of(terms: list[exp.Expression]) -> str:
    if not terms:
        return "CAST(0 AS BIGINT)"
    total = terms[0]
    for term in terms[1:]:
        total = exp.Add(this=total, expression=term)
    return exp.cast(exp.paren(total), exp.DataType.build("BIGINT")).sql(dialect="duckdb")


def age_bounds(catalog: Catalog) -> list[int]:
    """The ages at which some criteria tree can change its answer: each ``min``, and each ``max`` + 1."""
    bounds: set[int] = set()
    for pathology in catalog.pathologies:
        for node in nodes_of(pathology.criteria):
            if isinstance(node, AgeNode):
                bounds.update(b for b in (node.age.min, None if node.age.max is None else node.age.max + 1) if b)
    return sorted(bounds)


def age_class(catalog: Catalog, age: exp.Expression) -> str:
    """The youngest age of the class of ``age`` that every tree treats alike (45 for 45 to 64 when 45 and 65 are
    the bounds), as DuckDB SQL text: the trees are then evaluated once per class of ages, not once per age."""
    bounds = age_bounds(catalog)
    if not bounds:
        return "0"
    case = exp.Case()
    for bound in reversed(bounds):
        condition = exp.GTE(this=age.copy(), expression=exp.Literal.number(bound))
        case = case.when(condition, exp.Literal.number(bound), copy=False)
    return case.else_("0", copy=False).sql(dialect="duckdb")


# ----------------------------------------------------------------------------------------------- pass 4: stages


def pathology_rows(catalog: Catalog) -> tuple[dict[str, Any], ...]:
    """Each pathology with its bit in a resident's two-word set of pathologies (sets are compared as integers)."""
    if len(catalog.pathologies) > 2 * WORD_BITS:
        raise CatalogError("catalog", None, None, f"more than {2 * WORD_BITS} pathologies")
    return tuple(
        {
            "pathology_no": n,
            "pathology_id": p.id,
            "name_it": p.name_it,
            "name_en": p.name_en,
            "priority": p.priority,
            "macro_area": p.macro_area,
            "bit_lo": 1 << (n - 1) if n <= WORD_BITS else 0,
            "bit_hi": 1 << (n - 1 - WORD_BITS) if n > WORD_BITS else 0,
        }
        for n, p in enumerate(catalog.pathologies, start=1)
    )


def exclusion_rows(catalog: Catalog) -> tuple[dict[str, Any], ...]:
    number = {p.id: n for n, p in enumerate(catalog.pathologies, start=1)}
    return tuple(
        {"pathology_no": number[p.id], "excluded_by_no": number[other]}
        for p in catalog.pathologies
        for other in p.excluded_by
    )


def level_cap(catalog: Catalog) -> int:
    """Pathology counts at or above this number all fall in the same level."""
    bounds = [lv.min_pathologies for lv in catalog.header.levels]
    bounds += [lv.max_pathologies + 1 for lv in catalog.header.levels if lv.max_pathologies is not None]
    return max(bounds)


def level_rows(catalog: Catalog) -> tuple[dict[str, Any], ...]:
    """The level rule as a lookup (capped pathology count, uses services) -> level: an equi-join, not a range join.

    Every combination must fall in exactly one level, otherwise the rule is ambiguous or has a hole.
    """
    rows = []
    for count in range(level_cap(catalog) + 1):
        for uses in (True, False):
            matching = [
                lv.level
                for lv in catalog.header.levels
                if lv.min_pathologies <= count <= (lv.max_pathologies if lv.max_pathologies is not None else count)
                and lv.uses_services in (None, uses)
            ]
            if len(matching) != 1 and (uses or count == 0):
                raise CatalogError(
                    "catalog.yaml",
                    None,
                    "levels",
                    f"{len(matching)} levels match {count} pathologies (uses services: {uses})",
                )
            rows.append({"n_key": count, "uses_services": uses, "level": matching[0] if matching else None})
    return tuple(rows)


def param_rows(catalog: Catalog, reference: date) -> tuple[dict[str, Any], ...]:
    use_start = window_start(reference, catalog.header.default_windows_months.service_use)
    return ({"reference_date": reference, "use_start": use_start, "level_cap": level_cap(catalog)},)


def compile_catalog(catalog: Catalog, reference: date, last_record_date: date | None = None) -> Program:
    """The whole pipeline of passes: catalog + reference date -> Program.

    ``last_record_date`` is the store's last record date; when the reference date is on or after it, service use
    is read from the residents' last service date instead of scanning every flow.
    """
    check_anchored(catalog)
    tables = {
        "criteria": criteria_rows(catalog, reference),
        "prefixes": prefix_rows(catalog),
        "pathologies": pathology_rows(catalog),
        "exclusions": exclusion_rows(catalog),
        "levels": level_rows(catalog),
        "params": param_rows(catalog, reference),
    }
    usage_from_store = last_record_date is not None and reference >= last_record_date
    bounds = scan_bounds(tables["criteria"], reference)
    return Program(tables, stages(catalog, usage_from_store, bounds), reference)


def scan_bounds(criteria: tuple[dict[str, Any], ...], reference: date) -> dict[str, str]:
    """Per source flow, the widest window of its rules as SQL date literals.

    They are constants so that DuckDB drops rows outside every window while scanning (and skips row groups whose
    date statistics fall outside), before the join with the code map. Built as literals from dates, not from text.
    """
    bounds = {"reference": _date_literal(reference)}
    for source in CODE_COLUMNS:
        starts = [row["window_start"] for row in criteria if row["source"] == source]
        bounds[source] = _date_literal(min(starts, default=reference))
    return bounds


def _date_literal(day: date) -> str:
    return exp.cast(exp.Literal.string(day.isoformat()), exp.DataType.build("DATE")).sql(dialect="duckdb")


def stages(catalog: Catalog, usage_from_store: bool, bounds: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The named SELECTs. Inputs: the flow tables, codes (observed codes) and the parameter tables."""
    words = range(mask_words(catalog))
    set_lo, set_hi = pathology_set(catalog)

    def masks(table: str) -> str:
        return ", ".join(f"{table}.mask_{w}" for w in words)

    return (
        ("code_map", CODE_MAP),
        ("hits", HITS_TEMPLATE.format(diagnosis_positions=diagnosis_positions(bounds), **bounds)),
        ("outsiders", OUTSIDERS.format(in_population=IN_POPULATION)),
        ("evidence", EVIDENCE),
        (
            "population",
            POPULATION.format(
                recent_use=RECENT_USE_FROM_STORE if usage_from_store else RECENT_USE_BY_SCAN,
                in_population=IN_POPULATION,
            ),
        ),
        (
            "resident_masks",
            RESIDENT_MASKS.format(
                words=",\n       ".join(
                    f"BIT_OR(CASE WHEN c.mask_word = {w} THEN c.mask_bit ELSE 0 END) AS mask_{w}" for w in words
                )
            ),
        ),
        (
            "masked_cases",
            MASKED_CASES.format(masks=masks("m"), age_class=age_class(catalog, exp.column("age", table="pop"))),
        ),
        ("case_sets", CASE_SETS.format(masks=masks("mc"), set_lo=set_lo, set_hi=set_hi)),
        # Scanned only when the store cannot answer; the constant filter leaves an empty table otherwise.
        ("service_users", SERVICE_USERS.format(scan="FALSE" if usage_from_store else "TRUE")),
        ("clusters", CLUSTERS),
        (
            "case_clusters",
            CASE_CLUSTERS.format(
                same_case=" AND ".join(
                    [f"s.mask_{w} = mc.mask_{w}" for w in words] + ["s.age = mc.age_class", "s.sex = mc.sex"]
                )
            ),
        ),
        ("stratified", STRATIFIED),
        ("cluster_table", CLUSTER_TABLE),
    )


# Prefixes expanded against the codes actually observed: the big scans then equi-join a table of a few thousand rows.
CODE_MAP = """
SELECT DISTINCT p.table_name, c.code, p.criterion_no, cr.window_start, cr.window_end, cr.main_only
FROM prefixes AS p
JOIN (SELECT DISTINCT table_name, code FROM codes) AS c
  ON c.table_name = p.table_name
 AND SUBSTRING(c.code, 1, LENGTH(p.prefix)) = p.prefix
JOIN criteria AS cr ON cr.criterion_no = p.criterion_no
"""

# DDD are summed as exact decimals (to a millionth): a sum of doubles depends on the order the rows arrive in, which
# differs between engines and between runs with other thread counts, and a threshold could flip on the last bit.
HITS_TEMPLATE = """
SELECT x.resident_key, m.criterion_no, COUNT(*) AS n_records,
       CAST(SUM(CAST(x.ddd AS DECIMAL(18, 6))) AS DOUBLE) AS ddd,
       MIN(x.dispensing_date) AS first_date, MAX(x.dispensing_date) AS last_date
FROM prescriptions AS x
JOIN code_map AS m ON m.table_name = 'prescriptions' AND m.code = x.atc
WHERE x.dispensing_date BETWEEN {prescriptions} AND {reference}
  AND x.dispensing_date BETWEEN m.window_start AND m.window_end
GROUP BY x.resident_key, m.criterion_no
UNION ALL
SELECT x.resident_key, m.criterion_no, COUNT(*), CAST(NULL AS DOUBLE), MIN(x.service_date), MAX(x.service_date)
FROM outpatient AS x
JOIN code_map AS m ON m.table_name = 'outpatient' AND m.code = x.service_code
WHERE x.service_date BETWEEN {outpatient} AND {reference}
  AND x.service_date BETWEEN m.window_start AND m.window_end
GROUP BY x.resident_key, m.criterion_no
UNION ALL
SELECT x.resident_key, m.criterion_no, COUNT(*), CAST(NULL AS DOUBLE), MIN(x.start_date),
       MAX(COALESCE(x.end_date, m.window_end))
FROM exemptions AS x
JOIN code_map AS m ON m.table_name = 'exemptions' AND m.code = x.exemption_code
WHERE x.start_date <= {reference} AND (x.end_date IS NULL OR x.end_date >= {exemptions})
  AND x.start_date <= m.window_end AND (x.end_date IS NULL OR x.end_date >= m.window_start)
GROUP BY x.resident_key, m.criterion_no
UNION ALL
SELECT d.resident_key, d.criterion_no, COUNT(*), CAST(NULL AS DOUBLE), MIN(d.discharge_date), MAX(d.discharge_date)
FROM (
  SELECT DISTINCT x.resident_key, m.criterion_no, x.discharge_date, x.source_file, x.source_line
  FROM (
{diagnosis_positions}) AS x
  JOIN code_map AS m ON m.table_name = 'discharges' AND m.code = x.diagnosis AND (x.is_main OR NOT m.main_only)
  WHERE x.discharge_date BETWEEN m.window_start AND m.window_end
) AS d
GROUP BY d.resident_key, d.criterion_no
"""


def diagnosis_positions(bounds: dict[str, str]) -> str:
    """The discharges' diagnoses one per row, each with whether it is the main one: one join with the code map
    instead of one per position. DISTINCT on the discharge's location (above) counts a discharge once however
    many of its positions match."""
    blocks = [
        f"    SELECT resident_key, discharge_date, source_file, source_line, {column} AS diagnosis, "
        f"{'TRUE' if column == 'dx_main' else 'FALSE'} AS is_main\n"
        "    FROM discharges\n"
        f"    WHERE {column} IS NOT NULL AND discharge_date BETWEEN {bounds['discharges']} AND {bounds['reference']}\n"
        for column in CODE_COLUMNS["discharges"]
    ]
    return "    UNION ALL\n".join(blocks)


# Residents the flows know but the population leaves out at the reference date (not yet registered or born, or
# dead): few, so the evidence drops them with a small anti-join instead of joining the whole population.
OUTSIDERS = """
SELECT r.resident_key
FROM residents AS r
CROSS JOIN params AS p
WHERE NOT {in_population}
"""

# The rules whose threshold was met, per resident of the population: the run's evidence file, which every later
# stage reads instead of the flows. Whether its pathology was assigned is read off the resident's cluster.
EVIDENCE = """
SELECT h.resident_key, h.criterion_no, h.n_records, h.ddd, h.first_date, h.last_date
FROM hits AS h
JOIN criteria AS c ON c.criterion_no = h.criterion_no
LEFT JOIN outsiders AS o ON o.resident_key = h.resident_key
WHERE h.n_records >= c.min_count AND (c.min_ddd IS NULL OR h.ddd >= c.min_ddd) AND o.resident_key IS NULL
"""

# Age in whole years from the calendar years and the birthday: DuckDB's DATE_DIFF('year') counts year boundaries
# but Spark's counts whole years, so the portable form spells the rule out.
POPULATION = """
SELECT r.resident_key, r.sex,
       CAST(YEAR(p.reference_date) - YEAR(r.birth_date)
            - CASE WHEN MONTH(r.birth_date) * 100 + DAY(r.birth_date)
                        > MONTH(p.reference_date) * 100 + DAY(p.reference_date) THEN 1 ELSE 0 END AS INTEGER) AS age,
       {recent_use} AS recent_use
FROM residents AS r
CROSS JOIN params AS p
WHERE {in_population}
"""

# Who belongs to the population at the reference date: registered, born, alive.
IN_POPULATION = (
    "(r.registration_date <= p.reference_date AND (r.death_date IS NULL OR r.death_date > p.reference_date) "
    "AND r.birth_date <= p.reference_date)"
)

# Any record in the service-use window tells occasional users (level 4) from non-users (level 5). When the
# reference date is on or after the store's last record, the last service date the loader kept per resident
# answers exactly; otherwise every flow is scanned (SERVICE_USERS).
RECENT_USE_FROM_STORE = "COALESCE(r.last_service_date >= p.use_start, FALSE)"
RECENT_USE_BY_SCAN = "CAST(NULL AS BOOLEAN)"

# Each resident's fired rules as one bitmask over the whole catalog, in a few 64-bit words.
RESIDENT_MASKS = """
SELECT e.resident_key,
       {words}
FROM evidence AS e
JOIN criteria AS c ON c.criterion_no = e.criterion_no
GROUP BY e.resident_key
"""

# The residents with a fired rule, with what the criteria trees test besides the masks: sex and the class of the
# age. The population is joined twice (here and in STRATIFIED), each time with the residents who have a fired rule
# only, a third of it: as fast at 10 M as storing the whole population with its masks, and a fifth less memory.
MASKED_CASES = """
SELECT m.resident_key, pop.sex, {age_class} AS age_class, {masks}
FROM resident_masks AS m
JOIN population AS pop ON pop.resident_key = m.resident_key
"""

# The criteria trees are evaluated once per distinct case (masks, age class, sex): about 200,000 for 3 million
# residents with a fired rule. The trees read the class's youngest age as ``age``, which they answer alike for
# every age of the class. The set of pathologies whose trees hold is two integers: cheap to join on.
CASE_SETS = """
SELECT d.*, {set_lo} AS set_lo, {set_hi} AS set_hi
FROM (SELECT DISTINCT {masks}, mc.age_class AS age, mc.sex FROM masked_cases AS mc) AS d
"""

SERVICE_USERS = """
SELECT DISTINCT u.resident_key
FROM (
  SELECT x.resident_key FROM prescriptions AS x CROSS JOIN params AS p
  WHERE x.dispensing_date BETWEEN p.use_start AND p.reference_date
  UNION ALL
  SELECT x.resident_key FROM outpatient AS x CROSS JOIN params AS p
  WHERE x.service_date BETWEEN p.use_start AND p.reference_date
  UNION ALL
  SELECT x.resident_key FROM discharges AS x CROSS JOIN params AS p
  WHERE x.discharge_date BETWEEN p.use_start AND p.reference_date
  UNION ALL
  SELECT x.resident_key FROM er_visits AS x CROSS JOIN params AS p
  WHERE x.visit_date BETWEEN p.use_start AND p.reference_date
) AS u
WHERE {scan}
"""

# Exclusions and labels are worked out once per distinct set (tens of thousands), not per resident (millions):
# the members of a set that no other member excludes are the resident's pathologies.
CLUSTERS = """
WITH sets AS (SELECT DISTINCT set_lo, set_hi FROM case_sets WHERE set_lo <> 0 OR set_hi <> 0),
members AS (
  SELECT s.set_lo, s.set_hi, pa.pathology_no, pa.pathology_id, pa.priority, pa.bit_lo, pa.bit_hi
  FROM sets AS s
  JOIN pathologies AS pa ON (s.set_lo & pa.bit_lo) <> 0 OR (s.set_hi & pa.bit_hi) <> 0
),
excluded AS (
  SELECT DISTINCT m.set_lo, m.set_hi, e.pathology_no
  FROM members AS m
  JOIN exclusions AS e ON e.excluded_by_no = m.pathology_no
),
kept AS (
  SELECT m.*
  FROM members AS m
  LEFT JOIN excluded AS x ON x.set_lo = m.set_lo AND x.set_hi = m.set_hi AND x.pathology_no = m.pathology_no
  WHERE x.pathology_no IS NULL
),
labelled AS (
  SELECT k.set_lo, k.set_hi, CAST(SUM(k.bit_lo) AS BIGINT) AS assigned_lo, CAST(SUM(k.bit_hi) AS BIGINT) AS assigned_hi,
         CAST(COUNT(*) AS INTEGER) AS n_pathologies,
         STRING_SPLIT(STRING_AGG(k.pathology_id, ',' ORDER BY k.priority, k.pathology_id), ',') AS pathologies,
         ARG_MIN(k.pathology_id, k.priority) AS main_pathology,
         STRING_AGG(k.pathology_id, ' + ' ORDER BY k.priority, k.pathology_id) AS cluster
  FROM kept AS k
  GROUP BY k.set_lo, k.set_hi
)
SELECT CAST(DENSE_RANK() OVER (ORDER BY l.cluster) AS INTEGER) AS cluster_no, l.*
FROM labelled AS l
"""

# Each resident with a pathology and their cluster (residents whose rules make no pathology have none).
CASE_CLUSTERS = """
SELECT mc.resident_key, c.cluster_no, c.n_pathologies
FROM masked_cases AS mc
JOIN case_sets AS s ON {same_case}
JOIN clusters AS c ON c.set_lo = s.set_lo AND c.set_hi = s.set_hi
"""

STRATIFIED = """
SELECT pop.resident_key, CAST(pop.age AS SMALLINT) AS age,
       CAST(COALESCE(cc.n_pathologies, 0) AS SMALLINT) AS n_pathologies, cc.cluster_no,
       (cc.cluster_no IS NOT NULL OR COALESCE(pop.recent_use, su.resident_key IS NOT NULL)) AS uses_services,
       CAST(l.level AS SMALLINT) AS level
FROM population AS pop
CROSS JOIN params AS p
LEFT JOIN case_clusters AS cc ON cc.resident_key = pop.resident_key
LEFT JOIN service_users AS su ON su.resident_key = pop.resident_key
JOIN levels AS l
  ON l.n_key = LEAST(COALESCE(cc.n_pathologies, 0), p.level_cap)
 AND l.uses_services = (cc.cluster_no IS NOT NULL OR COALESCE(pop.recent_use, su.resident_key IS NOT NULL))
"""

CLUSTER_TABLE = """
SELECT DISTINCT cluster_no, assigned_lo AS set_lo, assigned_hi AS set_hi, n_pathologies, pathologies,
       main_pathology, cluster
FROM clusters
"""
