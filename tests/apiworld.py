"""A care store with patients at every stage, accounts of every role, and the API served over a real socket.

:func:`build_world` fills a fresh, migrated database through the real services, on today's clock (the API's
clock), and issues a bearer token per account (no argon2 sign-in per test); ``tests.liveserver.LiveServer``
serves it over a real socket and tests call it with httpx.

Patients (pathologies from ``tests.carebuilder``):

- ``A1``: ATS 321, GP ``GP1``; gestore COOP1, clinical manager GP1, pact signed, a draft plan;
- ``A2``: ATS 321, GP ``GP2``; gestore COOP2, clinical manager GP2, pact signed;
- ``A3``, ``A4``: ATS 321, invited (no gestore yet); ``B1``: ATS 322, invited.

Accounts: ``analyst`` (ATS 321), ``analyst322``; ``admin1``, ``clin1`` (GP1), ``clin1b`` (a specialist of
COOP1 who follows nobody), ``case1``, ``oper1`` of COOP1; ``admin2``, ``clin2`` (GP2), ``case2``, ``oper2`` of
COOP2; ``patient1`` (A1), ``patient2`` (A2).

:func:`add_followup` takes A1 on to the follow-up: the plan activated, NU1 as case manager, a clinic (``AMB1``) in
COOP1's network with ECG and HbA1c schedules and slots, the ECG booked, the work list refreshed, and a discharge
posted yesterday (its follow-up item is ``world.item_id``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from presa.auth.service import create_account, issue_token
from presa.care.pseudonyms import pseudonym
from presa.care.service import choose_gestore, draft_pact, generate_plan, invite, load_run, open_episode, sign_pact
from presa.care.service.organisations import assign_role, create_gestore, register_practitioner
from presa.care.store import session_factory
from presa.care.store.models import Gestore, Patient, Practitioner
from presa.followup.store import Schedule
from tests.carebuilder import ALL_SCOPES, CareRuns
from tests.liveserver import KEY

PASSWORD = "correct horse battery staple"
PEOPLE = {
    "A1": ("hypertension", "diabetes_type2"),
    "A2": ("copd",),
    "A3": ("heart_failure", "hypertension"),
    "A4": ("diabetes_type2",),
    "B1": ("copd",),
}
OPTIONS = {
    "A1": {"gp_id": "GP1"},
    "A2": {"gp_id": "GP2", "sex": "M", "age": 66},
    "A3": {"gp_id": "GP1", "age": 80},
    "A4": {"gp_id": "GP2"},
    "B1": {"ats": "322", "gp_id": "GP9"},
}


@dataclass
class World:
    tokens: dict[str, str] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    birth_dates: dict[str, date] = field(default_factory=dict)
    resident_ids: dict[str, str] = field(default_factory=dict)
    gestori: dict[str, int] = field(default_factory=dict)
    practitioners: dict[str, int] = field(default_factory=dict)
    pact_id: int = 0
    plan_id: int = 0
    other_pact_id: int = 0
    batch_321: int = 0
    batch_322: int = 0
    provider_id: int = 0
    schedules: dict[str, int] = field(default_factory=dict)
    booking_id: int = 0
    item_id: int = 0
    activity_id: str = ""
    slot_id: int = 0

    def pseudonym(self, resident: str) -> str:
        return pseudonym(KEY, self.resident_ids[resident])

    def ref(self, account: str, resident: str) -> str:
        """How ``account`` names a patient in a path: analysts by pseudonym, everyone else by id."""
        return self.pseudonym(resident) if account.startswith("analyst") else str(self.patients[resident])

    def headers(self, account: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[account]}"}


def build_world(engine: Engine, runs_dir: Path) -> World:
    world = World()
    runs = CareRuns(runs_dir)
    sessions = session_factory(engine)
    with sessions() as db, db.begin():
        load_run(db, runs.write(PEOPLE, options=OPTIONS), author="loader")
        for p in db.scalars(select(Patient)):
            world.patients[p.resident_id] = p.id
            world.birth_dates[p.resident_id] = p.birth_date
            world.resident_ids[p.resident_id] = p.resident_id
        since = date.today() - timedelta(days=400)
        for code, ats in (("COOP1", "321"), ("COOP2", "321"), ("ASST3", "322")):
            g = _gestore(db, code, ats, since)
            world.gestori[code] = g.id
        people = {
            "GP1": ("gp", "COOP1", "clinical_manager"),
            "GP2": ("gp", "COOP2", "clinical_manager"),
            "SP1": ("specialist", "COOP1", "clinical_manager"),
            "NU1": ("nurse", "COOP1", "case_manager"),
            "NU2": ("nurse", "COOP2", "case_manager"),
        }
        for code, (profession, gestore, role) in people.items():
            pr = register_practitioner(
                db,
                code=code,
                family_name=f"Cognome{code}",
                given_name="Nome",
                profession=profession,
                discipline="cardiology" if profession == "specialist" else None,
                ats_code="321",
                author="setup",
            )
            assign_role(db, pr.id, world.gestori[gestore], role, start_on=since, author="setup")
            world.practitioners[code] = pr.id
        world.batch_321 = invite(db, "321", author="setup").batch.id
        world.batch_322 = invite(db, "322", author="setup").batch.id
        signed = datetime.now(UTC)  # after the gestore was chosen, even across midnight in Italy
        for resident, gestore, gp in (("A1", "COOP1", "GP1"), ("A2", "COOP2", "GP2")):
            episode = open_episode(db, world.patients[resident])
            assert episode is not None
            choose_gestore(
                db, episode.id, world.gestori[gestore], clinical_manager_id=world.practitioners[gp], author="setup"
            )
            pact = draft_pact(db, episode.id, scopes=ALL_SCOPES, author="setup", at=signed - timedelta(minutes=1))
            sign_pact(db, pact.id, role="patient", signer="Paziente", signed_at=signed, author="setup")
            sign_pact(db, pact.id, role="clinical_manager", signer="Medico", signed_at=signed, author="setup")
            if resident == "A1":
                world.pact_id = pact.id
                world.plan_id = generate_plan(db, pact.patient_id, start=date.today(), author="setup").id
            else:
                world.other_pact_id = pact.id
        coop1, coop2 = world.gestori["COOP1"], world.gestori["COOP2"]
        pr = world.practitioners
        accounts: Mapping[str, dict[str, object]] = {
            "analyst": {"role": "ats_analyst", "ats_code": "321"},
            "analyst322": {"role": "ats_analyst", "ats_code": "322"},
            "admin1": {"role": "gestore_admin", "gestore_id": coop1},
            "clin1": {"role": "clinician", "gestore_id": coop1, "practitioner_id": pr["GP1"]},
            "clin1b": {"role": "clinician", "gestore_id": coop1, "practitioner_id": pr["SP1"]},
            "case1": {"role": "case_manager", "gestore_id": coop1, "practitioner_id": pr["NU1"]},
            "oper1": {"role": "operator", "gestore_id": coop1},
            "admin2": {"role": "gestore_admin", "gestore_id": coop2},
            "clin2": {"role": "clinician", "gestore_id": coop2, "practitioner_id": pr["GP2"]},
            "case2": {"role": "case_manager", "gestore_id": coop2, "practitioner_id": pr["NU2"]},
            "oper2": {"role": "operator", "gestore_id": coop2},
            "patient1": {"role": "patient", "patient_id": world.patients["A1"]},
            "patient2": {"role": "patient", "patient_id": world.patients["A2"]},
        }
        for username, scope in accounts.items():
            account = create_account(
                db,
                username=username,
                display_name=username,
                password=PASSWORD if username == "admin1" else None,
                external_subject=None if username == "admin1" else f"test|{username}",
                author="setup",
                **scope,  # type: ignore[arg-type]
            )
            world.tokens[username] = issue_token(db, account.id).token
    return world


def add_followup(engine: Engine, world: World) -> None:
    """A1 in follow-up (the module docstring): activities, a booking, work items, slots to book."""
    from presa.care.service import activate_plan
    from presa.care.service.episodes import assign_case_manager
    from presa.followup.service.booking import book, free_slots, planned_activity
    from presa.followup.service.transitions import open_transition
    from presa.followup.service.worklist import refresh_worklist
    from tests.followupbuilder import clinic

    today = date.today()
    with session_factory(engine)() as db, db.begin():
        plan = activate_plan(db, world.plan_id, author="setup")
        assign_case_manager(db, plan.episode_id, world.practitioners["NU1"], author="setup")
        world.schedules = clinic(
            db,
            world.gestori["COOP1"],
            ("89.52", "90.27.1"),
            publish_from=today + timedelta(days=1),
            publish_until=today + timedelta(days=200),
        )
        world.provider_id = db.scalars(
            select(Schedule.provider_id).where(Schedule.id == world.schedules["89.52"])
        ).one()
        moment = datetime.now(UTC)
        ecg = planned_activity(db, plan.id, "89.52-01")
        world.booking_id = book(db, plan.id, ecg.activity_id, free_slots(db, ecg, not_before=moment)[0].id,
                                author="setup").id  # fmt: skip
        world.activity_id = "90.27.1-01"
        world.slot_id = free_slots(db, planned_activity(db, plan.id, world.activity_id), not_before=moment)[0].id
        refresh_worklist(db, today=ecg.day - timedelta(days=30))  # the plan's first tests are weeks away
        transition = open_transition(db, plan.patient_id, "discharge", today - timedelta(days=1), source="api",
                                     author="setup")  # fmt: skip
        world.item_id = transition.follow_up_item_id


def _gestore(db: Session, code: str, ats: str, since: date) -> Gestore:
    return create_gestore(
        db,
        code=code,
        name=f"Gestore {code}",
        kind="asst" if code.startswith("ASST") else "gp_cooperative",
        ats_codes=[ats],
        accredited_from=since,
        capacity=100,
        phone="02 1234567",
        email=f"{code.lower()}@example.org",
        address=f"Via {code} 1, Milano",
        author="setup",
    )


def practitioner_id(db: Session, code: str) -> int:
    return db.scalars(select(Practitioner.id).where(Practitioner.code == code)).one()
