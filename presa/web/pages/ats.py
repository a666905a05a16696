"""The ATS analyst's pages: the stratification of their ATS (level pyramid, pathologies, top clusters, by district
and by GP, with charts), the invitation batches and their letters, the gestori and their share of the enrolled.

The stratification is read from the latest run loaded into the care store, through ``presa.stratify`` itself: the
run's views (``runview``) with the residents restricted to the ATS, then the very figure functions of
``presa.stratify.summary`` and the charts of ``presa.stratify.charts``, drawn as SVG. Figures and charts are
computed once per run and ATS and kept in memory. A district is the province of the resident's municipality (the
first three digits of its ISTAT code): the flows carry no district code.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated

import duckdb
from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import Response
from sqlalchemy import func, select

from presa.care.enrolment import TAKEN_IN_CHARGE, EpisodeState
from presa.care.service.common import CareError, today_in_italy
from presa.care.service.invitations import invite
from presa.care.service.organisations import gestori_serving
from presa.care.store.models import Ats, Episode, Gestore, Invitation, InvitationBatch, Patient, StratificationRun
from presa.stratify.charts import BarSeries, chart_figures, chart_style, draw_horizontal_bars, figure_svg, subtitle
from presa.stratify.runview import RunError
from presa.stratify.summary import (
    Summary,
    age_sex_figures,
    ats_figures,
    cluster_figures,
    connect_run,
    count_cells,
    count_clusters,
    gp_figures,
    level_figures,
    level_names,
    multimorbidity_figures,
    pathology_figures,
    rank_gps,
    read_run_info,
    run_header,
    share,
)
from presa.web.access import Permission, latest_episode
from presa.web.api.invitations import batch_letters_response
from presa.web.errors import ApiError, not_found
from presa.web.pages.core import Page, PostedForm, allowed, allowed_post, form_date, form_int
from presa.web.pages.patients import attempt

router = APIRouter(include_in_schema=False)
BatchId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
CHARTS = ("livelli", "patologie", "cluster", "prevalenza_eta", "distretti")
TOP_GPS = 10
GP_MIN_LIST = 100


@dataclass(frozen=True)
class District:
    code: str
    population: int
    chronic: int
    by_level: dict[int, int]

    @property
    def chronic_share(self) -> float:
        return share(self.chronic, self.population)


@dataclass(frozen=True)
class AtsFigures:
    run_id: int
    summary: Summary
    districts: list[District]
    svgs: dict[str, bytes]


class FigureCache:
    """Figures and charts per (run, ATS): computed once, a few kept (an analyst looks at one ATS)."""

    SIZE = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[int, str], AtsFigures] = OrderedDict()

    def get(self, run: StratificationRun, ats: str) -> AtsFigures:
        key = (run.id, ats)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            figures = compute(run, ats)
            self._items[key] = figures
            while len(self._items) > self.SIZE:
                self._items.popitem(last=False)
            return figures


CACHE = FigureCache()


def compute(run: StratificationRun, ats: str) -> AtsFigures:
    """The summary of one ATS of a run, with the charts, through presa.stratify's own figure functions."""
    info = read_run_info(Path(run.source))
    con = connect_run(info)
    try:
        con.execute("ALTER VIEW residents RENAME TO region_residents")
        con.execute("CREATE TEMP TABLE residents AS SELECT * FROM region_residents WHERE ats = ?", [ats])
        count_cells(con)
        count_clusters(con)
        header = run_header(con, info)
        gps = gp_figures(con)
        summary = Summary(
            run=header,
            levels=level_figures(con, level_names(info), header.population),
            pathologies=pathology_figures(con, header.population),
            ats=ats_figures(con),
            gps=gps,
            gp_min_list_size=GP_MIN_LIST,
            gps_top=rank_gps(gps, GP_MIN_LIST, TOP_GPS, highest=True),
            gps_bottom=rank_gps(gps, GP_MIN_LIST, TOP_GPS, highest=False),
            clusters=cluster_figures(con, header, 30),
            age_sex=age_sex_figures(con),
            multimorbidity=multimorbidity_figures(con),
        )
        districts = _districts(con)
    except duckdb.Error as exc:
        raise RunError(f"run {run.source} cannot be read: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()
    return AtsFigures(run.id, summary, districts, _charts(summary, districts))


def _districts(con: duckdb.DuckDBPyConnection) -> list[District]:
    rows = con.execute(
        "SELECT coalesce(substr(municipality, 1, 3), '?') AS district, level, count(*) AS n, "
        "count(*) FILTER (n_pathologies > 0) AS chronic FROM residents GROUP BY ALL"
    ).fetchall()
    found: dict[str, tuple[int, int, dict[int, int]]] = {}
    for district, level, n, chronic in rows:
        population, chronics, levels = found.get(district, (0, 0, {}))
        levels[int(level)] = levels.get(int(level), 0) + int(n)
        found[district] = (population + int(n), chronics + int(chronic), levels)
    return sorted(
        (District(code, p, c, dict(sorted(levels.items()))) for code, (p, c, levels) in found.items()),
        key=lambda d: -d.population,
    )


def _charts(summary: Summary, districts: list[District]) -> dict[str, bytes]:
    figures = chart_figures(summary)
    with chart_style():
        shown = sorted(districts, key=lambda d: -d.chronic_share)[:20]
        figures["distretti"] = draw_horizontal_bars(
            BarSeries(
                labels=tuple(f"Provincia {d.code}" for d in shown),
                values=tuple(100 * d.chronic_share for d in shown),
                notes=tuple(f"{100 * d.chronic_share:.1f}% di {d.population:,}".replace(",", ".") for d in shown),
                groups=tuple(0 for _ in shown),
            ),
            "Quota di residenti cronici per distretto (provincia)",
            subtitle(summary),
            "Cronici ogni 100 residenti",
            integer=False,
        )
        return {name: figure_svg(figure).encode("utf-8") for name, figure in figures.items()}


def latest_run(page: Page) -> StratificationRun | None:
    return page.db.scalars(
        select(StratificationRun).order_by(StratificationRun.reference_date.desc(), StratificationRun.id.desc())
    ).first()


def own_ats(page: Page) -> Ats:
    ats = page.db.get(Ats, page.me.ats_code) if page.me.ats_code else None
    if ats is None:
        raise ApiError(403, f"the {page.me.role} role belongs to no ATS")
    return ats


@router.get("/ats")
def stratification(page: Annotated[Page, allowed(Permission.INVITE)]) -> Response:
    ats = own_ats(page)
    run = latest_run(page)
    figures = None
    problem = None
    if run is not None:
        try:
            figures = CACHE.get(run, ats.code)
        except RunError as exc:
            problem = str(exc)
    page.ctx.audit("read", "stratification", run.id if run else None, detail={"ats": ats.code})
    summary = figures.summary if figures else None
    return page.render(
        "ats_strat.html",
        ats=ats,
        run=run,
        figures=figures,
        summary=summary,
        problem=problem,
        gps=sorted(summary.gps, key=lambda g: -g.list_size) if summary else [],
        charts=CHARTS,
    )


@router.get("/ats/charts/{run_id}/{name}.svg")
def chart(
    page: Annotated[Page, allowed(Permission.INVITE)],
    run_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)],
    name: Annotated[str, PathParam(pattern=r"^[a-z_]{1,20}$")],
) -> Response:
    ats = own_ats(page)
    run = page.db.get(StratificationRun, run_id)
    if run is None or name not in CHARTS:
        raise not_found(f"chart {name}")
    try:
        figures = CACHE.get(run, ats.code)
    except RunError:
        raise not_found(f"chart {name}") from None
    return Response(figures.svgs[name], media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})


# --- invitations -----------------------------------------------------------------------------------------------------


@router.get("/ats/invitations")
def batches(page: Annotated[Page, allowed(Permission.INVITE)]) -> Response:
    ats = own_ats(page)
    rows = page.db.scalars(
        select(InvitationBatch)
        .where(InvitationBatch.ats_code == ats.code)
        .order_by(InvitationBatch.id.desc())
        .limit(200)
    ).all()
    waiting = page.db.scalar(
        select(func.count())
        .select_from(Patient)
        .join(Episode, Episode.id == latest_episode())
        .where(
            Patient.ats_code == ats.code,
            Episode.state == EpisodeState.ELIGIBLE,
            Episode.closed_on.is_(None),
        )
    )
    return page.render(
        "ats_invitations.html",
        ats=ats,
        batches=rows,
        waiting=int(waiting or 0),
        gestori=list(gestori_serving(page.db, ats.code, today_in_italy())),
        today=today_in_italy(),
    )


@router.post("/ats/invitations")
def new_batch(form: PostedForm, page: Annotated[Page, allowed_post(Permission.INVITE)]) -> Response:
    ats = own_ats(page)
    limit = form_int(form, "limit")
    letter_date: date | None = form_date(form, "letter_date")
    made: list[int] = []

    def change() -> None:
        if limit is None:
            raise CareError(page.t("ats.limit_needed"))
        made.append(invite(page.db, ats.code, author=page.me.username, letter_date=letter_date, limit=limit).batch.id)

    response = attempt(page, "/ats/invitations", page.t("flash.batch_made"), change)
    if made:
        return page.redirect(f"/ats/invitations/{made[0]}", page.t("flash.batch_made"))
    return response


def own_batch(page: Page, batch_id: int) -> InvitationBatch:
    batch = page.db.get(InvitationBatch, batch_id)
    if batch is None or batch.ats_code != page.me.ats_code:
        raise not_found(f"invitation batch {batch_id}")
    return batch


@router.get("/ats/invitations/{batch_id}")
def batch(page: Annotated[Page, allowed(Permission.INVITE)], batch_id: BatchId) -> Response:
    found = own_batch(page, batch_id)
    levels = dict(
        page.db.execute(
            select(Patient.level, func.count())
            .join(Invitation, Invitation.patient_id == Patient.id)
            .where(Invitation.batch_id == found.id)
            .group_by(Patient.level)
        ).all()
    )
    states = dict(
        page.db.execute(
            select(Episode.state, func.count())
            .join(Invitation, Invitation.episode_id == Episode.id)
            .where(Invitation.batch_id == found.id)
            .group_by(Episode.state)
        ).all()
    )
    return page.render(
        "ats_batch.html",
        batch=found,
        levels=dict(sorted(levels.items())),
        states=states,
        gestori=list(gestori_serving(page.db, found.ats_code, found.letter_date)),
    )


@router.get("/ats/invitations/{batch_id}/letters.pdf")
def batch_pdf(page: Annotated[Page, allowed(Permission.INVITE)], batch_id: BatchId) -> Response:
    return batch_letters_response(page.ctx, own_batch(page, batch_id).id)


# --- gestori ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GestoreShare:
    gestore: Gestore
    by_state: dict[str, int]
    taken: int
    share: float


@router.get("/ats/gestori")
def gestori(page: Annotated[Page, allowed(Permission.INVITE)]) -> Response:
    ats = own_ats(page)
    counts: dict[int, dict[str, int]] = {}
    for gestore_id, state, n in page.db.execute(
        select(Episode.gestore_id, Episode.state, func.count())
        .select_from(Patient)
        .join(Episode, Episode.id == latest_episode())
        .where(Patient.ats_code == ats.code, Episode.gestore_id.is_not(None))
        .group_by(Episode.gestore_id, Episode.state)
    ):
        if gestore_id is not None:
            counts.setdefault(gestore_id, {})[str(state)] = int(n)
    taken_states = {s.value for s in TAKEN_IN_CHARGE}
    known = {g.id: g for g in gestori_serving(page.db, ats.code, today_in_italy())}
    for gestore_id in counts.keys() - known.keys():
        other = page.db.get(Gestore, gestore_id)
        if other is not None:
            known[gestore_id] = other
    total = sum(n for c in counts.values() for s, n in c.items() if s in taken_states)
    shares = sorted(
        (
            GestoreShare(
                g,
                counts.get(g.id, {}),
                taken := sum(n for s, n in counts.get(g.id, {}).items() if s in taken_states),
                share(taken, total),
            )
            for g in known.values()
        ),
        key=lambda s: (-s.taken, s.gestore.name),
    )
    eligible = page.db.scalar(
        select(func.count()).select_from(Patient).where(Patient.ats_code == ats.code, Patient.eligible.is_(True))
    )
    return page.render(
        "ats_gestori.html",
        ats=ats,
        shares=shares,
        total=total,
        eligible=int(eligible or 0),
        states=[
            s.value
            for s in (
                EpisodeState.GESTORE_CHOSEN,
                EpisodeState.PACT_SIGNED,
                EpisodeState.PAI_ACTIVE,
                EpisodeState.SUSPENDED,
            )
        ],
    )
