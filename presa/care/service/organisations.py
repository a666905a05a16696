"""Gestori, their providers (erogatori) and network, practitioners and their roles; a GP's opt-out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from presa.care.enrolment import OPEN_STATES
from presa.care.pdta import nomenclator_codes
from presa.care.service.common import CareError, get, now, require_text
from presa.care.store.audit import record
from presa.care.store.models import (
    Ats,
    Episode,
    Gestore,
    GestoreAts,
    GestoreKind,
    NetworkMembership,
    Practitioner,
    PractitionerRole,
    Profession,
    Provider,
    ProviderKind,
    ProviderService,
    RoleKind,
)

E = TypeVar("E", bound=StrEnum)

ROLE_PROFESSIONS: dict[RoleKind, frozenset[Profession]] = {
    RoleKind.CLINICAL_MANAGER: frozenset({Profession.GP, Profession.SPECIALIST}),
    RoleKind.CASE_MANAGER: frozenset({Profession.NURSE, Profession.GP, Profession.SPECIALIST}),
    RoleKind.OPERATOR: frozenset({Profession.OPERATOR, Profession.NURSE}),
    RoleKind.SPECIALIST: frozenset({Profession.SPECIALIST}),
}
"""Who may hold each role within a gestore (the clinical manager is a GP or a specialist: docs/GLOSSARY.md)."""


def create_gestore(
    session: Session,
    *,
    code: str,
    name: str,
    kind: GestoreKind | str,
    ats_codes: Iterable[str],
    accredited_from: date,
    capacity: int,
    author: str,
    accredited_until: date | None = None,
    phone: str | None = None,
    email: str | None = None,
    address: str | None = None,
    at: datetime | None = None,
) -> Gestore:
    areas = sorted(set(ats_codes))
    if not areas:
        raise CareError(f"gestore {code}: give at least one ATS where it takes patients in charge")
    _check_ats(session, areas)
    if capacity < 0:
        raise CareError(f"gestore {code}: capacity {capacity} is negative")
    if accredited_until is not None and accredited_until < accredited_from:
        raise CareError(f"gestore {code}: accreditation ends ({accredited_until}) before it starts ({accredited_from})")
    gestore = Gestore(
        code=require_text(code, "the gestore's code"),
        name=require_text(name, "the gestore's name"),
        kind=_enum(GestoreKind, kind, "gestore kind"),
        accredited_from=accredited_from,
        accredited_until=accredited_until,
        capacity=capacity,
        phone=phone,
        email=email,
        address=address,
        created_at=at or now(),
        areas=[GestoreAts(ats_code=a) for a in areas],
    )
    session.add(gestore)
    session.flush()
    record(session, actor=author, action="create", entity="gestore", entity_id=gestore.id, detail={"code": code})
    return gestore


def add_provider(
    session: Session,
    *,
    code: str,
    name: str,
    kind: ProviderKind | str,
    author: str,
    services: Iterable[str] = (),
    ats_code: str | None = None,
    municipality: str | None = None,
) -> Provider:
    """A provider with the nomenclator services it offers (each code checked against DPCM 12/01/2017)."""
    offered = sorted(set(services))
    unknown = [s for s in offered if s not in nomenclator_codes()]
    if unknown:
        raise CareError(f"provider {code}: service code(s) {', '.join(unknown)} not in the DPCM 2017 nomenclator")
    if ats_code is not None:
        _check_ats(session, [ats_code])
    provider = Provider(
        code=require_text(code, "the provider's code"),
        name=require_text(name, "the provider's name"),
        kind=_enum(ProviderKind, kind, "provider kind"),
        ats_code=ats_code,
        municipality=municipality,
        services=[ProviderService(service_code=s) for s in offered],
    )
    session.add(provider)
    session.flush()
    record(session, actor=author, action="create", entity="provider", entity_id=provider.id, detail={"code": code})
    return provider


def add_to_network(
    session: Session, gestore_id: int, provider_id: int, *, joined_on: date, author: str
) -> NetworkMembership:
    gestore = get(session, Gestore, gestore_id, "gestore")
    provider = get(session, Provider, provider_id, "provider")
    if session.get(NetworkMembership, (gestore.id, provider.id)) is not None:
        raise CareError(f"provider {provider.code} is already in the network of gestore {gestore.code}")
    membership = NetworkMembership(gestore_id=gestore.id, provider_id=provider.id, joined_on=joined_on)
    session.add(membership)
    session.flush()
    record(
        session,
        actor=author,
        action="add_to_network",
        entity="gestore",
        entity_id=gestore.id,
        detail={"provider_id": provider.id},
    )
    return membership


def network(session: Session, gestore_id: int, on: date) -> Sequence[Provider]:
    """The providers in a gestore's network on a day."""
    query = (
        select(Provider)
        .join(NetworkMembership, NetworkMembership.provider_id == Provider.id)
        .where(
            NetworkMembership.gestore_id == gestore_id,
            NetworkMembership.joined_on <= on,
            (NetworkMembership.left_on.is_(None)) | (NetworkMembership.left_on >= on),
        )
        .order_by(Provider.code)
    )
    return session.scalars(query).all()


def register_practitioner(
    session: Session,
    *,
    code: str,
    family_name: str,
    given_name: str,
    profession: Profession | str,
    author: str,
    discipline: str | None = None,
    ats_code: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> Practitioner:
    if ats_code is not None:
        _check_ats(session, [ats_code])
    practitioner = Practitioner(
        code=require_text(code, "the practitioner's code"),
        family_name=require_text(family_name, "the family name"),
        given_name=require_text(given_name, "the given name"),
        profession=_enum(Profession, profession, "profession"),
        discipline=discipline,
        ats_code=ats_code,
        phone=phone,
        email=email,
    )
    session.add(practitioner)
    session.flush()
    record(session, actor=author, action="create", entity="practitioner", entity_id=practitioner.id)
    return practitioner


def assign_role(
    session: Session,
    practitioner_id: int,
    gestore_id: int,
    role: RoleKind | str,
    *,
    start_on: date,
    author: str,
) -> PractitionerRole:
    """Give a practitioner a role within a gestore; a GP joining as clinical manager must not have opted out."""
    practitioner = get(session, Practitioner, practitioner_id, "practitioner")
    gestore = get(session, Gestore, gestore_id, "gestore")
    kind = _enum(RoleKind, role, "role")
    allowed = ROLE_PROFESSIONS[kind]
    if practitioner.profession not in allowed:
        names = ", ".join(sorted(allowed))
        raise CareError(f"a {practitioner.profession} cannot be {kind}: the role is for {names}")
    if practitioner.opted_out_on is not None and kind is RoleKind.CLINICAL_MANAGER:
        raise CareError(
            f"GP {practitioner.code} opted out of the presa in carico on {practitioner.opted_out_on.isoformat()}: "
            "cancel the opt-out first"
        )
    if not gestore.accredited_on(start_on):
        raise CareError(f"gestore {gestore.code} is not accredited on {start_on.isoformat()}")
    if active_role(session, practitioner.id, gestore.id, kind, start_on) is not None:
        raise CareError(f"{practitioner.code} is already {kind} of gestore {gestore.code}")
    assigned = PractitionerRole(
        practitioner_id=practitioner.id, gestore_id=gestore.id, role=kind, start_on=start_on, end_on=None
    )
    session.add(assigned)
    session.flush()
    record(
        session,
        actor=author,
        action="assign_role",
        entity="practitioner",
        entity_id=practitioner.id,
        detail={"gestore_id": gestore.id, "role": kind.value, "start_on": start_on.isoformat()},
    )
    return assigned


def active_role(
    session: Session, practitioner_id: int, gestore_id: int, role: RoleKind, on: date
) -> PractitionerRole | None:
    query = select(PractitionerRole).where(
        PractitionerRole.practitioner_id == practitioner_id,
        PractitionerRole.gestore_id == gestore_id,
        PractitionerRole.role == role,
        PractitionerRole.start_on <= on,
        (PractitionerRole.end_on.is_(None)) | (PractitionerRole.end_on >= on),
    )
    return session.scalars(query).first()


def opt_out(session: Session, practitioner_id: int, *, on: date, author: str) -> Practitioner:
    """A GP declines to take part as clinical manager: their clinical-manager roles end on ``on``.

    Refused while the GP is the clinical manager of an open enrolment episode: those patients need another
    clinical manager first.
    """
    gp = get(session, Practitioner, practitioner_id, "practitioner")
    if gp.profession is not Profession.GP:
        raise CareError(f"only a GP can opt out of the presa in carico; {gp.code} is a {gp.profession}")
    if gp.opted_out_on is not None:
        raise CareError(f"GP {gp.code} already opted out on {gp.opted_out_on.isoformat()}")
    followed = session.scalar(
        select(func.count())
        .select_from(Episode)
        .where(Episode.clinical_manager_id == gp.id, Episode.state.in_(OPEN_STATES))
    )
    if followed:
        raise CareError(
            f"GP {gp.code} is the clinical manager of {followed} open enrolment episode(s): "
            "give those patients another clinical manager before opting out"
        )
    roles = session.scalars(
        select(PractitionerRole).where(
            PractitionerRole.practitioner_id == gp.id,
            PractitionerRole.role == RoleKind.CLINICAL_MANAGER,
            PractitionerRole.end_on.is_(None) | (PractitionerRole.end_on > on),
        )
    ).all()
    for role in roles:
        role.end_on = max(on, role.start_on)
    gp.opted_out_on = on
    session.flush()
    record(
        session,
        actor=author,
        action="opt_out",
        entity="practitioner",
        entity_id=gp.id,
        detail={"on": on.isoformat(), "roles_ended": len(roles)},
    )
    return gp


def cancel_opt_out(session: Session, practitioner_id: int, *, author: str) -> Practitioner:
    gp = get(session, Practitioner, practitioner_id, "practitioner")
    if gp.opted_out_on is None:
        raise CareError(f"GP {gp.code} has not opted out")
    gp.opted_out_on = None
    session.flush()
    record(session, actor=author, action="cancel_opt_out", entity="practitioner", entity_id=gp.id)
    return gp


def gestori_serving(session: Session, ats_code: str, on: date) -> Sequence[Gestore]:
    """The gestori accredited on ``on`` that take patients of an ATS in charge, by name (invitation letters)."""
    query = (
        select(Gestore)
        .join(GestoreAts, GestoreAts.gestore_id == Gestore.id)
        .where(
            GestoreAts.ats_code == ats_code,
            Gestore.accredited_from <= on,
            (Gestore.accredited_until.is_(None)) | (Gestore.accredited_until >= on),
        )
        .order_by(Gestore.name)
    )
    return session.scalars(query).all()


def _check_ats(session: Session, codes: Sequence[str]) -> None:
    known = set(session.scalars(select(Ats.code)))
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise CareError(f"unknown ATS code(s) {', '.join(unknown)}: the ATS are {', '.join(sorted(known))}")


def _enum(kind: type[E], value: E | str, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise CareError(f"unknown {what} '{value}': give one of {', '.join(m.value for m in kind)}") from None
