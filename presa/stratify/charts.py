"""Charts of a run's summary, in Italian: PNG files at 150 dpi and one self-contained HTML report.

Three layers, each a set of small functions: *series* (pure data taken from a :class:`Summary`, testable without
drawing), *draw* (one series -> one matplotlib Figure, drawn with the Agg canvas, no pyplot state) and *write*
(PNG files and ``charts/report.html`` with the charts inline as SVG and the key tables).
"""

from __future__ import annotations

import html
import io
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from presa.stratify.summary import (
    SEX_NAMES_IT,
    GpFigure,
    Summary,
    ats_label,
    it_date,
    it_decimal,
    it_int,
    it_percent,
    share,
)

DPI = 150
MALE_COLOUR = "#3b6ea8"
FEMALE_COLOUR = "#c8505f"
BAR_COLOUR = "#2f7f7a"
# Lighter to darker: the more pathologies a cluster combines, the darker its bar.
CLUSTER_COLOURS = {1: "#9ecae1", 2: "#4f9bcb", 3: "#2166ac", 4: "#0b3c6e"}
INK, MUTED, GRID = "#222222", "#666666", "#e3e3e3"
CHART_FILES = {
    "livelli": "livelli_per_sesso.png",
    "prevalenza_eta": "prevalenza_per_eta.png",
    "cluster": "cluster_principali.png",
    "patologie": "patologie_principali.png",
}


# --------------------------------------------------------------------------------------------------------- series


@dataclass(frozen=True)
class PyramidSeries:
    """Residents per level and sex, level 1 first (drawn at the top); labels carry the level's total."""

    labels: tuple[str, ...]
    males: tuple[int, ...]
    females: tuple[int, ...]


@dataclass(frozen=True)
class AgeSeries:
    """Chronic residents per 100 residents of each age band, by sex and for both sexes."""

    bands: tuple[str, ...]
    males: tuple[float, ...]
    females: tuple[float, ...]
    total: tuple[float, ...]


@dataclass(frozen=True)
class BarSeries:
    """Horizontal bars, largest first: a label, a value, the text written at the bar's end and a colour group."""

    labels: tuple[str, ...]
    values: tuple[float, ...]
    notes: tuple[str, ...]
    groups: tuple[int, ...]


def level_pyramid_series(summary: Summary) -> PyramidSeries:
    levels = sorted(summary.levels, key=lambda lv: lv.level)
    return PyramidSeries(
        labels=tuple(
            f"{lv.level} · {lv.name_it}\n{residents_it(lv.residents)} ({it_percent(lv.share)})" for lv in levels
        ),
        males=tuple(lv.males for lv in levels),
        females=tuple(lv.females for lv in levels),
    )


def age_prevalence_series(summary: Summary) -> AgeSeries:
    """Per-cent prevalence of chronicity; a band with no resident of a sex shows 0."""
    bands = tuple(dict.fromkeys(f.age_band for f in summary.age_sex))

    def percent(band: str, sexes: set[str]) -> float:
        cells = [f for f in summary.age_sex if f.age_band == band and f.sex in sexes]
        population = sum(f.population for f in cells)
        return 100 * sum(f.chronic for f in cells) / population if population else 0.0

    return AgeSeries(
        bands=bands,
        males=tuple(percent(b, {"M"}) for b in bands),
        females=tuple(percent(b, {"F"}) for b in bands),
        total=tuple(percent(b, {"M", "F"}) for b in bands),
    )


def cluster_series(summary: Summary, top: int = 15) -> BarSeries:
    clusters = summary.clusters[:top]
    return BarSeries(
        labels=tuple(c.label_it for c in clusters),
        values=tuple(float(c.residents) for c in clusters),
        notes=tuple(f"{it_int(c.residents)} · {it_percent(c.share_of_chronic)} dei cronici" for c in clusters),
        groups=tuple(min(c.n_pathologies, 4) for c in clusters),
    )


def pathology_series(summary: Summary, top: int = 20) -> BarSeries:
    """The most prevalent pathologies; those nobody has are not drawn."""
    pathologies = [p for p in summary.pathologies if p.residents > 0][:top]
    return BarSeries(
        labels=tuple(p.name_it for p in pathologies),
        values=tuple(p.per_1000 for p in pathologies),
        notes=tuple(f"{it_decimal(p.per_1000)}‰ ({it_int(p.residents)})" for p in pathologies),
        groups=tuple(0 for _ in pathologies),
    )


def residents_it(n: int) -> str:
    return f"{it_int(n)} {'residente' if n == 1 else 'residenti'}"


def subtitle(summary: Summary) -> str:
    return (
        f"Data di riferimento {it_date(summary.run.reference_date)} · popolazione {it_int(summary.run.population)}"
        f" · catalogo {summary.run.catalog_version}"
    )


# ----------------------------------------------------------------------------------------------------------- draw


@contextmanager
def chart_style() -> Iterator[None]:
    """The look of every chart, set for the drawing and saving only (no global matplotlib state is changed)."""
    with matplotlib.rc_context(
        {
            "font.family": "DejaVu Sans",
            "font.size": 10,
            "axes.edgecolor": "#999999",
            "axes.labelcolor": INK,
            "axes.titlesize": 10,
            "xtick.color": MUTED,
            "ytick.color": INK,
            "svg.hashsalt": "presa",  # stable element ids: the same run gives the same report file
        }
    ):
        yield


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


TITLE_BAND_INCHES = 0.8


def set_titles(figure: Figure, title: str, sub: str) -> None:
    """Title and subtitle flush left above the plot, in a band the layout keeps free."""
    height = figure.get_figheight()
    engine = figure.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0, 0, 1, 1 - TITLE_BAND_INCHES / height))
    figure.text(0.012, 1 - 0.12 / height, title, ha="left", va="top", fontsize=13, fontweight="bold", color=INK)
    figure.text(0.012, 1 - 0.42 / height, sub, ha="left", va="top", fontsize=9.5, color=MUTED)


def clean_axes(ax: Axes, value_axis: Literal["x", "y"]) -> None:
    """Only the axis that carries values keeps a light grid; the frame goes."""
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.grid(axis=value_axis, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(length=0)


def draw_level_pyramid(series: PyramidSeries, title: str, sub: str) -> Figure:
    """Males to the left, females to the right; level 1 on top, level 5 at the bottom."""
    figure = new_figure(10, 4.8)
    ax = figure.add_subplot()
    rows = range(len(series.labels))
    ax.barh(rows, [-m for m in series.males], color=MALE_COLOUR, height=0.7)
    ax.barh(rows, list(series.females), color=FEMALE_COLOUR, height=0.7)
    widest = max([*series.males, *series.females, 1])
    ax.set_xlim(-widest * 1.3, widest * 1.3)
    for row, (males, females) in enumerate(zip(series.males, series.females, strict=True)):
        ax.text(-males - widest * 0.02, row, it_int(males), ha="right", va="center", fontsize=9, color=INK)
        ax.text(females + widest * 0.02, row, it_int(females), ha="left", va="center", fontsize=9, color=INK)
    # The sides are named above the bars instead of a legend that would cover the largest level.
    ax.text(-widest * 0.65, -0.75, SEX_NAMES_IT["M"], ha="center", fontsize=10, fontweight="bold", color=MALE_COLOUR)
    ax.text(widest * 0.65, -0.75, SEX_NAMES_IT["F"], ha="center", fontsize=10, fontweight="bold", color=FEMALE_COLOUR)
    ax.set_yticks(list(rows), series.labels)
    ax.set_ylim(len(series.labels) - 0.5, -1.05)
    ax.axvline(0, color="#999999", linewidth=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: it_int(abs(round(x)))))
    ax.set_xlabel("Residenti")
    clean_axes(ax, "x")
    if not any(series.males) and not any(series.females):
        say_no_data(ax)
    set_titles(figure, title, sub)
    return figure


def draw_age_prevalence(series: AgeSeries, title: str, sub: str) -> Figure:
    """Bars per sex; the prevalence of both sexes goes under each band's name, where it cannot cover a bar."""
    figure = new_figure(10, 4.8)
    ax = figure.add_subplot()
    slots = list(range(len(series.bands)))
    width = 0.38
    male_bars = ax.bar([s - width / 2 for s in slots], series.males, width, color=MALE_COLOUR, label=SEX_NAMES_IT["M"])
    female_bars = ax.bar(
        [s + width / 2 for s in slots], series.females, width, color=FEMALE_COLOUR, label=SEX_NAMES_IT["F"]
    )
    for bars, values in ((male_bars, series.males), (female_bars, series.females)):
        ax.bar_label(bars, [f"{it_decimal(v, 0)}%" for v in values], padding=2, fontsize=8, color=MUTED)
    ax.set_xticks(
        slots,
        [
            f"{band} anni\ntotale {it_decimal(total, 1)}%"
            for band, total in zip(series.bands, series.total, strict=True)
        ],
    )
    ax.set_ylim(0, min(100.0, max([*series.males, *series.females, 10.0]) * 1.15))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{it_decimal(y, 0)}%"))
    ax.set_ylabel("Cronici, % dei residenti")
    clean_axes(ax, "y")
    if series.bands:
        ax.legend(loc="upper left", frameon=False, ncols=2)
    else:
        say_no_data(ax)
    set_titles(figure, title, sub)
    return figure


def draw_horizontal_bars(
    series: BarSeries,
    title: str,
    sub: str,
    xlabel: str,
    *,
    integer: bool,
    legend: dict[int, str] | None = None,
) -> Figure:
    """Largest bar on top; labels wrapped so that long clusters stay readable; ``integer`` for counts."""
    labels = [textwrap.fill(label, 48) for label in series.labels]
    lines = sum(label.count("\n") + 1 for label in labels)
    figure = new_figure(10, 1.7 + 0.27 * max(lines, 3))
    ax = figure.add_subplot()
    rows = range(len(labels))
    colours = [CLUSTER_COLOURS.get(g, BAR_COLOUR) if legend else BAR_COLOUR for g in series.groups]
    ax.barh(list(rows), series.values, color=colours, height=0.72)
    widest = max([*series.values, 1.0])
    for row, (value, note) in enumerate(zip(series.values, series.notes, strict=True)):
        ax.text(value + widest * 0.01, row, note, va="center", ha="left", fontsize=8.5, color=INK)
    ax.set_xlim(0, widest * 1.32)
    ax.set_yticks(list(rows), labels, fontsize=9)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=integer))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: it_decimal(x, 0 if integer or widest >= 10 else 1)))
    ax.set_xlabel(xlabel)
    clean_axes(ax, "x")
    if legend:
        handles = [Patch(color=CLUSTER_COLOURS[g], label=text) for g, text in legend.items() if g in series.groups]
        # In the title band, right-aligned: inside the axes it could cover a bar whatever the data.
        figure.legend(
            handles=handles,
            loc="upper right",
            bbox_to_anchor=(0.99, 1 - 0.08 / figure.get_figheight()),
            ncols=len(handles),
            frameon=False,
            title="Patologie nel cluster",
            fontsize=8.5,
            title_fontsize=8.5,
        )
    if not labels:
        say_no_data(ax)
    set_titles(figure, title, sub)
    return figure


def say_no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "Nessun residente", transform=ax.transAxes, ha="center", va="center", color=MUTED, fontsize=12)


def chart_figures(summary: Summary) -> dict[str, Figure]:
    """Every chart of the report, keyed like CHART_FILES."""
    sub = subtitle(summary)
    with chart_style():
        return {
            "livelli": draw_level_pyramid(level_pyramid_series(summary), "Livelli di presa in carico per sesso", sub),
            "prevalenza_eta": draw_age_prevalence(
                age_prevalence_series(summary), "Cronicità per fascia d'età e sesso", sub
            ),
            "cluster": draw_horizontal_bars(
                cluster_series(summary),
                "I 15 cluster di patologie più frequenti",
                sub,
                "Residenti",
                integer=True,
                legend={1: "1", 2: "2", 3: "3", 4: "4 o più"},
            ),
            "patologie": draw_horizontal_bars(
                pathology_series(summary),
                "Prevalenza delle 20 patologie più frequenti",
                sub,
                "Residenti ogni 1.000",
                integer=False,
            ),
        }


# ---------------------------------------------------------------------------------------------------------- write


@dataclass(frozen=True)
class ChartFiles:
    pngs: tuple[Path, ...]
    report: Path


def write_charts(summary: Summary, charts_dir: Path) -> ChartFiles:
    """The PNG of every chart and charts/report.html, into ``charts_dir`` (created if needed)."""
    charts_dir.mkdir(parents=True, exist_ok=True)
    figures = chart_figures(summary)
    pngs = []
    svgs = {}
    with chart_style():
        for key, figure in figures.items():
            png = charts_dir / CHART_FILES[key]
            figure.savefig(png, dpi=DPI, facecolor="white", metadata={"Software": None})
            pngs.append(png)
            svgs[key] = figure_svg(figure)
    report = charts_dir / "report.html"
    report.write_text(report_html(summary, svgs), encoding="utf-8")
    return ChartFiles(tuple(pngs), report)


def figure_svg(figure: Figure) -> str:
    """The figure as an <svg> element to inline in HTML (no XML prolog, no creation date)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", facecolor="white", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def report_html(summary: Summary, svgs: dict[str, str]) -> str:
    """The whole report: header figures, each chart with its table, the ATS and the GPs."""
    run = summary.run
    title = f"Stratificazione della popolazione al {it_date(run.reference_date)}"
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='sub'>Catalogo {_e(run.catalog_name)}, versione {_e(run.catalog_version)} "
        f"(impronta <code>{_e(run.catalog_digest)}</code>)</p>",
        _key_figures(summary),
        _section("Livelli di presa in carico", svgs.get("livelli"), _levels_table(summary)),
        _section("Cronicità per età e sesso", svgs.get("prevalenza_eta"), _age_table(summary)),
        _section("Cluster di patologie", svgs.get("cluster"), _clusters_table(summary)),
        _section("Patologie", svgs.get("patologie"), _pathologies_table(summary)),
        _section("Multimorbidità per fascia d'età", None, _multimorbidity_table(summary)),
        _section("Residenti per ATS e livello", None, _ats_table(summary)),
        _section(
            "Medici di medicina generale",
            None,
            f"<p class='note'>Medici con almeno {it_int(summary.gp_min_list_size)} assistiti; "
            f"in tutto {it_int(len(summary.gps))} medici.</p>"
            "<h3>Quota di cronici più alta</h3>"
            + _gps_table(summary.gps_top, summary)
            + "<h3>Quota di cronici più bassa</h3>"
            + _gps_table(summary.gps_bottom, summary),
        ),
    ]
    return REPORT_TEMPLATE.format(title=_e(title), body="\n".join(sections))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _section(title: str, svg: str | None, table: str) -> str:
    chart = f"<figure>{svg}</figure>" if svg else ""
    return f"<section><h2>{_e(title)}</h2>{chart}{table}</section>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
    """An HTML table; columns from ``numeric_from`` on are figures, right-aligned."""

    def cell(tag: str, i: int, value: object) -> str:
        return f"<{tag}{' class=num' if i >= numeric_from else ''}>{_e(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    if not rows:
        body = f"<tr><td colspan={len(headers)}>Nessun dato</td></tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _key_figures(summary: Summary) -> str:
    run = summary.run
    multimorbid = sum(f.two + f.three + f.four_or_more for f in summary.multimorbidity)
    found = sum(1 for p in summary.pathologies if p.residents > 0)
    cards = [
        ("Popolazione", it_int(run.population)),
        ("Cronici (almeno una patologia)", f"{it_int(run.chronic)} · {it_percent(run.chronic_share)}"),
        ("Con 2 o più patologie", f"{it_int(multimorbid)} · {it_percent(share(multimorbid, run.population))}"),
        ("Patologie del catalogo riscontrate", f"{found} su {len(summary.pathologies)}"),
    ]
    inner = "".join(
        f"<div class='card'><div class='k'>{_e(k)}</div><div class='v'>{_e(v)}</div></div>" for k, v in cards
    )
    return f"<div class='cards'>{inner}</div>"


def _levels_table(summary: Summary) -> str:
    rows = [
        (f"{lv.level} · {lv.name_it}", it_int(lv.residents), it_percent(lv.share), it_int(lv.males), it_int(lv.females))
        for lv in summary.levels
    ]
    return _table(["Livello", "Residenti", "Quota", "Maschi", "Femmine"], rows)


def _age_table(summary: Summary) -> str:
    rows = [
        (
            f"{f.age_band} anni",
            SEX_NAMES_IT.get(f.sex, f.sex),
            it_int(f.population),
            it_int(f.chronic),
            it_decimal(f.chronic_per_1000),
        )
        for f in summary.age_sex
    ]
    return _table(["Fascia d'età", "Sesso", "Residenti", "Cronici", "Cronici ogni 1.000"], rows, numeric_from=2)


def _clusters_table(summary: Summary) -> str:
    rows = [
        (c.label_it, c.main_name_it, it_int(c.residents), it_percent(c.share_of_chronic), it_decimal(c.per_1000))
        for c in summary.clusters[:15]
    ]
    return _table(["Cluster", "Patologia principale", "Residenti", "Quota dei cronici", "Ogni 1.000"], rows, 2)


def _pathologies_table(summary: Summary) -> str:
    rows = [
        (p.name_it, it_int(p.residents), it_decimal(p.per_1000), it_int(p.as_main))
        for p in summary.pathologies
        if p.residents > 0
    ][:20]
    return _table(["Patologia", "Residenti", "Ogni 1.000", "Come patologia principale"], rows)


def _multimorbidity_table(summary: Summary) -> str:
    rows = [
        (
            f"{f.age_band} anni",
            it_int(f.population),
            it_int(f.none),
            it_int(f.one),
            it_int(f.two),
            it_int(f.three),
            it_int(f.four_or_more),
            it_percent(f.multimorbid_share),
        )
        for f in summary.multimorbidity
    ]
    headers = ["Fascia d'età", "Residenti", "Nessuna", "1", "2", "3", "4 o più", "Con 2 o più"]
    return _table(headers, rows)


def _ats_table(summary: Summary) -> str:
    levels = [lv.level for lv in summary.levels]
    rows = [
        (
            ats_label(a.ats),
            it_int(a.population),
            *(it_int(a.by_level.get(lv, 0)) for lv in levels),
            it_percent(a.chronic_share),
        )
        for a in summary.ats
    ]
    return _table(["ATS", "Residenti", *(f"Livello {lv}" for lv in levels), "Quota di cronici"], rows)


def _gps_table(gps: Sequence[GpFigure], summary: Summary) -> str:
    levels = [lv.level for lv in summary.levels]
    rows = [
        (
            gp.gp_id,
            gp.ats,
            it_int(gp.list_size),
            it_percent(gp.chronic_share),
            *(it_int(gp.by_level.get(lv, 0)) for lv in levels),
        )
        for gp in gps
    ]
    return _table(["Medico", "ATS", "Assistiti", "Quota di cronici", *(f"Liv. {lv}" for lv in levels)], rows, 2)


REPORT_TEMPLATE = """<!DOCTYPE html>
<html lang="it">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0 auto;
       max-width: 1100px; padding: 24px 32px 64px; line-height: 1.4; }}
h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }}
h2 {{ font-size: 1.25em; margin-top: 2.2em; border-bottom: 2px solid #2f7f7a; padding-bottom: 0.2em; }}
h3 {{ font-size: 1.05em; margin-top: 1.4em; }}
.sub, .note {{ color: #666; }}
.cards {{ display: flex; gap: 16px; flex-wrap: wrap; margin: 1.2em 0; }}
.card {{ background: #f4f7f7; border-radius: 6px; padding: 10px 16px; min-width: 200px; }}
.card .k {{ color: #555; font-size: 0.85em; }}
.card .v {{ font-size: 1.35em; font-weight: bold; }}
figure {{ margin: 1em 0; }}
figure svg {{ width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }}
th {{ background: #f4f7f7; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
