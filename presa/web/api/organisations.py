"""Organisations: gestori (with the ATS they serve, contacts, network and clinical managers), providers, and
practitioners with their roles. Anyone signed in may read them (a patient chooses a gestore from them).

Writes: an ATS analyst registers gestori serving their ATS; an analyst or a gestore administrator registers
providers; a gestore administrator manages their own gestore's network and staff; a GP (clinician) opts out of
the presa in carico for themself.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from presa.care.service.common import now, today_in_italy
from presa.care.service.organisations import (
    add_provider,
    add_to_network,
    assign_role,
    create_gestore,
    network,
    opt_out,
    register_practitioner,
)
from presa.care.store.models import (
    Gestore,
    GestoreAts,
    GestoreKind,
    Practitioner,
    PractitionerRole,
    Profession,
    Provider,
    ProviderKind,
    ProviderService,
    RoleKind,
)
from presa.web.access import Permission
from presa.web.deps import Ctx, requires
from presa.web.errors import ApiError, not_found
from presa.web.schemas import (
    AtsCode,
    Body,
    Code,
    Count,
    Day,
    Email,
    Municipality,
    Name,
    Phone,
    QueryId,
    RowId,
    ServiceCode,
    ShortText,
)

router = APIRouter(tags=["organisations"])
RowPath = Annotated[int, Path(ge=1, le=2**31 - 1)]


class GestoreIn(Body):
    code: Code
    name: Name
    kind: GestoreKind
    ats_codes: Annotated[list[AtsCode], Field(min_length=1, max_length=8)]
    accredited_from: Day
    accredited_until: Day | None = None
    capacity: Count
    phone: Phone | None = None
    email: Email | None = None
    address: ShortText | None = None


class ProviderIn(Body):
    code: Code
    name: Name
    kind: ProviderKind
    services: Annotated[tuple[ServiceCode, ...], Field(max_length=2000)] = ()
    ats_code: AtsCode | None = None
    municipality: Municipality | None = None


class NetworkIn(Body):
    provider_id: RowId
    joined_on: Day


class PractitionerIn(Body):
    code: Code
    family_name: Name
    given_name: Name
    profession: Profession
    discipline: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")] | None = None
    ats_code: AtsCode | None = None
    phone: Phone | None = None
    email: Email | None = None


class RoleIn(Body):
    practitioner_id: RowId
    role: RoleKind
    start_on: Day


class OptOutIn(Body):
    on: Day | None = None


class ProviderOut(BaseModel):
    id: int
    code: str
    name: str
    kind: ProviderKind
    ats_code: str | None
    municipality: str | None
    services: list[str]


class PractitionerOut(BaseModel):
    id: int
    code: str
    name: str
    profession: Profession
    discipline: str | None
    ats_code: str | None
    phone: str | None
    email: str | None
    opted_out_on: date | None


class RoleOut(BaseModel):
    id: int
    practitioner_id: int
    gestore_id: int
    role: RoleKind
    start_on: date
    end_on: date | None


class GestoreOut(BaseModel):
    id: int
    code: str
    name: str
    kind: GestoreKind
    ats_codes: list[str]
    accredited_from: date
    accredited_until: date | None
    capacity: int
    phone: str | None
    email: str | None
    address: str | None


class GestoreDetailOut(GestoreOut):
    network: list[ProviderOut]
    clinical_managers: list[PractitionerOut]


def gestore_out(g: Gestore) -> GestoreOut:
    return GestoreOut(
        id=g.id,
        code=g.code,
        name=g.name,
        kind=g.kind,
        ats_codes=list(g.ats_codes),
        accredited_from=g.accredited_from,
        accredited_until=g.accredited_until,
        capacity=g.capacity,
        phone=g.phone,
        email=g.email,
        address=g.address,
    )


def provider_out(p: Provider) -> ProviderOut:
    return ProviderOut(
        id=p.id,
        code=p.code,
        name=p.name,
        kind=p.kind,
        ats_code=p.ats_code,
        municipality=p.municipality,
        services=sorted(s.service_code for s in p.services),
    )


def practitioner_out(p: Practitioner) -> PractitionerOut:
    return PractitionerOut(
        id=p.id,
        code=p.code,
        name=p.display_name,
        profession=p.profession,
        discipline=p.discipline,
        ats_code=p.ats_code,
        phone=p.phone,
        email=p.email,
        opted_out_on=p.opted_out_on,
    )


def role_out(r: PractitionerRole) -> RoleOut:
    return RoleOut(
        id=r.id,
        practitioner_id=r.practitioner_id,
        gestore_id=r.gestore_id,
        role=r.role,
        start_on=r.start_on,
        end_on=r.end_on,
    )


def _own_gestore(ctx: Ctx, gestore_id: int) -> Gestore:
    gestore = ctx.session.get(Gestore, gestore_id)
    if gestore is None:
        raise not_found(f"gestore {gestore_id}")
    if ctx.actor.gestore_id != gestore.id:
        raise ApiError(403, f"your account manages gestore {ctx.actor.gestore_id}, not {gestore.id}")
    return gestore


@router.get("/gestori")
def list_gestori(
    ctx: Annotated[Ctx, requires(Permission.READ_ORGANISATIONS)],
    ats: Annotated[AtsCode | None, Query(description="only those serving this ATS")] = None,
    accredited_on: Annotated[Day | None, Query(description="only those accredited on this day")] = None,
) -> list[GestoreOut]:
    query = select(Gestore).order_by(Gestore.name, Gestore.id)
    if ats is not None:
        query = query.where(Gestore.id.in_(select(GestoreAts.gestore_id).where(GestoreAts.ats_code == ats)))
    if accredited_on is not None:
        query = query.where(
            Gestore.accredited_from <= accredited_on,
            Gestore.accredited_until.is_(None) | (Gestore.accredited_until >= accredited_on),
        )
    return [gestore_out(g) for g in ctx.session.scalars(query)]


@router.get("/gestori/{gestore_id}")
def get_gestore(ctx: Annotated[Ctx, requires(Permission.READ_ORGANISATIONS)], gestore_id: RowPath) -> GestoreDetailOut:
    """A gestore with its network of providers and its clinical managers today."""
    gestore = ctx.session.get(Gestore, gestore_id)
    if gestore is None:
        raise not_found(f"gestore {gestore_id}")
    today = today_in_italy()
    managers = ctx.session.scalars(
        select(Practitioner)
        .join(PractitionerRole, PractitionerRole.practitioner_id == Practitioner.id)
        .where(
            PractitionerRole.gestore_id == gestore.id,
            PractitionerRole.role == RoleKind.CLINICAL_MANAGER,
            PractitionerRole.start_on <= today,
            PractitionerRole.end_on.is_(None) | (PractitionerRole.end_on >= today),
        )
        .order_by(Practitioner.family_name, Practitioner.id)
    ).all()
    return GestoreDetailOut(
        **gestore_out(gestore).model_dump(),
        network=[provider_out(p) for p in network(ctx.session, gestore.id, today)],
        clinical_managers=[practitioner_out(p) for p in managers],
    )


@router.post("/gestori", status_code=201)
def register_gestore(ctx: Annotated[Ctx, requires(Permission.REGISTER_GESTORI)], body: GestoreIn) -> GestoreOut:
    """Register a gestore serving the analyst's ATS."""
    outside = sorted(set(body.ats_codes) - {ctx.actor.ats_code})
    if outside:
        raise ApiError(403, f"your account registers gestori for ATS {ctx.actor.ats_code}, not {', '.join(outside)}")
    gestore = create_gestore(
        ctx.session,
        code=body.code,
        name=body.name,
        kind=body.kind,
        ats_codes=body.ats_codes,
        accredited_from=body.accredited_from,
        accredited_until=body.accredited_until,
        capacity=body.capacity,
        phone=body.phone,
        email=body.email,
        address=body.address,
        author=ctx.actor.username,
        at=now(),
    )
    return gestore_out(gestore)


@router.get("/providers")
def list_providers(
    ctx: Annotated[Ctx, requires(Permission.READ_ORGANISATIONS)],
    ats: Annotated[AtsCode | None, Query()] = None,
    service: Annotated[ServiceCode | None, Query(description="a nomenclator code the provider offers")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[ProviderOut]:
    query = select(Provider).order_by(Provider.code).limit(limit).offset(offset)
    if ats is not None:
        query = query.where(Provider.ats_code == ats)
    if service is not None:
        query = query.where(
            Provider.id.in_(select(ProviderService.provider_id).where(ProviderService.service_code == service))
        )
    return [provider_out(p) for p in ctx.session.scalars(query)]


@router.post("/providers", status_code=201)
def register_provider(ctx: Annotated[Ctx, requires(Permission.REGISTER_PROVIDERS)], body: ProviderIn) -> ProviderOut:
    """Register a provider (erogatore) with the nomenclator services it offers; an analyst, in their own ATS."""
    if ctx.actor.ats_code is not None and body.ats_code != ctx.actor.ats_code:
        raise ApiError(403, f"your account registers providers of ATS {ctx.actor.ats_code}, not {body.ats_code}")
    provider = add_provider(
        ctx.session,
        code=body.code,
        name=body.name,
        kind=body.kind,
        services=body.services,
        ats_code=body.ats_code,
        municipality=body.municipality,
        author=ctx.actor.username,
    )
    return provider_out(provider)


@router.post("/gestori/{gestore_id}/network", status_code=201)
def join_network(
    ctx: Annotated[Ctx, requires(Permission.MANAGE_GESTORE)], gestore_id: RowPath, body: NetworkIn
) -> GestoreDetailOut:
    """Add a provider to the administrator's own gestore's network."""
    gestore = _own_gestore(ctx, gestore_id)
    add_to_network(ctx.session, gestore.id, body.provider_id, joined_on=body.joined_on, author=ctx.actor.username)
    return get_gestore(ctx, gestore.id)


@router.get("/practitioners")
def list_practitioners(
    ctx: Annotated[Ctx, requires(Permission.READ_ORGANISATIONS)],
    gestore_id: Annotated[QueryId | None, Query(description="only those with a role in this gestore")] = None,
    role: Annotated[RoleKind | None, Query()] = None,
    profession: Annotated[Profession | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[PractitionerOut]:
    query = select(Practitioner).order_by(Practitioner.family_name, Practitioner.id).limit(limit).offset(offset)
    if gestore_id is not None or role is not None:
        roles = select(PractitionerRole.practitioner_id)
        if gestore_id is not None:
            roles = roles.where(PractitionerRole.gestore_id == gestore_id)
        if role is not None:
            roles = roles.where(PractitionerRole.role == role)
        query = query.where(Practitioner.id.in_(roles))
    if profession is not None:
        query = query.where(Practitioner.profession == profession)
    return [practitioner_out(p) for p in ctx.session.scalars(query)]


@router.post("/practitioners", status_code=201)
def register(ctx: Annotated[Ctx, requires(Permission.MANAGE_GESTORE)], body: PractitionerIn) -> PractitionerOut:
    """Register a practitioner (GP, specialist, nurse, operator) working in an ATS the own gestore serves."""
    gestore = ctx.session.get(Gestore, ctx.actor.gestore_id) if ctx.actor.gestore_id is not None else None
    served = gestore.ats_codes if gestore is not None else ()
    if body.ats_code not in served:
        raise ApiError(403, f"your gestore registers practitioners of ATS {', '.join(served)}, not {body.ats_code}")
    practitioner = register_practitioner(
        ctx.session,
        code=body.code,
        family_name=body.family_name,
        given_name=body.given_name,
        profession=body.profession,
        discipline=body.discipline,
        ats_code=body.ats_code,
        phone=body.phone,
        email=body.email,
        author=ctx.actor.username,
    )
    return practitioner_out(practitioner)


@router.post("/gestori/{gestore_id}/roles", status_code=201)
def give_role(ctx: Annotated[Ctx, requires(Permission.MANAGE_GESTORE)], gestore_id: RowPath, body: RoleIn) -> RoleOut:
    """Give a practitioner a role (clinical manager, case manager, operator, specialist) in the own gestore."""
    gestore = _own_gestore(ctx, gestore_id)
    role = assign_role(
        ctx.session, body.practitioner_id, gestore.id, body.role, start_on=body.start_on, author=ctx.actor.username
    )
    return role_out(role)


@router.post("/practitioners/{practitioner_id}/opt-out")
def gp_opt_out(
    ctx: Annotated[Ctx, requires(Permission.OPT_OUT)], practitioner_id: RowPath, body: OptOutIn
) -> PractitionerOut:
    """A GP declines to take part as clinical manager (for themself only)."""
    if ctx.actor.practitioner_id != practitioner_id:
        raise ApiError(403, "a GP opts out for themself only")
    day = body.on or today_in_italy()
    return practitioner_out(opt_out(ctx.session, practitioner_id, on=day, author=ctx.actor.username))
