"""The figures an ATS analyst reads first about a stratification run, computed with DuckDB from its files.

``compute_summary`` reads a run through the views of presa/stratify/runview.py (the engine's integer facts joined
with the registry and the names) and returns a :class:`Summary`: residents per level, prevalence per pathology,
per ATS and per GP, the most frequent clusters of pathologies, chronicity by age band and sex, and multimorbidity
by age band. ``write_summary`` stores it as ``summary.json``; ``read_summary`` reads it back, so charts and
terminal tables can be redrawn without touching the Parquet files.

A resident is *chronic* when at least one pathology of the catalog is assigned to them (levels 1-3 of the
Lombardy rule); shares are fractions of 1, prevalences are per 1,000 residents of the population. Pathology names
come from the run itself; level names from the catalog run.json names ("Livello n" when it cannot be read).

This module also holds what the other readers of a run share: :class:`RunInfo` (run.json), the run's catalog,
the Italian names of the ATS and the Italian way of writing numbers and dates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
from pydantic import BaseModel, ConfigDict

from presa.flows.layout import FlowPaths
from presa.stratify.catalog import Catalog, CatalogError, load_catalog
from presa.stratify.layout import RunPaths
from presa.stratify.runview import RunError, create_run_views, flows_of, run_info

# Ministry of Health codes of the Lombardy health agencies (ATS), as carried by the residents flow.
ATS_NAMES: dict[str, str] = {
    "321": "Città Metropolitana di Milano",
    "322": "Insubria",
    "323": "Montagna",
    "324": "Brianza",
    "325": "Bergamo",
    "326": "Brescia",
    "327": "Val Padana",
    "328": "Pavia",
}
SEX_NAMES_IT = {"M": "Maschi", "F": "Femmine"}


# ------------------------------------------------------------------------------------------------ the run itself


@dataclass(frozen=True)
class RunInfo:
    """What run.json says about a run: which catalog, which reference date, where its flows are."""

    paths: RunPaths
    catalog_name: str
    catalog_version: str
    catalog_digest: str
    catalog_directory: Path
    reference_date: date
    flows: FlowPaths


def read_run_info(run_dir: Path) -> RunInfo:
    """Read run.json of a run directory; a directory that is not a finished run raises RunError."""
    paths = RunPaths(Path(run_dir))
    info = run_info(paths)
    try:
        catalog = info["catalog"]
        return RunInfo(
            paths=paths,
            catalog_name=str(catalog["name"]),
            catalog_version=str(catalog["version"]),
            catalog_digest=str(catalog["digest"]),
            catalog_directory=Path(catalog["directory"]),
            reference_date=date.fromisoformat(info["reference_date"]),
            flows=flows_of(paths),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{paths.run_json} is not a valid run.json: {exc!r}") from exc


def run_catalog(info: RunInfo, *, same_digest: bool = True) -> Catalog:
    """The catalog the run was made with, from the directory run.json names.

    With ``same_digest`` a catalog edited since the run is refused: criterion ids and code prefixes would no longer
    describe what the engine did. Level names alone can tolerate an edit (``same_digest=False``).
    """
    try:
        catalog = load_catalog(info.catalog_directory)
    except CatalogError as exc:
        raise RunError(f"the catalog of run {info.paths.root} cannot be read: {exc}") from exc
    if same_digest and catalog.digest != info.catalog_digest:
        raise RunError(
            f"the catalog at {info.catalog_directory} has changed since run {info.paths.root} "
            f"(digest {catalog.digest}, the run used {info.catalog_digest})"
        )
    return catalog


def level_names(info: RunInfo) -> dict[int, str]:
    """Level -> Italian name from the run's catalog; empty when the catalog is gone (the run stays readable)."""
    try:
        catalog = run_catalog(info, same_digest=False)
    except RunError:
        return {}
    return {lv.level: lv.name_it for lv in catalog.header.levels}


def connect_run(info: RunInfo) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the run's views (presa/stratify/runview.py)."""
    con = duckdb.connect()
    try:
        create_run_views(con, info.paths)
    except duckdb.Error as exc:
        con.close()
        raise RunError(f"run {info.paths.root} cannot be opened: {str(exc).splitlines()[0]}") from exc
    return con


# ----------------------------------------------------------------------------------------------- the summary model


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunHeader(_Figures):
    catalog_name: str
    catalog_version: str
    catalog_digest: str
    reference_date: date
    population: int
    chronic: int
    chronic_share: float


class LevelFigure(_Figures):
    level: int
    name_it: str
    residents: int
    share: float
    males: int
    females: int


class PathologyFigure(_Figures):
    pathology_id: str
    name_it: str
    macro_area: str
    residents: int
    per_1000: float
    as_main: int


class AtsFigure(_Figures):
    ats: str
    name_it: str
    population: int
    chronic: int
    chronic_share: float
    by_level: dict[int, int]


class GpFigure(_Figures):
    gp_id: str
    ats: str
    list_size: int
    chronic: int
    chronic_share: float
    by_level: dict[int, int]


class ClusterFigure(_Figures):
    cluster: str
    pathologies: list[str]
    label_it: str
    n_pathologies: int
    residents: int
    share_of_chronic: float
    per_1000: float
    main_pathology: str
    main_name_it: str


class AgeSexFigure(_Figures):
    age_band: str
    sex: str
    population: int
    chronic: int
    chronic_per_1000: float


class MultimorbidityFigure(_Figures):
    age_band: str
    population: int
    none: int
    one: int
    two: int
    three: int
    four_or_more: int
    multimorbid_share: float


class Summary(_Figures):
    """The summary figures of a run; ``gps_top`` / ``gps_bottom`` rank GPs with at least ``gp_min_list_size``."""

    run: RunHeader
    levels: list[LevelFigure]
    pathologies: list[PathologyFigure]
    ats: list[AtsFigure]
    gps: list[GpFigure]
    gp_min_list_size: int
    gps_top: list[GpFigure]
    gps_bottom: list[GpFigure]
    clusters: list[ClusterFigure]
    age_sex: list[AgeSexFigure]
    multimorbidity: list[MultimorbidityFigure]

    def level(self, level: int) -> LevelFigure:
        for figure in self.levels:
            if figure.level == level:
                return figure
        raise KeyError(level)

    def pathology(self, pathology_id: str) -> PathologyFigure:
        for figure in self.pathologies:
            if figure.pathology_id == pathology_id:
                return figure
        raise KeyError(pathology_id)


# ------------------------------------------------------------------------------------------- computing the figures


def compute_summary(
    run_dir: Path, *, top_clusters: int = 30, top_gps: int = 10, gp_min_list_size: int = 100
) -> Summary:
    """Every summary figure of a run.

    The residents are read twice, whatever their number: once into *cells* (residents counted by sex, age band,
    ATS, GP, capped number of pathologies and level: a few hundred thousand rows for Lombardy) and once into
    counts per cluster. Every figure is then a small query over those two tables.
    """
    info = read_run_info(run_dir)
    con = connect_run(info)
    try:
        count_cells(con)
        count_clusters(con)
        header = run_header(con, info)
        gps = gp_figures(con)
        return Summary(
            run=header,
            levels=level_figures(con, level_names(info), header.population),
            pathologies=pathology_figures(con, header.population),
            ats=ats_figures(con),
            gps=gps,
            gp_min_list_size=gp_min_list_size,
            gps_top=rank_gps(gps, gp_min_list_size, top_gps, highest=True),
            gps_bottom=rank_gps(gps, gp_min_list_size, top_gps, highest=False),
            clusters=cluster_figures(con, header, top_clusters),
            age_sex=age_sex_figures(con),
            multimorbidity=multimorbidity_figures(con),
        )
    finally:
        con.close()


def write_summary(run_dir: Path, **options: int) -> Summary:
    """Compute the summary of a run and store it as the run's summary.json."""
    summary = compute_summary(run_dir, **options)
    RunPaths(Path(run_dir)).summary_json.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return summary


def read_summary(path: Path) -> Summary:
    """A summary.json written by write_summary (a run directory is accepted too)."""
    file = RunPaths(path).summary_json if Path(path).is_dir() else Path(path)
    return Summary.model_validate_json(file.read_text(encoding="utf-8"))


def share(part: int, whole: int) -> float:
    """part / whole, 0 for an empty whole (an empty ATS or population has no shares to speak of)."""
    return part / whole if whole else 0.0


def count_cells(con: duckdb.DuckDBPyConnection) -> None:
    """Residents counted by every dimension a figure cuts them by; n_cap is the number of pathologies up to 4."""
    con.execute(
        "CREATE TEMP TABLE cells AS SELECT sex, age_band, ats, gp_id, LEAST(n_pathologies, 4) AS n_cap, level, "
        "COUNT(*) AS n FROM residents GROUP BY ALL"
    )


def count_clusters(con: duckdb.DuckDBPyConnection) -> None:
    """Residents per cluster, with the cluster's pathologies (main first) as the run's clusters table has them.

    Counted on the run's own integer facts: through the residents view, which joins the registry, it took 0.65 s
    at 10 M instead of 0.05 s.
    """
    con.execute(
        "CREATE TEMP TABLE cluster_counts AS "
        "WITH n AS (SELECT cluster_no, COUNT(*) AS n FROM run_residents WHERE cluster_no IS NOT NULL GROUP BY ALL) "
        "SELECT c.cluster, c.pathologies, c.main_pathology, n.n "
        "FROM n JOIN (SELECT DISTINCT cluster_no, cluster, pathologies, main_pathology FROM clusters) AS c "
        "USING (cluster_no)"
    )


def run_header(con: duckdb.DuckDBPyConnection, info: RunInfo) -> RunHeader:
    population, chronic = _one(con, "SELECT SUM(n), SUM(n) FILTER (n_cap > 0) FROM cells")
    return RunHeader(
        catalog_name=info.catalog_name,
        catalog_version=info.catalog_version,
        catalog_digest=info.catalog_digest,
        reference_date=info.reference_date,
        population=population,
        chronic=chronic,
        chronic_share=share(chronic, population),
    )


def level_figures(con: duckdb.DuckDBPyConnection, names: dict[int, str], population: int) -> list[LevelFigure]:
    """Every level of the catalog, empty ones included, by sex."""
    counts = {
        int(level): (int(total), int(males), int(females))
        for level, total, males, females in con.execute(
            "SELECT level, SUM(n), COALESCE(SUM(n) FILTER (sex = 'M'), 0), COALESCE(SUM(n) FILTER (sex = 'F'), 0) "
            "FROM cells GROUP BY level"
        ).fetchall()
    }
    figures = []
    for level in sorted(names.keys() | counts.keys()):
        total, males, females = counts.get(level, (0, 0, 0))
        figures.append(
            LevelFigure(
                level=level,
                name_it=names.get(level, f"Livello {level}"),
                residents=total,
                share=share(total, population),
                males=males,
                females=females,
            )
        )
    return figures


def pathology_figures(con: duckdb.DuckDBPyConnection, population: int) -> list[PathologyFigure]:
    """Every pathology of the run's catalog (those nobody has included), most prevalent first."""
    residents = _counts(
        con, "SELECT p, SUM(n) FROM (SELECT UNNEST(pathologies) AS p, n FROM cluster_counts) GROUP BY p"
    )
    as_main = _counts(con, "SELECT main_pathology, SUM(n) FROM cluster_counts GROUP BY 1")
    figures = [
        PathologyFigure(
            pathology_id=pathology_id,
            name_it=name_it,
            macro_area=macro_area,
            residents=residents.get(pathology_id, 0),
            per_1000=1000 * share(residents.get(pathology_id, 0), population),
            as_main=as_main.get(pathology_id, 0),
        )
        for pathology_id, name_it, macro_area in con.execute(
            "SELECT pathology_id, name_it, macro_area FROM pathologies"
        ).fetchall()
    ]
    return sorted(figures, key=lambda f: (-f.residents, f.pathology_id))


def ats_figures(con: duckdb.DuckDBPyConnection) -> list[AtsFigure]:
    by_level = _by_level(con, "ats")
    rows = con.execute(
        "SELECT ats, SUM(n), COALESCE(SUM(n) FILTER (n_cap > 0), 0) FROM cells GROUP BY ats ORDER BY ats"
    ).fetchall()
    return [
        AtsFigure(
            ats=ats,
            name_it=ATS_NAMES.get(ats, ats),
            population=int(n),
            chronic=int(chronic),
            chronic_share=share(int(chronic), int(n)),
            by_level=by_level.get(ats, {}),
        )
        for ats, n, chronic in rows
    ]


def gp_figures(con: duckdb.DuckDBPyConnection) -> list[GpFigure]:
    """Every GP's list at the reference date; a GP whose list spans ATS is placed in the ATS of most patients."""
    by_level = _by_level(con, "gp_id")
    rows = con.execute(
        "SELECT gp_id, ARG_MAX(ats, n ORDER BY ats), SUM(n) AS list_size, COALESCE(SUM(n) FILTER (n_cap > 0), 0) "
        "FROM (SELECT gp_id, ats, n_cap, SUM(n) AS n FROM cells GROUP BY ALL) GROUP BY gp_id ORDER BY gp_id"
    ).fetchall()
    return [
        GpFigure(
            gp_id=gp,
            ats=ats,
            list_size=int(n),
            chronic=int(chronic),
            chronic_share=share(int(chronic), int(n)),
            by_level=by_level.get(gp, {}),
        )
        for gp, ats, n, chronic in rows
    ]


def rank_gps(gps: list[GpFigure], min_list_size: int, top: int, *, highest: bool) -> list[GpFigure]:
    """The GPs with the highest (or lowest) chronic share; small lists are left out, their shares are noise."""
    eligible = [gp for gp in gps if gp.list_size >= min_list_size]
    sign = -1 if highest else 1
    return sorted(eligible, key=lambda gp: (sign * gp.chronic_share, -gp.list_size, gp.gp_id))[:top]


def cluster_figures(con: duckdb.DuckDBPyConnection, header: RunHeader, top: int) -> list[ClusterFigure]:
    """The most frequent combinations of assigned pathologies (a single pathology is a cluster of one)."""
    rows = con.execute(
        "SELECT cluster, pathologies, main_pathology, n FROM cluster_counts ORDER BY n DESC, cluster LIMIT ?", [top]
    ).fetchall()
    names = pathology_names(con)
    return [
        ClusterFigure(
            cluster=cluster,
            pathologies=list(pathologies),
            label_it=cluster_label(pathologies, names),
            n_pathologies=len(pathologies),
            residents=int(n),
            share_of_chronic=share(int(n), header.chronic),
            per_1000=1000 * share(int(n), header.population),
            main_pathology=main,
            main_name_it=names.get(main, main),
        )
        for cluster, pathologies, main, n in rows
    ]


def pathology_names(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Pathology id -> Italian name, as the run recorded them."""
    return {
        str(pid): str(name) for pid, name in con.execute("SELECT pathology_id, name_it FROM pathologies").fetchall()
    }


def cluster_label(pathologies: list[str], names: dict[str, str]) -> str:
    """The cluster in Italian, main pathology first: 'Scompenso cardiaco + Ipertensione arteriosa'."""
    return " + ".join(names.get(p, p) for p in pathologies)


def age_sex_figures(con: duckdb.DuckDBPyConnection) -> list[AgeSexFigure]:
    rows = con.execute(
        "SELECT age_band, sex, SUM(n), COALESCE(SUM(n) FILTER (n_cap > 0), 0) FROM cells GROUP BY ALL"
    ).fetchall()
    figures = [
        AgeSexFigure(
            age_band=band,
            sex=sex,
            population=int(n),
            chronic=int(chronic),
            chronic_per_1000=1000 * share(int(chronic), int(n)),
        )
        for band, sex, n, chronic in rows
    ]
    return sorted(figures, key=lambda f: (age_band_order(f.age_band), f.sex))


def multimorbidity_figures(con: duckdb.DuckDBPyConnection) -> list[MultimorbidityFigure]:
    """Residents of each age band by number of pathologies; multimorbid means two or more."""
    counts: dict[str, dict[int, int]] = {}
    for band, n_cap, n in con.execute("SELECT age_band, n_cap, SUM(n) FROM cells GROUP BY ALL").fetchall():
        counts.setdefault(band, {})[int(n_cap)] = int(n)
    figures = []
    for band in sorted(counts, key=age_band_order):
        c = counts[band]
        population = sum(c.values())
        figures.append(
            MultimorbidityFigure(
                age_band=band,
                population=population,
                none=c.get(0, 0),
                one=c.get(1, 0),
                two=c.get(2, 0),
                three=c.get(3, 0),
                four_or_more=c.get(4, 0),
                multimorbid_share=share(c.get(2, 0) + c.get(3, 0) + c.get(4, 0), population),
            )
        )
    return figures


def age_band_order(band: str) -> int:
    """Bands sort by their first age: '0-14' < '15-44' < ... < '85+'."""
    match = re.match(r"\d+", band)
    return int(match.group()) if match else 1_000


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, int]:
    """Two sums of an aggregate without GROUP BY (one row always; NULL sums of no rows read as 0)."""
    row = con.execute(sql).fetchone() or (0, 0)
    return int(row[0] or 0), int(row[1] or 0)


def _counts(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, int]:
    return {str(key): int(n) for key, n in con.execute(sql).fetchall()}


def _by_level(con: duckdb.DuckDBPyConnection, column: str) -> dict[str, dict[int, int]]:
    by_level: dict[str, dict[int, int]] = {}
    for key, level, n in con.execute(f"SELECT {column}, level, SUM(n) FROM cells GROUP BY ALL").fetchall():
        by_level.setdefault(key, {})[int(level)] = int(n)
    return {key: dict(sorted(levels.items())) for key, levels in by_level.items()}


# --------------------------------------------------------------------------------- Italian numbers, dates and names


def it_int(n: int) -> str:
    """1234567 -> '1.234.567'."""
    return f"{n:,}".replace(",", ".")


def it_decimal(x: float, digits: int = 1) -> str:
    """1234.56 -> '1.234,6'."""
    return f"{x:,.{digits}f}".replace(",", "\0").replace(".", ",").replace("\0", ".")


def it_percent(fraction: float, digits: int = 1) -> str:
    """0.1234 -> '12,3%'."""
    return it_decimal(100 * fraction, digits) + "%"


def it_date(day: date) -> str:
    """date(2025, 12, 31) -> '31/12/2025'."""
    return day.strftime("%d/%m/%Y")


def ats_label(ats: str) -> str:
    """'321' -> 'ATS 321 Città Metropolitana di Milano'."""
    name = ATS_NAMES.get(ats)
    return f"ATS {ats} {name}" if name else f"ATS {ats}"
