"""What changed between two runs A and B: another catalog version, another reference date, corrected flows.

``diff_runs`` joins the two runs' residents on resident_id (on the store's integer key when both runs read the
same validated store, where the key names the same resident) and returns a :class:`RunDiff`: residents per level
transition (A level -> B level, with "not in A" and "not in B" for residents of one run only), per pathology the
residents who gained or lost it, and how many residents changed level or set of pathologies. The changed residents
themselves go, when asked, to a Parquet file (resident_id, level_a, level_b, gained, lost).

Counting rules, so that the figures add up: ``gained`` and ``lost`` count residents present in both runs;
``entering`` and ``leaving`` count residents present in one run only (born, moved in, died, moved out, or a
different population rule). For every pathology, residents_b - residents_a = gained - lost + entering - leaving.
In the file, a resident of one run only has as gained (or lost) all the pathologies of the run they are in.

``render_diff`` prints the result with rich, in Italian.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from presa.stratify.runview import create_run_views, flows_of
from presa.stratify.summary import RunInfo, it_date, it_int, level_names, read_run_info


@dataclass(frozen=True)
class RunLabel:
    """Which run a side of the comparison is."""

    root: Path
    catalog_version: str
    catalog_digest: str
    reference_date: date
    population: int


@dataclass(frozen=True)
class LevelTransition:
    """Residents at ``level_a`` in A and ``level_b`` in B; None on the side of the run they are missing from."""

    level_a: int | None
    level_b: int | None
    residents: int


@dataclass(frozen=True)
class PathologyChange:
    pathology_id: str
    name_it: str
    residents_a: int
    residents_b: int
    gained: int
    lost: int
    entering: int
    leaving: int


@dataclass(frozen=True)
class RunDiff:
    a: RunLabel
    b: RunLabel
    in_both: int
    only_in_a: int
    only_in_b: int
    level_changed: int
    pathologies_changed: int
    changed_residents: int
    transitions: tuple[LevelTransition, ...]
    pathologies: tuple[PathologyChange, ...]
    level_names: dict[int, str]
    changed_file: Path | None

    def transition(self, level_a: int | None, level_b: int | None) -> int:
        """Residents going from ``level_a`` to ``level_b`` (0 when none)."""
        for t in self.transitions:
            if (t.level_a, t.level_b) == (level_a, level_b):
                return t.residents
        return 0

    def pathology(self, pathology_id: str) -> PathologyChange:
        for p in self.pathologies:
            if p.pathology_id == pathology_id:
                return p
        raise KeyError(pathology_id)

    @property
    def levels(self) -> list[int]:
        found = {t.level_a for t in self.transitions} | {t.level_b for t in self.transitions}
        return sorted({level for level in found if level is not None} | self.level_names.keys())


# ------------------------------------------------------------------------------------------------------ comparing


def diff_runs(run_a: Path, run_b: Path, changed_file: Path | None = None) -> RunDiff:
    """Compare run B with run A; with ``changed_file``, write the residents whose level or pathologies changed."""
    info_a, info_b = read_run_info(run_a), read_run_info(run_b)
    by_key = same_store(info_a, info_b)
    con = duckdb.connect()
    try:
        load_side(con, info_a, "side_a", by_key)
        load_side(con, info_b, "side_b", by_key)
        pair_residents(con)
        pair_changes(con)
        counts = side_counts(con)
        if changed_file is not None:
            write_changed_residents(con, changed_file, by_key)
        return RunDiff(
            a=run_label(con, info_a, "side_a"),
            b=run_label(con, info_b, "side_b"),
            in_both=counts["in_both"],
            only_in_a=counts["only_in_a"],
            only_in_b=counts["only_in_b"],
            level_changed=counts["level_changed"],
            pathologies_changed=counts["pathologies_changed"],
            changed_residents=counts["changed"],
            transitions=level_transitions(con),
            pathologies=pathology_changes(con),
            level_names={**level_names(info_a), **level_names(info_b)},
            changed_file=changed_file,
        )
    finally:
        con.close()


def same_store(info_a: RunInfo, info_b: RunInfo) -> bool:
    """Whether both runs read one validated store, whose integer keys then name the same residents in both."""
    return flows_of(info_a.paths).table("residents").resolve() == flows_of(info_b.paths).table("residents").resolve()


def load_side(con: duckdb.DuckDBPyConnection, info: RunInfo, side: str, by_key: bool) -> None:
    """One run's residents (``resident``: the store's key when ``by_key``, else the pseudonymous id; level; cluster
    number), its clusters' sorted pathology ids and its pathology names, as temp tables of ``side``. A resident's
    pathologies are their cluster's, so they are compared per cluster."""
    create_run_views(con, info.paths)
    residents = (
        "SELECT resident_key AS resident, level, cluster_no FROM run_residents"
        if by_key
        else "SELECT r.resident_id AS resident, s.level, s.cluster_no "
        "FROM run_residents AS s JOIN flow_residents AS r ON r.resident_key = s.resident_key"
    )
    con.execute(f"CREATE TEMP TABLE {side} AS {residents}")
    con.execute(
        f"CREATE TEMP TABLE {side}_sets AS SELECT DISTINCT cluster_no, LIST_SORT(pathologies) AS pathologies "
        "FROM clusters"
    )
    con.execute(f"CREATE TEMP TABLE {side}_names AS SELECT pathology_id, name_it FROM pathologies")


def pair_residents(con: duckdb.DuckDBPyConnection) -> None:
    """Residents of either run counted per (in A, in B, level in A, level in B, cluster in A, cluster in B), with
    both clusters' pathologies (a missing side, or no cluster, counts as no pathology): the residents are joined
    once and every figure is then read off a table of a few hundred thousand rows, not millions."""
    con.execute(
        """
        CREATE TEMP TABLE pairs AS
        WITH joined AS (
          SELECT a.resident IS NOT NULL AS in_a, b.resident IS NOT NULL AS in_b,
                 a.level AS level_a, b.level AS level_b, a.cluster_no AS cluster_a, b.cluster_no AS cluster_b
          FROM side_a AS a
          FULL OUTER JOIN side_b AS b ON b.resident = a.resident
        ),
        counted AS (SELECT *, COUNT(*) AS residents FROM joined GROUP BY ALL)
        SELECT c.*, COALESCE(sa.pathologies, []::VARCHAR[]) AS pathologies_a,
               COALESCE(sb.pathologies, []::VARCHAR[]) AS pathologies_b
        FROM counted AS c
        LEFT JOIN side_a_sets AS sa ON sa.cluster_no = c.cluster_a
        LEFT JOIN side_b_sets AS sb ON sb.cluster_no = c.cluster_b
        """
    )


def pair_changes(con: duckdb.DuckDBPyConnection) -> None:
    """Each pathology gained or lost, per pair of clusters whose pathologies differ, with its residents."""
    con.execute(
        """
        CREATE TEMP TABLE changes AS
        WITH changed AS (SELECT * FROM pairs WHERE pathologies_a <> pathologies_b),
        gained AS (
          SELECT cluster_a, cluster_b, in_a, in_b, residents, p AS pathology_id, 'gained' AS change
          FROM (SELECT *, UNNEST(pathologies_b) AS p FROM changed)
          WHERE NOT LIST_CONTAINS(pathologies_a, p)
        ),
        lost AS (
          SELECT cluster_a, cluster_b, in_a, in_b, residents, p AS pathology_id, 'lost' AS change
          FROM (SELECT *, UNNEST(pathologies_a) AS p FROM changed)
          WHERE NOT LIST_CONTAINS(pathologies_b, p)
        )
        SELECT * FROM gained UNION ALL SELECT * FROM lost
        """
    )


def side_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    result = con.execute(
        """
        SELECT SUM(residents) FILTER (in_a AND in_b) AS in_both,
               SUM(residents) FILTER (in_a AND NOT in_b) AS only_in_a,
               SUM(residents) FILTER (in_b AND NOT in_a) AS only_in_b,
               SUM(residents) FILTER (in_a AND in_b AND level_a <> level_b) AS level_changed,
               SUM(residents) FILTER (in_a AND in_b AND pathologies_a <> pathologies_b) AS pathologies_changed,
               SUM(residents) FILTER (NOT (in_a AND in_b) OR level_a <> level_b OR pathologies_a <> pathologies_b)
                 AS changed
        FROM pairs
        """
    )
    names = [d[0] for d in result.description or []]
    row = result.fetchone() or tuple(None for _ in names)
    return {name: int(value or 0) for name, value in zip(names, row, strict=True)}


def run_label(con: duckdb.DuckDBPyConnection, info: RunInfo, side: str) -> RunLabel:
    [(population,)] = con.execute(f"SELECT COUNT(*) FROM {side}").fetchall()
    return RunLabel(
        root=info.paths.root,
        catalog_version=info.catalog_version,
        catalog_digest=info.catalog_digest,
        reference_date=info.reference_date,
        population=int(population),
    )


def level_transitions(con: duckdb.DuckDBPyConnection) -> tuple[LevelTransition, ...]:
    rows = con.execute(
        "SELECT level_a, level_b, SUM(residents) FROM pairs GROUP BY ALL "
        "ORDER BY level_a NULLS LAST, level_b NULLS LAST"
    ).fetchall()
    return tuple(LevelTransition(_level(a), _level(b), int(n)) for a, b, n in rows)


def _level(value: Any) -> int | None:
    return None if value is None else int(value)


def pathology_changes(con: duckdb.DuckDBPyConnection) -> tuple[PathologyChange, ...]:
    """Every pathology of either catalog, the most changed first."""
    rows = con.execute(
        """
        WITH ids AS (SELECT pathology_id FROM side_a_names UNION SELECT pathology_id FROM side_b_names),
        count_a AS (
          SELECT p AS pathology_id, SUM(residents) AS n
          FROM (SELECT UNNEST(pathologies_a) AS p, residents FROM pairs) GROUP BY p
        ),
        count_b AS (
          SELECT p AS pathology_id, SUM(residents) AS n
          FROM (SELECT UNNEST(pathologies_b) AS p, residents FROM pairs) GROUP BY p
        ),
        moves AS (
          SELECT pathology_id,
                 SUM(residents) FILTER (change = 'gained' AND in_a AND in_b) AS gained,
                 SUM(residents) FILTER (change = 'lost' AND in_a AND in_b) AS lost,
                 SUM(residents) FILTER (change = 'gained' AND NOT in_a) AS entering,
                 SUM(residents) FILTER (change = 'lost' AND NOT in_b) AS leaving
          FROM changes GROUP BY pathology_id
        )
        SELECT ids.pathology_id, COALESCE(nb.name_it, na.name_it, ids.pathology_id),
               COALESCE(ca.n, 0), COALESCE(cb.n, 0), COALESCE(m.gained, 0), COALESCE(m.lost, 0),
               COALESCE(m.entering, 0), COALESCE(m.leaving, 0)
        FROM ids
        LEFT JOIN side_a_names AS na USING (pathology_id)
        LEFT JOIN side_b_names AS nb USING (pathology_id)
        LEFT JOIN count_a AS ca USING (pathology_id)
        LEFT JOIN count_b AS cb USING (pathology_id)
        LEFT JOIN moves AS m USING (pathology_id)
        """
    ).fetchall()
    changes = [PathologyChange(str(pid), str(name), *(int(x) for x in figures)) for pid, name, *figures in rows]
    return tuple(sorted(changes, key=lambda c: (-(c.gained + c.lost), -c.residents_b, c.pathology_id)))


def write_changed_residents(con: duckdb.DuckDBPyConnection, target: Path, by_key: bool) -> None:
    """resident_id, level_a, level_b, gained, lost of every resident whose level or pathologies differ.

    The residents are joined again, and each finds what it gained and lost by its pair of clusters; joined by key,
    the changed ones then find their id in the store (the views are the last run's: the same store).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    named = (
        "SELECT r.resident_id, c.level_a, c.level_b, c.gained, c.lost FROM changed AS c "
        "JOIN flow_residents AS r ON r.resident_key = c.resident"
        if by_key
        else "SELECT resident AS resident_id, level_a, level_b, gained, lost FROM changed"
    )
    con.execute(
        f"""
        CREATE TEMP TABLE changed_residents AS
        WITH moved AS (
          SELECT cluster_a, cluster_b, TRUE AS differ,
                 LIST(DISTINCT pathology_id ORDER BY pathology_id) FILTER (change = 'gained') AS gained,
                 LIST(DISTINCT pathology_id ORDER BY pathology_id) FILTER (change = 'lost') AS lost
          FROM changes GROUP BY ALL
        ),
        changed AS (
          SELECT COALESCE(a.resident, b.resident) AS resident, a.level AS level_a, b.level AS level_b,
                 COALESCE(m.gained, []::VARCHAR[]) AS gained, COALESCE(m.lost, []::VARCHAR[]) AS lost
          FROM side_a AS a
          FULL OUTER JOIN side_b AS b ON b.resident = a.resident
          LEFT JOIN moved AS m
            ON m.cluster_a IS NOT DISTINCT FROM a.cluster_no AND m.cluster_b IS NOT DISTINCT FROM b.cluster_no
          WHERE a.resident IS NULL OR b.resident IS NULL OR a.level <> b.level OR m.differ
        )
        {named}
        ORDER BY 1
        """
    )
    con.table("changed_residents").write_parquet(str(target))


# ------------------------------------------------------------------------------------------------------ rendering


def render_diff(diff: RunDiff, console: Console | None = None, top: int = 20) -> None:
    (console or Console()).print(diff_group(diff, top))


def diff_group(diff: RunDiff, top: int = 20) -> Group:
    parts: list[Any] = [diff_heading(diff), transitions_table(diff), pathology_changes_table(diff, top)]
    if diff.changed_file is not None:
        parts.append(Text(f"Residenti cambiati ({it_int(diff.changed_residents)}): {diff.changed_file}", style="dim"))
    return Group(*parts)


def _side(label: RunLabel) -> str:
    return f"{label.root} (catalogo {label.catalog_version}, riferimento {it_date(label.reference_date)})"


def diff_heading(diff: RunDiff) -> Text:
    return Text.assemble(
        ("Confronto tra due stratificazioni\n", "bold"),
        f"A: {_side(diff.a)} · {it_int(diff.a.population)} residenti\n",
        f"B: {_side(diff.b)} · {it_int(diff.b.population)} residenti\n",
        f"In entrambe {it_int(diff.in_both)} · solo in A {it_int(diff.only_in_a)} · solo in B {it_int(diff.only_in_b)}"
        f" · livello cambiato {it_int(diff.level_changed)} · patologie cambiate {it_int(diff.pathologies_changed)}",
    )


def transitions_table(diff: RunDiff) -> Table:
    """Rows: level in A; columns: level in B; the diagonal (unchanged) dimmed."""
    levels = diff.levels
    table = Table(
        title="Residenti per livello: A (righe) → B (colonne)",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        header_style="bold cyan",
    )
    table.add_column("A \\ B")
    for level in levels:
        table.add_column(f"Liv. {level}", justify="right")
    table.add_column("non in B", justify="right")
    for level_a in [*levels, None]:
        cells = []
        for level_b in [*levels, None]:
            n = diff.transition(level_a, level_b)
            style = "dim" if level_a == level_b or n == 0 else "bold"
            cells.append(Text("·" if level_a is None and level_b is None else it_int(n), style=style))
        name = f"Liv. {level_a} {diff.level_names.get(level_a, '')}".rstrip() if level_a is not None else "non in A"
        table.add_row(name, *cells)
    return table


def pathology_changes_table(diff: RunDiff, top: int = 20) -> Table:
    table = Table(
        title=f"Patologie: chi le acquisisce e chi le perde (prime {top} per cambiamenti)",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        header_style="bold cyan",
    )
    table.add_column("Patologia")
    for header in ("In A", "In B", "Acquisite", "Perse", "Nuovi residenti", "Residenti usciti"):
        table.add_column(header, justify="right")
    for p in diff.pathologies[:top]:
        table.add_row(
            p.name_it,
            it_int(p.residents_a),
            it_int(p.residents_b),
            Text(f"+{it_int(p.gained)}", style="green") if p.gained else Text("0", style="dim"),
            Text(f"-{it_int(p.lost)}", style="red") if p.lost else Text("0", style="dim"),
            it_int(p.entering),
            it_int(p.leaving),
        )
    return table
