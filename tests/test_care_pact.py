"""The care pact: consent scopes, signatures, versions, revocation, and what processing it allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from presa.care.enrolment import EpisodeState
from presa.care.pact import (
    ConsentScope,
    PactError,
    PactFacts,
    PactStatus,
    SignerRole,
    check_scopes,
    missing_signatures,
    processing_decision,
)
from presa.care.service import (
    CareError,
    can_process,
    choose_gestore,
    draft_pact,
    history,
    invite,
    load_run,
    open_episode,
    require_processing,
    revoke_pact,
    sign_pact,
    transition,
)
from presa.care.service.episodes import assign_clinical_manager
from presa.care.service.pacts import ProcessingRefusedError, pacts_of
from presa.care.store.audit import trail
from presa.care.store.models import CarePact, Episode
from tests.carebuilder import AT, TODAY, CareRuns, clinical_manager, enrolled, gestore

C = ConsentScope
SIGNED_AT = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)


# --- pure rules ----------------------------------------------------------------------------------------------


def test_scopes_must_be_known_and_include_care() -> None:
    assert check_scopes(["care", "reminders_sms"]) == {C.CARE, C.REMINDERS_SMS}
    with pytest.raises(PactError, match="a care pact needs the 'care' scope"):
        check_scopes(["data_sharing"])
    with pytest.raises(PactError, match=r"unknown consent scope.*'marketing'.*the scopes are care, data_sharing"):
        check_scopes(["care", "marketing"])


def test_a_pact_needs_the_patients_side_and_the_clinical_manager() -> None:
    assert missing_signatures([]) == ("patient or legal_representative", "clinical_manager")
    assert missing_signatures([SignerRole.LEGAL_REPRESENTATIVE]) == ("clinical_manager",)
    assert missing_signatures([SignerRole.PATIENT, SignerRole.CLINICAL_MANAGER]) == ()


def test_the_latest_signed_or_revoked_version_decides() -> None:
    def facts(version: int, status: PactStatus, **extra: object) -> PactFacts:
        return PactFacts(version, version, status, frozenset({C.CARE}), SIGNED_AT, **extra)  # type: ignore[arg-type]

    assert not processing_decision("R1", None, []).allowed
    assert processing_decision("R1", EpisodeState.ENDED, [facts(1, PactStatus.SIGNED)]).reason == (
        "patient R1 has no open enrolment episode (its last episode is ended)"
    )
    assert processing_decision("R1", EpisodeState.GESTORE_CHOSEN, [facts(1, PactStatus.DRAFT)]).reason == (
        "patient R1 has no signed care pact"
    )
    revoked = facts(
        2, PactStatus.REVOKED, revoked_at=SIGNED_AT + timedelta(days=3), revoked_by="op", revocation_reason="asked"
    )
    decision = processing_decision("R1", EpisodeState.PAI_ACTIVE, [facts(1, PactStatus.SUPERSEDED), revoked])
    assert not decision.allowed and decision.pact_id == 2
    assert decision.reason == (
        "the care pact v2 of patient R1 was revoked on 2026-02-04 by op (asked): "
        "no further processing until a new version is signed"
    )
    renewed = processing_decision("R1", EpisodeState.PAI_ACTIVE, [revoked, facts(3, PactStatus.SIGNED)])
    assert renewed.allowed and renewed.pact_id == 3 and renewed.reason == "care pact v3 signed on 2026-02-01"
    assert renewed.allows(C.CARE) and not renewed.allows(C.REMINDERS_SMS)


# --- in the store --------------------------------------------------------------------------------------------


@pytest.fixture
def runs(tmp_path: Path) -> CareRuns:
    return CareRuns(tmp_path)


def test_signing_by_both_sides_puts_the_pact_in_force_and_moves_the_episode(db: Session, runs: CareRuns) -> None:
    care = enrolled(db, runs, scopes=["care", "reminders_email"])
    pact = care.pact
    assert (pact.version, pact.status, pact.signed_at) == (1, PactStatus.SIGNED, AT)
    assert pact.scopes == {C.CARE, C.REMINDERS_EMAIL}
    assert [(s.signer_role, s.signer_name) for s in pact.signatures] == [
        (SignerRole.PATIENT, "Anna Bianchi"),
        (SignerRole.CLINICAL_MANAGER, "Maria Rossi"),
    ]
    assert (pact.gestore_id, pact.clinical_manager_id) == (care.gestore.id, care.manager.id)
    assert care.episode.state is EpisodeState.PACT_SIGNED
    assert history(db, care.episode.id)[-1].reason == "care pact v1 signed"
    decision = can_process(db, care.patient.id)
    assert decision.allowed and decision.pact_id == pact.id
    assert decision.allows(C.REMINDERS_EMAIL) and not decision.allows(C.REMINDERS_SMS)
    actions = [(a.action, a.entity) for a in trail(db, patient_id=care.patient.id) if a.entity == "care_pact"]
    assert actions == [("draft", "care_pact"), ("sign", "care_pact"), ("sign", "care_pact")]


def test_one_signature_is_not_enough_and_signatures_are_checked(db: Session, runs: CareRuns) -> None:
    care = enrolled(db, runs)
    draft = draft_pact(db, care.episode.id, scopes=["care"], author="op", at=AT)
    assert draft.version == 2 and draft.status is PactStatus.DRAFT

    def sign(role: str, at: datetime = AT, signer: str = "Anna Bianchi") -> CarePact:
        return sign_pact(db, draft.id, role=role, signer=signer, signed_at=at, author="op", at=AT, today=TODAY)

    with pytest.raises(PactError, match="is before care pact v2 was drafted"):
        sign("patient", AT - timedelta(minutes=1))
    with pytest.raises(PactError, match="is in the future"):
        sign("patient", AT + timedelta(minutes=1))
    with pytest.raises(PactError, match="unknown signer role 'notary'"):
        sign("notary")
    with pytest.raises(PactError, match="needs the signer's name"):
        sign("patient", signer=" ")
    assert sign("legal_representative").status is PactStatus.DRAFT
    with pytest.raises(PactError, match="already signed on the patient's side"):
        sign("patient")
    assert can_process(db, care.patient.id).pact_id == care.pact.id  # v1 still rules until v2 is signed
    sign("clinical_manager")
    with pytest.raises(PactError, match="care pact v2 is signed: only a draft can be signed"):
        sign("clinical_manager")


def test_a_new_version_supersedes_the_previous_one(db: Session, runs: CareRuns) -> None:
    care = enrolled(db, runs, scopes=["care"])
    with_sms = draft_pact(db, care.episode.id, scopes=["care", "reminders_sms"], author="op", at=AT)
    with pytest.raises(CareError, match=r"care pact v2 of episode .* is still a draft: sign it first"):
        draft_pact(db, care.episode.id, scopes=["care"], author="op", at=AT)
    for role in ("patient", "clinical_manager"):
        sign_pact(db, with_sms.id, role=role, signer="X Y", signed_at=AT, author="op", at=AT, today=TODAY)
    assert [(p.version, p.status) for p in pacts_of(db, care.episode.id)] == [
        (1, PactStatus.SUPERSEDED),
        (2, PactStatus.SIGNED),
    ]
    assert can_process(db, care.patient.id).allows(C.REMINDERS_SMS)
    assert care.episode.state is EpisodeState.PACT_SIGNED  # a later version moves nothing


def test_revoking_stops_processing_until_a_new_version_is_signed(db: Session, runs: CareRuns) -> None:
    care = enrolled(db, runs)
    later = AT + timedelta(hours=2)
    revoke_pact(db, care.pact.id, reason="the patient withdrew consent by letter", author="op", at=later)
    assert (care.pact.status, care.pact.revoked_at, care.pact.revoked_by) == (PactStatus.REVOKED, later, "op")
    decision = can_process(db, care.patient.id)
    assert not decision.allowed
    assert decision.reason == (
        "the care pact v1 of patient R1 was revoked on 2026-03-02 by op (the patient withdrew consent by letter): "
        "no further processing until a new version is signed"
    )
    with pytest.raises(ProcessingRefusedError, match="was revoked on 2026-03-02"):
        require_processing(db, care.patient.id)
    with pytest.raises(PactError, match="care pact v1 is revoked: only the signed pact in force can be revoked"):
        revoke_pact(db, care.pact.id, reason="again", author="op", at=later)
    [audit] = [a for a in trail(db, patient_id=care.patient.id) if a.action == "revoke"]
    assert audit.detail == {"version": 1, "reason": "the patient withdrew consent by letter"}

    renewed = draft_pact(db, care.episode.id, scopes=["care"], author="op", at=later)
    for role in ("patient", "clinical_manager"):
        sign_pact(db, renewed.id, role=role, signer="X Y", signed_at=later, author="op", at=later, today=TODAY)
    assert can_process(db, care.patient.id).allowed
    assert [p.status for p in pacts_of(db, care.episode.id)] == [PactStatus.REVOKED, PactStatus.SIGNED]


def test_a_revocation_needs_a_reason_and_a_pact_needs_a_gestore(db: Session, runs: CareRuns) -> None:
    care = enrolled(db, runs)
    with pytest.raises(PactError, match="a revocation needs a reason"):
        revoke_pact(db, care.pact.id, reason="  ", author="op", at=AT)
    transition(db, care.episode.id, "withdrawn", reason="moved abroad", author="op", at=AT, today=TODAY)
    with pytest.raises(CareError, match="is 'withdrawn': a care pact is drafted once a gestore is chosen"):
        draft_pact(db, care.episode.id, scopes=["care"], author="op", at=AT)
    assert can_process(db, care.patient.id).reason == (
        "patient R1 has no open enrolment episode (its last episode is withdrawn)"
    )


def test_the_pact_table_refuses_a_revocation_without_its_record(db: Session, runs: CareRuns) -> None:
    care = enrolled(db, runs)
    with pytest.raises(IntegrityError), db.begin_nested():
        care.pact.status = PactStatus.REVOKED  # no revoked_at, revoked_by, reason
        db.flush()
    assert db.scalar(select(CarePact.status).where(CarePact.id == care.pact.id)) is PactStatus.SIGNED


def test_a_pact_names_a_clinical_manager_of_the_chosen_gestore(db: Session, runs: CareRuns) -> None:
    load_run(db, runs.write({"R7": ["copd"]}), author="loader", at=AT, today=TODAY)
    coop, other = gestore(db, "COOP1"), gestore(db, "COOP2")
    manager, outsider = clinical_manager(db, coop, "GP1"), clinical_manager(db, other, "GP2")
    invite(db, "321", author="op", at=AT, today=TODAY)
    [episode] = [e for e in db.scalars(select(Episode)) if e.state is EpisodeState.INVITED]
    with pytest.raises(CareError, match="is 'invited': a clinical manager is named once a gestore is chosen"):
        assign_clinical_manager(db, episode.id, manager.id, author="op", on=TODAY)
    choose_gestore(db, episode.id, coop.id, author="op", at=AT, today=TODAY)
    with pytest.raises(CareError, match="has no clinical manager: name one to draft the pact"):
        draft_pact(db, episode.id, scopes=["care"], author="op", at=AT)
    with pytest.raises(CareError, match=f"practitioner {outsider.id} is not a clinical manager of gestore COOP1"):
        assign_clinical_manager(db, episode.id, outsider.id, author="op", on=TODAY)
    assign_clinical_manager(db, episode.id, manager.id, author="op", on=TODAY)
    pact = draft_pact(db, episode.id, scopes=["care"], author="op", at=AT)
    assert (pact.clinical_manager_id, pact.gestore_id, pact.version) == (manager.id, coop.id, 1)
    assert open_episode(db, episode.patient_id) is episode
    audited = [a.detail for a in trail(db, patient_id=episode.patient_id) if a.action == "assign_clinical_manager"]
    assert audited == [{"from": None, "to": manager.id}]
