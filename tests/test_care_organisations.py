"""Organisations and people: gestori and the ATS they serve, providers and networks, roles, a GP's opt-out."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from presa.care.service import CareError, transition
from presa.care.service.organisations import (
    active_role,
    add_provider,
    add_to_network,
    assign_role,
    cancel_opt_out,
    gestori_serving,
    network,
    opt_out,
    register_practitioner,
)
from presa.care.store.audit import trail
from presa.care.store.models import GestoreKind, PractitionerRole, RoleKind
from tests.carebuilder import AT, TODAY, CareRuns, enrolled, gestore


def test_a_gestore_serves_known_ats_with_ordered_accreditation(db: Session) -> None:
    asst = gestore(db, "ASST-LARIANA", kind="asst", ats=("322", "321"), capacity=5000)
    assert (asst.kind, asst.ats_codes, asst.capacity) == (GestoreKind.ASST, ("321", "322"), 5000)
    assert asst.accredited_on(date(2025, 1, 1)) and not asst.accredited_on(date(2024, 12, 31))
    with pytest.raises(CareError, match=r"unknown ATS code.*399"):
        gestore(db, "X1", ats=("399",))
    with pytest.raises(CareError, match="give at least one ATS"):
        gestore(db, "X2", ats=())
    with pytest.raises(CareError, match=r"accreditation ends .* before it starts"):
        gestore(db, "X3", accredited_from=date(2026, 1, 1), accredited_until=date(2025, 1, 1))
    with pytest.raises(CareError, match="unknown gestore kind 'charity': give one of gp_cooperative, asst"):
        gestore(db, "X4", kind="charity")
    assert [a.action for a in trail(db, actor="ats-admin")] == ["create"]


def test_the_gestori_of_an_area_are_those_accredited_that_serve_it(db: Session) -> None:
    gestore(db, "B-COOP", ats=("321",))
    gestore(db, "A-ASST", kind="asst", ats=("321", "324"))
    gestore(db, "LAPSED", accredited_from=date(2020, 1, 1), accredited_until=date(2025, 6, 30))
    gestore(db, "BERGAMO", ats=("325",))
    assert [g.code for g in gestori_serving(db, "321", TODAY)] == ["A-ASST", "B-COOP"]
    assert [g.code for g in gestori_serving(db, "321", date(2025, 3, 1))] == ["A-ASST", "B-COOP", "LAPSED"]
    assert [g.code for g in gestori_serving(db, "324", TODAY)] == ["A-ASST"]


def test_providers_offer_nomenclator_services_and_join_networks(db: Session) -> None:
    lab = add_provider(
        db, code="LAB1", name="Laboratorio Analisi", kind="laboratory", services=["90.27.1", "90.04.5"], author="a"
    )
    assert sorted(s.service_code for s in lab.services) == ["90.04.5", "90.27.1"]
    with pytest.raises(CareError, match=r"service code.*00\.00 not in the DPCM 2017 nomenclator"):
        add_provider(db, code="BAD", name="Bad", kind="laboratory", services=["00.00"], author="a")
    coop = gestore(db)
    add_to_network(db, coop.id, lab.id, joined_on=date(2026, 1, 1), author="a")
    with pytest.raises(CareError, match="already in the network"):
        add_to_network(db, coop.id, lab.id, joined_on=date(2026, 1, 1), author="a")
    assert [p.code for p in network(db, coop.id, TODAY)] == ["LAB1"]
    assert network(db, coop.id, date(2025, 12, 31)) == []


def test_roles_follow_professions_and_accreditation(db: Session) -> None:
    coop = gestore(db)
    nurse = register_practitioner(db, code="N1", family_name="Verdi", given_name="Luca", profession="nurse", author="a")
    gp = register_practitioner(db, code="GP1", family_name="Rossi", given_name="Maria", profession="gp", author="a")
    assign_role(db, nurse.id, coop.id, "case_manager", start_on=date(2026, 1, 1), author="a")
    with pytest.raises(CareError, match="a nurse cannot be clinical_manager: the role is for gp, specialist"):
        assign_role(db, nurse.id, coop.id, "clinical_manager", start_on=date(2026, 1, 1), author="a")
    with pytest.raises(CareError, match="is not accredited on 2024-06-01"):
        assign_role(db, gp.id, coop.id, "clinical_manager", start_on=date(2024, 6, 1), author="a")
    assign_role(db, gp.id, coop.id, "clinical_manager", start_on=date(2026, 1, 1), author="a")
    with pytest.raises(CareError, match="GP1 is already clinical_manager of gestore COOP1"):
        assign_role(db, gp.id, coop.id, "clinical_manager", start_on=date(2026, 2, 1), author="a")
    assert active_role(db, gp.id, coop.id, RoleKind.CLINICAL_MANAGER, TODAY) is not None
    assert active_role(db, gp.id, coop.id, RoleKind.CLINICAL_MANAGER, date(2025, 12, 31)) is None


def test_a_gp_may_opt_out_but_not_while_patients_depend_on_them(db: Session, tmp_path: Path) -> None:
    care = enrolled(db, CareRuns(tmp_path))
    gp = care.manager
    with pytest.raises(CareError, match="GP1 is the clinical manager of 1 open enrolment episode"):
        opt_out(db, gp.id, on=TODAY, author="gp1")
    transition(db, care.episode.id, "withdrawn", reason="moved away", author="op", at=AT, today=TODAY)

    opt_out(db, gp.id, on=TODAY, author="gp1")
    assert gp.opted_out_on == TODAY
    [role] = db.query(PractitionerRole).filter_by(practitioner_id=gp.id).all()
    assert role.end_on == TODAY
    with pytest.raises(CareError, match="GP GP1 opted out of the presa in carico on 2026-03-02"):
        assign_role(db, gp.id, care.gestore.id, "clinical_manager", start_on=date(2026, 3, 3), author="a")
    with pytest.raises(CareError, match="already opted out"):
        opt_out(db, gp.id, on=TODAY, author="gp1")

    cancel_opt_out(db, gp.id, author="gp1")
    assign_role(db, gp.id, care.gestore.id, "clinical_manager", start_on=date(2026, 3, 3), author="a")
    actions = [a.action for a in trail(db, actor="gp1")]
    assert actions == ["opt_out", "cancel_opt_out"]


def test_only_a_gp_opts_out(db: Session) -> None:
    specialist = register_practitioner(
        db,
        code="S1",
        family_name="Neri",
        given_name="Paolo",
        profession="specialist",
        discipline="cardiology",
        author="a",
    )
    with pytest.raises(CareError, match="only a GP can opt out of the presa in carico; S1 is a specialist"):
        opt_out(db, specialist.id, on=TODAY, author="a")
