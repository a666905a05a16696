"""The summary of a run as rich tables for the terminal, in Italian: levels, pathologies, ATS and clusters.

Each table is built by a small function from a :class:`Summary`, so the CLI can print all of them
(``print_summary``) or one at a time.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from presa.stratify.summary import Summary, ats_label, it_date, it_decimal, it_int, it_percent


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, header_style="bold cyan")


def run_heading(summary: Summary) -> Text:
    run = summary.run
    return Text.assemble(
        ("Stratificazione al ", "bold"),
        (it_date(run.reference_date), "bold"),
        f" · catalogo {run.catalog_version} ({run.catalog_digest})",
        f" · popolazione {it_int(run.population)}",
        f" · cronici {it_int(run.chronic)} ({it_percent(run.chronic_share)})",
    )


def levels_table(summary: Summary) -> Table:
    table = _table("Livelli di presa in carico")
    for header in ("Livello", "Descrizione"):
        table.add_column(header)
    for header in ("Residenti", "Quota", "Maschi", "Femmine"):
        table.add_column(header, justify="right")
    for lv in summary.levels:
        table.add_row(
            str(lv.level), lv.name_it, it_int(lv.residents), it_percent(lv.share), it_int(lv.males), it_int(lv.females)
        )
    return table


def pathologies_table(summary: Summary, top: int = 15) -> Table:
    """The most prevalent pathologies; those nobody has are left out."""
    table = _table(f"Patologie più frequenti (prime {top})")
    table.add_column("Patologia")
    for header in ("Residenti", "Ogni 1.000", "Come principale"):
        table.add_column(header, justify="right")
    for p in [p for p in summary.pathologies if p.residents > 0][:top]:
        table.add_row(p.name_it, it_int(p.residents), it_decimal(p.per_1000), it_int(p.as_main))
    return table


def ats_table(summary: Summary) -> Table:
    levels = [lv.level for lv in summary.levels]
    table = _table("Residenti per ATS e livello")
    table.add_column("ATS")
    for header in ("Residenti", *(f"Liv. {lv}" for lv in levels), "Cronici"):
        table.add_column(header, justify="right")
    for a in summary.ats:
        by_level = (it_int(a.by_level.get(lv, 0)) for lv in levels)
        table.add_row(ats_label(a.ats), it_int(a.population), *by_level, it_percent(a.chronic_share))
    return table


def clusters_table(summary: Summary, top: int = 15) -> Table:
    table = _table(f"Cluster di patologie più frequenti (primi {top})")
    table.add_column("Cluster", overflow="fold", ratio=3)
    table.add_column("Principale", overflow="fold", ratio=1)
    for header in ("Residenti", "Quota dei cronici"):
        table.add_column(header, justify="right", no_wrap=True)
    for c in summary.clusters[:top]:
        table.add_row(c.label_it, c.main_name_it, it_int(c.residents), it_percent(c.share_of_chronic))
    return table


def summary_group(summary: Summary, top: int = 15) -> Group:
    """Every table of the summary, in the order an analyst reads them."""
    return Group(
        run_heading(summary),
        levels_table(summary),
        pathologies_table(summary, top),
        ats_table(summary),
        clusters_table(summary, top),
    )


def print_summary(summary: Summary, console: Console | None = None, top: int = 15) -> None:
    (console or Console()).print(summary_group(summary, top))
