"""The gestore's pages: the enrolment funnel by GP and by level, the network of providers, the case managers and
their patients.

The funnel counts patients, it names none: for the GPs who work for the gestore (practitioners with a role in it),
their eligible patients, those invited, those who chose this gestore, signed the pact, have an active PAI; plus the
patients who chose this gestore from other GPs. Counts come from each patient's latest episode
(``presa.web.access.latest_episode``). The case managers' lists name patients and go through the scope and the
audit like every list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import Integer, case, exists, func, or_, select
from sqlalchemy.sql import ColumnElement

from presa.care.enrolment import EpisodeState
from presa.care.service.common import today_in_italy
from presa.care.service.organisations import network
from presa.care.store.models import (
    Episode,
    Gestore,
    Invitation,
    NetworkMembership,
    Patient,
    Practitioner,
    PractitionerRole,
    Profession,
    RoleKind,
)
from presa.web.access import Permission, latest_episode
from presa.web.errors import ApiError
from presa.web.pages.core import Page, allowed
from presa.web.pages.patients import names_of
from presa.web.pages.scope import scoped_patients

router = APIRouter(include_in_schema=False)
STAGES = ("eligible", "invited", "chose_us", "pact_signed", "pai_active")
SIGNED = (EpisodeState.PACT_SIGNED, EpisodeState.PAI_ACTIVE, EpisodeState.SUSPENDED)
OTHER_GPS = ""


@dataclass
class FunnelRow:
    key: str
    label: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    def add(self, values: dict[str, int]) -> None:
        for stage in STAGES:
            self.counts[stage] += values[stage]


def own_gestore(page: Page) -> Gestore:
    if page.me.gestore_id is None:
        raise ApiError(403, f"the {page.me.role} role belongs to no gestore")
    gestore = page.db.get(Gestore, page.me.gestore_id)
    if gestore is None:
        raise ApiError(404, "no gestore")
    return gestore


def gestore_gps(page: Page, gestore_id: int) -> dict[str, Practitioner]:
    """The GPs working for the gestore in any role, by their code (the flows' ``gp_id``)."""
    rows = page.db.scalars(
        select(Practitioner)
        .join(PractitionerRole, PractitionerRole.practitioner_id == Practitioner.id)
        .where(PractitionerRole.gestore_id == gestore_id, Practitioner.profession == Profession.GP)
        .distinct()
    )
    return {p.code: p for p in rows}


def _stage_sums(gestore_id: int) -> list[ColumnElement[int]]:
    ours = Episode.gestore_id == gestore_id
    invited = or_(
        exists().where(Invitation.episode_id == Episode.id),
        Episode.state.notin_((EpisodeState.ELIGIBLE, EpisodeState.INVITED)) & Episode.gestore_id.is_not(None),
    )
    conditions = {
        "eligible": or_(Patient.eligible.is_(True), ours),
        "invited": or_(invited, ours),
        "chose_us": ours,
        "pact_signed": ours & Episode.state.in_(SIGNED),
        "pai_active": ours & (Episode.state == EpisodeState.PAI_ACTIVE),
    }
    return [func.coalesce(func.sum(case((c, 1), else_=0)), 0).cast(Integer).label(k) for k, c in conditions.items()]


@router.get("/gestore")
def funnel(page: Annotated[Page, allowed(Permission.MANAGE_GESTORE)]) -> Response:
    gestore = own_gestore(page)
    gps = gestore_gps(page, gestore.id)
    population = or_(Patient.gp_id.in_(list(gps)), Episode.gestore_id == gestore.id)
    query = (
        select(Patient.gp_id, Patient.level, *_stage_sums(gestore.id))
        .select_from(Patient)
        .outerjoin(Episode, Episode.id == latest_episode())
        .where(population, Patient.ats_code.in_(gestore.ats_codes))
        .group_by(Patient.gp_id, Patient.level)
    )
    by_gp: dict[str, FunnelRow] = {}
    by_level: dict[int, FunnelRow] = {}
    total = FunnelRow("total", page.t("gestore.total"))
    for row in page.db.execute(query).mappings():
        values = {stage: int(row[stage]) for stage in STAGES}
        code = row["gp_id"] if row["gp_id"] in gps else OTHER_GPS
        label = gps[code].display_name if code in gps else page.t("gestore.other_gps")
        by_gp.setdefault(code, FunnelRow(code, label)).add(values)
        level = int(row["level"])
        by_level.setdefault(level, FunnelRow(str(level), page.t(f"level.{level}"))).add(values)
        total.add(values)
    for code, practitioner in gps.items():
        by_gp.setdefault(code, FunnelRow(code, practitioner.display_name))
    gp_rows = sorted((r for r in by_gp.values() if r.key != OTHER_GPS), key=lambda r: r.label.lower())
    if OTHER_GPS in by_gp:
        gp_rows.append(by_gp[OTHER_GPS])
    return page.render(
        "gestore_funnel.html",
        gestore=gestore,
        stages=STAGES,
        gp_rows=gp_rows,
        level_rows=[by_level[lv] for lv in sorted(by_level)],
        total=total,
    )


@router.get("/gestore/network")
def providers(page: Annotated[Page, allowed(Permission.MANAGE_GESTORE)]) -> Response:
    gestore = own_gestore(page)
    today = today_in_italy()
    members = list(network(page.db, gestore.id, today))
    joined = dict(
        page.db.execute(
            select(NetworkMembership.provider_id, NetworkMembership.joined_on).where(
                NetworkMembership.gestore_id == gestore.id
            )
        ).all()
    )
    return page.render("gestore_network.html", gestore=gestore, providers=members, joined=joined)


@router.get("/gestore/case-managers")
def case_managers(
    page: Annotated[Page, allowed(Permission.MANAGE_GESTORE)],
    cm: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    gestore = own_gestore(page)
    today = today_in_italy()
    managers = list(
        page.db.scalars(
            select(Practitioner)
            .join(PractitionerRole, PractitionerRole.practitioner_id == Practitioner.id)
            .where(
                PractitionerRole.gestore_id == gestore.id,
                PractitionerRole.role == RoleKind.CASE_MANAGER,
                PractitionerRole.start_on <= today,
                or_(PractitionerRole.end_on.is_(None), PractitionerRole.end_on >= today),
            )
            .distinct()
            .order_by(Practitioner.family_name, Practitioner.given_name)
        )
    )
    open_episodes = (Episode.gestore_id == gestore.id) & Episode.closed_on.is_(None)
    counts = dict(
        page.db.execute(
            select(Episode.case_manager_id, func.count()).where(open_episodes).group_by(Episode.case_manager_id)
        ).all()
    )
    chosen = next((m for m in managers if m.id == cm), None)
    rows = []
    if chosen is not None:
        found = page.db.execute(
            scoped_patients(page.me).where(Episode.case_manager_id == chosen.id).order_by(Patient.id).limit(500)
        )
        rows = list(found)
        page.ctx.audit_patients("list", "patient", [p.id for p, _ in rows])
    _gestori, people = names_of(page, [e for _, e in rows if e is not None])
    return page.render(
        "gestore_staff.html",
        gestore=gestore,
        managers=managers,
        counts=counts,
        unassigned=counts.get(None, 0),
        chosen=chosen,
        rows=rows,
        people=people,
    )
