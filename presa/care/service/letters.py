"""The documents of the presa in carico from the store: invitation letters, the printable pact, the patient's plan.

Each function gathers the rows a document needs and hands plain values to ``presa.care.documents``, which draws
the PDF. Nothing here writes: the caller audits the read (the API and the CLI both do).

A batch's letters are read as plain columns, a thousand rows at a time (:func:`letter_entries`), and drawn into
the output as they come (:func:`write_batch_letters`): a batch of any size in the same memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.documents import (
    GestoreContact,
    InvitationLetter,
    PactDocument,
    PactSignatureLine,
    PlanDocument,
    invitation_letters_pdf,
    pact_pdf,
    plan_pdf,
    write_invitation_letters,
)
from presa.care.pdta import default_templates
from presa.care.pseudonyms import invitation_code
from presa.care.service.common import get
from presa.care.service.organisations import gestori_serving
from presa.care.service.plans import load_plan
from presa.care.store.models import (
    Ats,
    CarePact,
    CarePlanRecord,
    Episode,
    Gestore,
    Invitation,
    InvitationBatch,
    Patient,
    Practitioner,
)
from presa.stratify.catalog import CatalogError, load_catalog


@dataclass(frozen=True, slots=True)
class Letter:
    """One letter of a batch, with the rows it was made from (the CLI indexes them for the mail merge)."""

    invitation: Invitation
    patient: Patient
    code: str
    letter: InvitationLetter


def contact(gestore: Gestore) -> GestoreContact:
    return GestoreContact(gestore.name, gestore.kind.value, gestore.address, gestore.phone, gestore.email)


def batch_letters(session: Session, batch_id: int, key: bytes, *, patient_id: int | None = None) -> list[Letter]:
    """The letters of a batch (or of one patient in it), in the batch's order."""
    batch = get(session, InvitationBatch, batch_id, "invitation batch")
    ats = get(session, Ats, batch.ats_code, "ATS")
    gestori = tuple(contact(g) for g in gestori_serving(session, batch.ats_code, batch.letter_date))
    query = (
        select(Invitation, Patient)
        .join(Patient, Patient.id == Invitation.patient_id)
        .where(Invitation.batch_id == batch.id)
        .order_by(Invitation.id)
    )
    if patient_id is not None:
        query = query.where(Invitation.patient_id == patient_id)
    letters = []
    for invitation, patient in session.execute(query):
        code = invitation_code(key, invitation.id)
        letter = InvitationLetter(
            ats_code=ats.code,
            ats_name=ats.name,
            letter_date=batch.letter_date,
            invitation_code=code,
            sex=patient.sex,
            municipality=patient.municipality,
            level=patient.level,
            gestori=gestori,
        )
        letters.append(Letter(invitation, patient, code, letter))
    return letters


def letters_pdf(letters: Sequence[Letter], *, batch_id: int) -> bytes:
    return invitation_letters_pdf([item.letter for item in letters], title=batch_title(batch_id))


def batch_title(batch_id: int) -> str:
    return f"Lettere di invito, lotto {batch_id}"


@dataclass(frozen=True, slots=True)
class LetterEntry:
    """One letter of a batch with the ids its callers audit and index, and no ORM rows (a batch streams)."""

    invitation_id: int
    patient_id: int
    resident_id: str
    municipality: str | None
    code: str
    letter: InvitationLetter


ENTRIES_PER_FETCH = 1_000


def letter_entries(session: Session, batch_id: int, key: bytes) -> Iterator[LetterEntry]:
    """The letters of a batch in the batch's order, fetched :data:`ENTRIES_PER_FETCH` rows at a time."""
    batch = get(session, InvitationBatch, batch_id, "invitation batch")
    ats = get(session, Ats, batch.ats_code, "ATS")
    gestori = tuple(contact(g) for g in gestori_serving(session, batch.ats_code, batch.letter_date))
    query = (
        select(Invitation.id, Patient.id, Patient.resident_id, Patient.sex, Patient.municipality, Patient.level)
        .join(Patient, Patient.id == Invitation.patient_id)
        .where(Invitation.batch_id == batch.id)
        .order_by(Invitation.id)
        .execution_options(yield_per=ENTRIES_PER_FETCH)
    )
    for invitation_id, patient_id, resident_id, sex, municipality, level in session.execute(query):
        code = invitation_code(key, invitation_id)
        letter = InvitationLetter(ats.code, ats.name, batch.letter_date, code, sex, municipality, level, gestori)
        yield LetterEntry(invitation_id, patient_id, resident_id, municipality, code, letter)


def write_batch_letters(session: Session, batch_id: int, key: bytes, out: BinaryIO) -> list[int]:
    """Every letter of a batch as one PDF written to ``out``; the patients' ids in the letters' order (to audit)."""
    patients: list[int] = []

    def letters() -> Iterator[InvitationLetter]:
        for entry in letter_entries(session, batch_id, key):
            patients.append(entry.patient_id)
            yield entry.letter

    write_invitation_letters(letters(), out, title=batch_title(batch_id))
    return patients


def latest_invitation(session: Session, patient_id: int) -> Invitation | None:
    query = select(Invitation).where(Invitation.patient_id == patient_id).order_by(Invitation.id.desc())
    return session.scalars(query).first()


def pact_document(session: Session, pact: CarePact) -> bytes:
    patient = get(session, Patient, pact.patient_id, "patient")
    gestore = get(session, Gestore, pact.gestore_id, "gestore")
    manager = get(session, Practitioner, pact.clinical_manager_id, "practitioner")
    return pact_pdf(
        PactDocument(
            resident_id=patient.resident_id,
            sex=patient.sex,
            birth_date=patient.birth_date,
            gestore=contact(gestore),
            clinical_manager=manager.display_name,
            version=pact.version,
            status=pact.status.value,
            scopes=frozenset(s.value for s in pact.scopes),
            drafted_at=pact.drafted_at,
            signatures=tuple(
                PactSignatureLine(s.signer_role.value, s.signer_name, s.signed_at) for s in pact.signatures
            ),
            revoked_at=pact.revoked_at,
            revocation_reason=pact.revocation_reason,
        )
    )


def plan_document(session: Session, stored: CarePlanRecord, version: int | None = None) -> bytes:
    plan = load_plan(session, stored.id, version)
    patient = get(session, Patient, stored.patient_id, "patient")
    episode = get(session, Episode, stored.episode_id, "enrolment episode")
    gestore = session.get(Gestore, episode.gestore_id) if episode.gestore_id is not None else None
    manager = session.get(Practitioner, episode.clinical_manager_id) if episode.clinical_manager_id else None
    return plan_pdf(
        PlanDocument(
            plan=plan,
            resident_id=patient.resident_id,
            status=stored.status.value,
            gestore=gestore.name if gestore else None,
            clinical_manager=manager.display_name if manager else None,
            pathology_names=pathology_names(),
            pathway_names=default_templates().names_it(),
        )
    )


def pathology_names() -> dict[str, str]:
    """Italian names of the shipped catalog's pathologies, by id (empty if the catalog cannot be read)."""
    try:
        return {p.id: p.name_it for p in load_catalog().pathologies}
    except CatalogError:
        return {}
