"""Builders for the care tests: stratification runs with chosen patients, gestori with clinical managers, and a
patient taken all the way to a signed care pact through the real services.

Keyword-only where it matters; every date is fixed so that back-dating rules can be tested exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from presa.care.service import choose_gestore, draft_pact, invite, load_run, open_episode, sign_pact
from presa.care.service.organisations import assign_role, create_gestore, register_practitioner
from presa.care.store.models import CarePact, Episode, Gestore, Patient, Practitioner
from presa.stratify.catalog import Catalog, load_catalog
from tests.storebuilder import HEADER, pathology, write_catalog
from tests.test_summary import RunBuilder

REF = date(2025, 12, 31)
TODAY = date(2026, 3, 2)
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 10:00 in Rome, on TODAY
ALL_SCOPES = ("care", "data_sharing", "reminders_sms", "reminders_email", "telemonitoring", "caregiver_reminders")

# Catalog ids that have PDTA templates (presa/care/pdta), and one that has none (the generic follow-up).
ENTRIES = [
    pathology("heart_failure", {"discharge": {"icd9": ["428"]}}, 10),
    pathology("copd", {"exemption": {"codes": ["057"]}}, 15),
    pathology("diabetes_type2", {"exemption": {"codes": ["013"]}}, 20),
    pathology("hypertension", {"exemption": {"codes": ["0031"]}}, 30),
    pathology("rare_condition", {"exemption": {"codes": ["099"]}}, 40),
]


class CareRuns:
    """Writes stratification runs whose residents have the pathologies a test names (tests/test_summary.py)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.catalog: Catalog = load_catalog(write_catalog(directory / "catalog", ENTRIES, HEADER))
        self.count = 0

    def write(
        self,
        people: Mapping[str, Sequence[str]],
        *,
        reference: date = REF,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Path:
        """A run with one resident per entry of ``people`` (id → pathologies; none = level 4 or 5)."""
        builder = RunBuilder(self.catalog, reference)
        for resident_id, pathologies in people.items():
            builder.resident(resident_id, list(pathologies), **dict((options or {}).get(resident_id, {})))
        self.count += 1
        return builder.write(self.directory / f"run{self.count}")


def gestore(
    db: Session,
    code: str = "COOP1",
    *,
    ats: Sequence[str] = ("321",),
    capacity: int = 100,
    kind: str = "gp_cooperative",
    accredited_from: date = date(2025, 1, 1),
    accredited_until: date | None = None,
) -> Gestore:
    return create_gestore(
        db,
        code=code,
        name=f"Cooperativa {code}",
        kind=kind,
        ats_codes=ats,
        accredited_from=accredited_from,
        accredited_until=accredited_until,
        capacity=capacity,
        phone="02 1234567",
        email=f"{code.lower()}@example.org",
        author="ats-admin",
        at=AT,
    )


def clinical_manager(
    db: Session, gestore_: Gestore, code: str = "GP1", *, since: date = date(2025, 1, 1)
) -> Practitioner:
    gp = register_practitioner(
        db, code=code, family_name="Rossi", given_name="Maria", profession="gp", ats_code="321", author="ats-admin"
    )
    assign_role(db, gp.id, gestore_.id, "clinical_manager", start_on=since, author="gestore-admin")
    return gp


@dataclass
class Enrolled:
    patient: Patient
    episode: Episode
    gestore: Gestore
    manager: Practitioner
    pact: CarePact


def enrolled(
    db: Session,
    runs: CareRuns,
    *,
    resident_id: str = "R1",
    pathologies: Sequence[str] = ("hypertension", "diabetes_type2"),
    scopes: Sequence[str] = ALL_SCOPES,
    resident_options: Mapping[str, Any] | None = None,
) -> Enrolled:
    """One patient loaded from a run, invited, with a gestore and a signed pact: at ``pact_signed`` on TODAY."""
    [one] = enrolled_together(
        db, runs, {resident_id: pathologies}, scopes=scopes, options={resident_id: resident_options or {}}
    )
    return one


def enrolled_together(
    db: Session,
    runs: CareRuns,
    residents: Mapping[str, Sequence[str]],
    *,
    scopes: Sequence[str] = ALL_SCOPES,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Enrolled]:
    """Patients loaded from one run, each invited, with the same gestore and GP and a pact signed on TODAY."""
    load_run(db, runs.write(residents, options=options or {}), author="loader", at=AT, today=TODAY)
    coop = gestore(db)
    gp = clinical_manager(db, coop)
    patients = [db.query(Patient).filter_by(resident_id=resident_id).one() for resident_id in residents]
    for ats_code in dict.fromkeys(p.ats_code for p in patients):
        invite(db, ats_code, author="ats-operator", at=AT, today=TODAY)
    result = []
    for patient in patients:
        episode = open_episode(db, patient.id)
        assert episode is not None
        choose_gestore(db, episode.id, coop.id, clinical_manager_id=gp.id, author="operator", at=AT, today=TODAY)
        pact = draft_pact(db, episode.id, scopes=scopes, author="operator", at=AT)
        for role, signer in (("patient", "Anna Bianchi"), ("clinical_manager", "Maria Rossi")):
            sign_pact(db, pact.id, role=role, signer=signer, signed_at=AT, author="operator", at=AT, today=TODAY)
        db.refresh(episode)
        result.append(Enrolled(patient, episode, coop, gp, pact))
    return result
