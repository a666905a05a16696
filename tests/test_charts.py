"""Charts: the series drawn are the summary's figures, the files are real PNGs at 150 dpi and the report is one
self-contained Italian HTML page with the charts inline."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from presa.stratify.charts import (
    CHART_FILES,
    age_prevalence_series,
    chart_figures,
    cluster_series,
    level_pyramid_series,
    pathology_series,
    report_html,
    write_charts,
)
from presa.stratify.summary import Summary, compute_summary
from tests.storebuilder import pathology
from tests.test_summary import RunBuilder, make_catalog, small_run


@pytest.fixture
def summary(tmp_path: Path) -> Summary:
    return compute_summary(small_run(tmp_path), gp_min_list_size=1)


def test_pyramid_series_puts_level_one_first_with_counts_by_sex(summary: Summary) -> None:
    series = level_pyramid_series(summary)
    assert series.labels[0].startswith("1 · Fragilità clinica\n1 residente (10,0%)")
    assert series.labels[4].startswith("5 · Non cronici - nessun uso dei servizi")
    assert series.males == (0, 1, 2, 0, 2) and series.females == (1, 1, 1, 1, 1)


def test_age_series_in_per_cent_by_sex_and_overall(summary: Summary) -> None:
    series = age_prevalence_series(summary)
    assert series.bands == ("0-14", "15-44", "45-64", "65-74", "75-84", "85+")
    band = series.bands.index("65-74")  # women 2 of 2 chronic, the one man too
    assert (series.females[band], series.males[band], series.total[band]) == (100.0, 100.0, 100.0)
    young = series.bands.index("15-44")  # three residents, none chronic; no woman in 0-14
    assert series.total[young] == 0.0 and series.females[0] == 0.0


def test_bar_series_follow_the_summary_order(summary: Summary) -> None:
    clusters = cluster_series(summary, top=2)
    assert clusters.labels == ("Diabete mellito + Ipertensione arteriosa", "Ipertensione arteriosa")
    assert clusters.values == (2.0, 2.0) and clusters.groups == (2, 1)
    assert clusters.notes[0] == "2 · 33,3% dei cronici"
    assert cluster_series(summary).groups[-1] == 4, "a cluster of four is drawn in the darkest colour"
    pathologies = pathology_series(summary)
    assert pathologies.labels[0] == "Ipertensione arteriosa" and pathologies.values[0] == pytest.approx(500.0)
    assert "Dialisi" not in pathologies.labels, "a pathology nobody has is not drawn"
    assert pathologies.notes[0] == "500,0‰ (5)"


def test_each_chart_has_its_title_and_the_run_in_the_subtitle(summary: Summary) -> None:
    figures = chart_figures(summary)
    assert set(figures) == set(CHART_FILES)
    for figure in figures.values():
        texts = [t.get_text() for t in figure.texts]
        assert any("Data di riferimento 31/12/2025 · popolazione 10" in t for t in texts)
    pyramid_axes = figures["livelli"].axes[0]
    assert pyramid_axes.get_yticklabels()[0].get_text().startswith("1 · Fragilità clinica")
    assert pyramid_axes.get_ylim()[0] > pyramid_axes.get_ylim()[1], "level 1 is drawn at the top"


def test_pngs_at_150_dpi_and_one_html_report(tmp_path: Path, summary: Summary) -> None:
    files = write_charts(summary, tmp_path / "charts")
    assert sorted(p.name for p in files.pngs) == sorted(CHART_FILES.values())
    for png in files.pngs:
        with Image.open(png) as image:
            assert image.format == "PNG"
            assert image.info["dpi"] == pytest.approx((150, 150), abs=0.1)
            assert image.width == 1500, "10 inches at 150 dpi"
    assert files.report == tmp_path / "charts" / "report.html"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.lang = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.lang = values.get("lang") or self.lang
        self.links.extend(v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#"))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_report_is_self_contained_and_in_italian(tmp_path: Path, summary: Summary) -> None:
    page = _Page()
    page.feed(write_charts(summary, tmp_path / "charts").report.read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert page.lang == "it" and page.tags.count("svg") == 4
    assert page.links == [], "no file or address outside the page"
    assert "Stratificazione della popolazione al 31/12/2025" in text
    for heading in ("Livelli di presa in carico", "Cluster di patologie", "Residenti per ATS e livello"):
        assert heading in text
    assert "Fragilità clinica" in text and "ATS 321 Città Metropolitana di Milano" in text
    assert "Quota di cronici più alta" in text and "GP1" in text


def test_names_are_escaped_in_the_report(tmp_path: Path) -> None:
    entries = [pathology("rare", {"exemption": {"codes": ["RF0"]}}, 1, name_it="Malattie <rare> & altre")]
    run = RunBuilder(make_catalog(tmp_path / "catalog", entries))
    run.resident("r1", ["rare"])
    summary = compute_summary(run.write(tmp_path / "run"))
    html = report_html(summary, {})
    assert "Malattie &lt;rare&gt; &amp; altre" in html and "<rare>" not in html
    page = _Page()
    page.feed(write_charts(summary, tmp_path / "charts").report.read_text(encoding="utf-8"))
    assert "rare" not in page.tags and page.tags.count("svg") == 4, "names inside the charts do not break the page"


def test_an_empty_population_still_gives_every_chart(tmp_path: Path) -> None:
    run_dir = RunBuilder(make_catalog(tmp_path / "catalog")).write(tmp_path / "run")
    files = write_charts(compute_summary(run_dir), tmp_path / "charts")
    assert all(p.stat().st_size > 10_000 for p in files.pngs)
    assert "Nessun dato" in files.report.read_text(encoding="utf-8")
