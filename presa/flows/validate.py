"""The validation of one flow table, generated as DuckDB SQL from its schema (pure: text in, text out).

A table's rows pass through named relations, each a SELECT over the one before:

1. ``<t>_source``: what the reader gives (see load.py): the schema's columns as shipped, plus ``source_file``,
   ``source_line``, ``row_order`` and, for text files, ``field_fault`` (a line with the wrong number of fields);
2. ``<t>_cleaned``: text values trimmed and empty strings made NULL, codes normalised; typed Parquet columns as is;
3. ``<t>_typed``: every column in its output type plus one ``fault_<column>`` per column (a reason, or NULL);
4. ``<t>_checked``: the first fault of each row (column, value as shipped, reason), then the cross-column checks,
   the resident's existence, birth and death; ``row_hash`` over the typed values, for duplicates.

``<t>_checked`` is the only pass over the shipped files: load.py writes it once to ``<t>_stage``. From the stage,
``<t>_dup_first`` finds the first row of every repeated hash and ``<t>_final`` adds the duplicates' reason. Every
fault is data: no row raises, every row ends accepted or rejected.
"""

from __future__ import annotations

from datetime import date

from presa.flows.schema import ColumnSpec, TableSpec

NUMERIC_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
DATE_TYPES = {"DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"}
OUTPUT_TYPES = {"id": "VARCHAR", "code": "VARCHAR", "enum": "VARCHAR", "date": "DATE", "integer": "BIGINT"}
ID_PATTERN = "^[A-Za-z0-9_-]{1,32}$"
MALFORMED_ID = "malformed id (1-32 of A-Z a-z 0-9 _ -)"
ISO_DATE_TEXT = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
INTEGER_TEXT = "^[+-]?[0-9]+$"
DECIMAL_TEXT = "^[+-]?[0-9]+([.,][0-9]+)?$"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def codelist_table(name: str) -> str:
    """The temporary table holding a code list's codes in the form the flows store them."""
    return f"codelist_{name}"


def output_type(column: ColumnSpec) -> str:
    return OUTPUT_TYPES.get(column.type, "DOUBLE")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _is_native(column: ColumnSpec, source_type: str) -> bool:
    """Whether a Parquet column already has the column's type (then it is taken as is, not parsed from text)."""
    if column.type == "date":
        return source_type in DATE_TYPES
    if column.type in ("integer", "decimal"):
        return source_type in NUMERIC_TYPES | FLOAT_TYPES
    return False


def cleaned_expression(column: ColumnSpec, source_type: str) -> str:
    """The value made comparable: trimmed text with '' as NULL, codes upper case; native dates and numbers kept."""
    col = ident(column.name)
    if _is_native(column, source_type):
        return f"CAST({col} AS DATE)" if column.type == "date" else col
    text = f"NULLIF(TRIM(CAST({col} AS VARCHAR)), '')"
    if column.type in ("code", "enum"):
        text = f"UPPER({text})"
    if column.normalise == "strip_dots":
        text = f"REPLACE({text}, '.', '')"
    return text


def typed_expression(column: ColumnSpec, source_type: str, value: str) -> str:
    """``value`` (the cleaned expression) in the column's output type, NULL when it cannot be read as one."""
    native = _is_native(column, source_type)
    if column.type == "date":
        if native:
            return value
        # Rebuilt as ISO text and cast: several times faster than strptime, and as strict (31/02 is no date).
        day_first = f"substr({value}, 7, 4) || '-' || substr({value}, 4, 2) || '-' || substr({value}, 1, 2)"
        return (
            f"CASE WHEN {value} LIKE '__/__/____' THEN TRY_CAST({day_first} AS DATE) "
            f"WHEN regexp_full_match({value}, '{ISO_DATE_TEXT}') THEN TRY_CAST({value} AS DATE) END"
        )
    if column.type == "integer":
        if source_type in FLOAT_TYPES:
            return f"CASE WHEN {value} = TRUNC({value}) THEN CAST({value} AS BIGINT) END"
        if native:
            return f"CAST({value} AS BIGINT)"
        return f"CASE WHEN regexp_full_match({value}, '{INTEGER_TEXT}') THEN TRY_CAST({value} AS BIGINT) END"
    if column.type == "decimal":
        if native:
            return f"CAST({value} AS DOUBLE)"
        return (
            f"CASE WHEN regexp_full_match({value}, '{DECIMAL_TEXT}') "
            f"THEN TRY_CAST(REPLACE({value}, ',', '.') AS DOUBLE) END"
        )
    return value


def fault_expression(column: ColumnSpec, min_date: date, max_date: date) -> str:
    """A CASE giving the reason the column's value is unacceptable, or NULL; over ``<t>_typed``'s inputs.

    ``c`` is the cleaned value and ``t`` the typed one, both named after the column (``clean_x``, ``x``).
    """
    c, t = ident(f"clean_{column.name}"), ident(column.name)
    branches: list[tuple[str, str]] = []
    if column.required:
        branches.append((f"{c} IS NULL", "missing required value"))
    if column.type == "id":
        # A reference is checked only when no resident matches it (_resident_faults): a known id is well formed.
        if not column.references:
            branches.append((f"NOT regexp_full_match({c}, '{ID_PATTERN}')", MALFORMED_ID))
    elif column.type == "date":
        branches += [
            (f"{t} IS NULL", "not a valid date (YYYY-MM-DD or DD/MM/YYYY)"),
            (f"{t} < DATE '{min_date.isoformat()}'", f"date before {min_date.isoformat()}"),
        ]
        if not column.may_be_future:
            branches.append(
                (f"{t} > DATE '{max_date.isoformat()}'", f"date after {max_date.isoformat()} (in the future)")
            )
    elif column.type == "code":
        if column.pattern:
            reason = f"malformed code (pattern {column.pattern})"
            branches.append((f"NOT regexp_full_match({c}, {literal(column.pattern)})", reason))
        if column.codelist:
            table = codelist_table(column.codelist)
            branches.append((f"{c} NOT IN (SELECT code FROM {table})", f"not a code of {column.codelist}"))
    elif column.type == "enum":
        assert column.values is not None
        allowed = ", ".join(literal(v) for v in column.values)
        branches.append((f"{c} NOT IN ({allowed})", f"not one of {', '.join(column.values)}"))
    else:
        kind = "a whole number" if column.type == "integer" else "a number"
        branches.append((f"{t} IS NULL", f"not {kind}"))
        low = _number(column.min) if column.min is not None else None
        high = _number(column.max) if column.max is not None else None
        if low is not None or high is not None:
            bounds = (
                " AND ".join([*([f"{t} >= {low}"] if low else []), *([f"{t} <= {high}"] if high else [])]) or "TRUE"
            )
            branches.append((f"NOT ({bounds})", f"out of range [{low or '-inf'}, {high or 'inf'}]"))
    guarded = [(cond, reason) for cond, reason in branches if reason == "missing required value"]
    present = [(f"{c} IS NOT NULL AND ({cond})", reason) for cond, reason in branches if (cond, reason) not in guarded]
    whens = " ".join(f"WHEN {cond} THEN {literal(reason)}" for cond, reason in [*guarded, *present])
    return f"CASE {whens} END" if whens else "CAST(NULL AS VARCHAR)"


def table_sql(
    table: TableSpec,
    source_types: dict[str, str],
    min_date: date,
    max_date: date,
) -> dict[str, str]:
    """The named relations that validate ``table`` (see the module docstring), as {name: SELECT}."""
    t = table.name
    cleaned = ", ".join(
        f"{cleaned_expression(c, source_types[c.name])} AS {ident('clean_' + c.name)}" for c in table.columns
    )
    # The value as shipped, kept under another name; it is cast to text only for the rows that report it.
    raw = ", ".join(f"{ident(c.name)} AS {ident('raw_' + c.name)}" for c in table.columns)
    typed_values = ", ".join(
        f"CAST({typed_expression(c, source_types[c.name], ident('clean_' + c.name))} AS {output_type(c)}) "
        f"AS {ident(c.name)}"
        for c in table.columns
    )
    faults = ", ".join(
        f"{fault_expression(c, min_date, max_date)} AS {ident('fault_' + c.name)}" for c in table.columns
    )
    return {
        f"{t}_cleaned": (
            f"SELECT source_file, source_line, row_order, field_fault, line_text, {cleaned}, {raw} FROM {t}_source"
        ),
        f"{t}_typed_values": f"SELECT *, {typed_values} FROM {t}_cleaned",
        f"{t}_typed": f"SELECT *, {faults} FROM {t}_typed_values",
        f"{t}_checked": _checked_sql(table),
    }


def _as_text(column: str) -> str:
    return f"CAST({ident(column)} AS VARCHAR)"


def _first_fault(table: TableSpec) -> tuple[str, str, str]:
    """CASE expressions for the first faulty column of a row: its name, its value as shipped and the reason."""
    columns = [c.name for c in table.columns]
    name = " ".join(f"WHEN {ident('fault_' + c)} IS NOT NULL THEN {literal(c)}" for c in columns)
    value = " ".join(f"WHEN {ident('fault_' + c)} IS NOT NULL THEN {_as_text('raw_' + c)}" for c in columns)
    reason = ", ".join(ident("fault_" + c) for c in columns)
    return f"CASE {name} END", f"CASE {value} END", f"COALESCE({reason})"


def _check_faults(table: TableSpec) -> list[tuple[str, str, str]]:
    """(condition, column, reason) for the cross-column checks, on rows whose columns are each acceptable."""
    return [
        (
            f"{ident(check.column)} < {ident(check.other)}",
            check.column,
            f"{check.column} is before {check.other}",
        )
        for check in table.checks
    ]


def _resident_faults(table: TableSpec) -> list[tuple[str, str, str]]:
    if not any(c.references == "residents" for c in table.columns):
        return []
    malformed = f"r.resident_key IS NULL AND NOT regexp_full_match(v.clean_resident_id, '{ID_PATTERN}')"
    faults = [
        (malformed, "resident_id", MALFORMED_ID),
        ("r.resident_key IS NULL", "resident_id", "unknown resident (not among the accepted residents)"),
    ]
    if table.date_column:
        day = ident(table.date_column)
        faults += [
            (f"{day} < r.birth_date", table.date_column, "dated before the resident's birth"),
            (f"{day} > r.death_date", table.date_column, "dated after the resident's death"),
        ]
    return faults


def _checked_sql(table: TableSpec) -> str:
    t = table.name
    column_name, column_value, column_reason = _first_fault(table)
    row_faults = _check_faults(table) + _resident_faults(table)
    name_cases = " ".join(f"WHEN {cond} THEN {literal(col)}" for cond, col, _ in row_faults)
    value_cases = " ".join(f"WHEN {cond} THEN {_as_text('raw_' + col)}" for cond, col, _ in row_faults)
    reason_cases = " ".join(f"WHEN {cond} THEN {literal(reason)}" for cond, _, reason in row_faults)
    references = any(c.references == "residents" for c in table.columns)
    key = "r.resident_key" if references else "CAST(NULL AS BIGINT)"
    join = "LEFT JOIN residents_accepted r ON r.resident_id = v.resident_id" if references else ""
    data_columns = [ident(c.name) for c in table.columns if c.references != "residents"]
    hash_columns = ", ".join([*(["r.resident_key"] if references else []), *(f"v.{c}" for c in data_columns)])

    def first(field_expr: str, column_expr: str, row_expr: str) -> str:
        # Order of precedence: a line that could not be split, a bad column, then the row's checks.
        row = f"CASE {row_expr} END" if row_faults else "NULL"
        return (
            f"CASE WHEN field_fault IS NOT NULL THEN {field_expr} "
            f"WHEN {column_reason} IS NOT NULL THEN {column_expr} ELSE {row} END"
        )

    return (
        f"SELECT {', '.join('v.' + ident(c.name) for c in table.columns)}, {key} AS resident_key, "
        f"v.source_file, v.source_line, v.row_order, hash({hash_columns}) AS row_hash, "
        f"{_as_text('raw_' + table.unique) if table.unique else 'CAST(NULL AS VARCHAR)'} AS raw_key, "
        f"{first('NULL', column_name, name_cases)} AS reject_column, "
        f"{first('line_text', column_value, value_cases)} AS reject_value, "
        f"{first('field_fault', column_reason, reason_cases)} AS reject_reason "
        f"FROM {t}_typed v {join}"
    )


def duplicate_sql(table: TableSpec) -> str:
    """The first row (in file and line order) of every row hash seen more than once among acceptable rows.

    Read from ``<t>_stage`` (the checked rows, written once). A later row is a duplicate when its hash matches and
    every value equals the first row's, so a 64-bit hash collision between different rows rejects nothing.
    """
    values = ", ".join(f"arg_min({v}, row_order) AS {v}" for v in _value_columns(table))
    return (
        f"SELECT row_hash, {values}, MIN(row_order) AS first_order, arg_min(source_file, row_order) AS first_file, "
        f"arg_min(source_line, row_order) AS first_line FROM {table.name}_stage "
        f"WHERE reject_reason IS NULL AND row_hash IN (SELECT row_hash FROM {table.name}_stage "
        f"WHERE reject_reason IS NULL GROUP BY row_hash HAVING COUNT(*) > 1) GROUP BY row_hash"
    )


def _value_columns(table: TableSpec) -> list[str]:
    references = any(c.references == "residents" for c in table.columns)
    return [*(["resident_key"] if references else []), *(ident(c.name) for c in table.columns if not c.references)]


def final_sql(table: TableSpec) -> str:
    """Every staged row once, with its reject reason (NULL when accepted), duplicates and repeated keys included."""
    t = table.name
    same = " AND ".join(f"c.{v} IS NOT DISTINCT FROM d.{v}" for v in _value_columns(table))
    # (condition, column, value, reason) of the faults found only by comparing rows, after each row's own.
    cases = [
        (
            f"d.first_order IS NOT NULL AND c.row_order > d.first_order AND {same}",
            "NULL",
            "NULL",
            "'exact duplicate of ' || d.first_file || ' line ' || d.first_line",
        )
    ]
    key_join = ""
    if table.unique:
        key = ident(table.unique)
        key_join = f"LEFT JOIN {t}_key_first k ON k.{key} = c.{key}"
        cases.append(
            (
                "k.first_order IS NOT NULL AND c.row_order > k.first_order",
                literal(table.unique),
                "c.raw_key",
                f"'duplicate {table.unique}, first at ' || k.first_file || ' line ' || k.first_line",
            )
        )

    def pick(part: int, own: str) -> str:
        whens = " ".join(f"WHEN {case[0]} THEN {case[part]}" for case in cases)
        return f"CASE WHEN c.reject_reason IS NOT NULL THEN c.{own} {whens} END AS {own}"

    return (
        f"SELECT c.* EXCLUDE (reject_column, reject_value, reject_reason), {pick(1, 'reject_column')}, "
        f"{pick(2, 'reject_value')}, {pick(3, 'reject_reason')} "
        f"FROM {t}_stage c LEFT JOIN {t}_dup_first d ON c.row_hash = d.row_hash {key_join}"
    )


def key_first_sql(table: TableSpec) -> str:
    """For a table with a unique key: the first acceptable row of every key seen more than once."""
    assert table.unique is not None
    key = ident(table.unique)
    return (
        f"SELECT {key}, MIN(row_order) AS first_order, arg_min(source_file, row_order) AS first_file, "
        f"arg_min(source_line, row_order) AS first_line FROM {table.name}_stage "
        f"WHERE reject_reason IS NULL GROUP BY {key} HAVING COUNT(*) > 1"
    )
