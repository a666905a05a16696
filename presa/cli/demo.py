"""The care part of ``presa demo``: a stratified population taken through the presa in carico, for the web pages.

:func:`seed_demo` loads the run into a fresh care store and, through the real services (nothing here writes a
table itself), in the largest ATS of the population: three gestori (a GP cooperative, an ASST, a private
provider) with their providers' network, the busiest GPs as the cooperative's and the ASST's clinical managers,
nurses as case managers, operators; two invitation batches; a share of the invited patients taking a gestore,
most of them signing the pact; the PAI of every signed patient drafted in bulk and most of them activated - some
pacts left to sign and some plans left to activate, so that a GP has things to do; and one account per role with a
random password, returned so that the command prints them.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from presa.auth.service import create_account
from presa.care.enrolment import EpisodeState
from presa.care.pdta import default_templates
from presa.care.service import (
    activate_plan,
    choose_gestore,
    draft_pact,
    invite,
    load_run,
    sign_pact,
)
from presa.care.service.bulk import generate_all_plans
from presa.care.service.common import today_in_italy
from presa.care.service.episodes import assign_case_manager
from presa.care.service.organisations import (
    add_provider,
    add_to_network,
    assign_role,
    create_gestore,
    register_practitioner,
)
from presa.care.store.models import CarePlanRecord, Episode, Gestore, Patient, PlanStatus
from presa.stratify.summary import ATS_NAMES

AUTHOR = "demo"
SCOPES = ("care", "data_sharing", "reminders_sms", "reminders_email", "telemonitoring", "caregiver_reminders")
GIVEN = ("Giulia", "Marco", "Francesca", "Luca", "Chiara", "Andrea", "Sara", "Paolo", "Elena", "Matteo", "Laura",
         "Stefano", "Anna", "Davide", "Silvia", "Giorgio")  # fmt: skip
FAMILY = ("Rossi", "Bianchi", "Colombo", "Ferrari", "Russo", "Galli", "Fontana", "Conti", "Ricci", "Marino",
          "Greco", "Bruno", "Gallo", "Costa", "Mancini", "Villa")  # fmt: skip
GP_COOPERATIVE_GPS = 3
ASST_GPS = 1
TAKE_UP = 0.5
"""The share of the invited patients of those GPs who choose their GP's gestore."""


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str
    description: str


@dataclass
class DemoReport:
    ats: str
    patients: int
    invited: int = 0
    enrolled: int = 0
    pacts_signed: int = 0
    plans: int = 0
    plans_active: int = 0
    accounts: list[DemoAccount] = field(default_factory=list)


def password() -> str:
    """A random password the argon2 policy accepts (12+ characters, 5+ different)."""
    return "demo-" + secrets.token_urlsafe(9)


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(GIVEN), rng.choice(FAMILY)


def seed_demo(
    session: Session,
    run_dir: Path,
    *,
    seed: int = 42,
    on_step: Callable[[str], None] | None = None,
) -> DemoReport:
    """Load ``run_dir`` and take part of its largest ATS through the presa in carico (see the module docstring)."""
    rng = random.Random(seed)
    step = on_step or (lambda _: None)
    today = today_in_italy()
    since = today - timedelta(days=400)
    step("Loading the run into the care store")
    load_run(session, run_dir, author=AUTHOR, today=today - timedelta(days=28))  # loaded four weeks ago
    ats, patients = session.execute(
        select(Patient.ats_code, func.count())
        .where(Patient.eligible.is_(True))
        .group_by(Patient.ats_code)
        .order_by(func.count().desc())
        .limit(1)
    ).one()
    report = DemoReport(ats=str(ats), patients=int(patients))

    step("Gestori, providers and practitioners")
    place = ATS_NAMES.get(report.ats, report.ats)
    coop = _gestore(session, "COOP-MMG", f"Cooperativa MMG {place}", "gp_cooperative", report.ats, since)
    asst = _gestore(session, "ASST-1", f"ASST {place}", "asst", report.ats, since)
    private = _gestore(session, "CSP-1", "Centro Servizi Salute", "private_accredited", report.ats, since)
    _network(session, report.ats, (coop, asst, private), since)
    busiest = [
        str(gp)
        for (gp,) in session.execute(
            select(Patient.gp_id)
            .where(Patient.ats_code == report.ats, Patient.eligible.is_(True), Patient.gp_id.is_not(None))
            .group_by(Patient.gp_id)
            .order_by(func.count().desc(), Patient.gp_id)
            .limit(GP_COOPERATIVE_GPS + ASST_GPS)
        )
    ]
    managers: dict[str, tuple[int, int]] = {}  # gp_id -> (gestore id, practitioner id)
    for number, code in enumerate(busiest):
        gestore = coop if number < GP_COOPERATIVE_GPS else asst
        given, family = _person(rng)
        gp = register_practitioner(
            session, code=code, family_name=family, given_name=given, profession="gp", ats_code=report.ats,
            author=AUTHOR,
        )  # fmt: skip
        assign_role(session, gp.id, gestore.id, "clinical_manager", start_on=since, author=AUTHOR)
        managers[code] = (gestore.id, gp.id)
    nurses: dict[int, list[int]] = {}
    for gestore in (coop, asst, private):
        for n in range(3):
            given, family = _person(rng)
            nurse = register_practitioner(
                session, code=f"CM-{gestore.code}-{n + 1}", family_name=family, given_name=given, profession="nurse",
                ats_code=report.ats, author=AUTHOR,
            )  # fmt: skip
            assign_role(session, nurse.id, gestore.id, "case_manager", start_on=since, author=AUTHOR)
            nurses.setdefault(gestore.id, []).append(nurse.id)
    specialist = register_practitioner(
        session, code="SP-ASST-1", family_name="Moretti", given_name="Valeria", profession="specialist",
        discipline="cardiology", ats_code=report.ats, author=AUTHOR,
    )  # fmt: skip
    assign_role(session, specialist.id, asst.id, "clinical_manager", start_on=since, author=AUTHOR)

    step("Invitation letters")
    first = invite(
        session, report.ats, author=AUTHOR, letter_date=today - timedelta(days=20), limit=max(1, report.patients // 2)
    )
    second = invite(
        session, report.ats, author=AUTHOR, letter_date=today - timedelta(days=6), limit=max(1, report.patients // 5)
    )
    report.invited = len(first.patient_ids) + len(second.patient_ids)

    step("Patients choosing their gestore and signing the pact")
    invited = session.execute(
        select(Episode.id, Patient.gp_id)
        .join(Patient, Patient.id == Episode.patient_id)
        .where(Patient.ats_code == report.ats, Episode.state == EpisodeState.INVITED, Episode.closed_on.is_(None))
        .order_by(Episode.id)
    ).all()
    signed_at = datetime.now(UTC) - timedelta(days=3)
    for episode_id, gp_id in invited:
        if gp_id in managers:
            if rng.random() > TAKE_UP:
                continue
            gestore_id, manager_id = managers[gp_id]
        elif rng.random() < 0.01:
            gestore_id, manager_id = (asst.id, specialist.id) if rng.random() < 0.5 else (private.id, 0)
        else:
            continue
        choose_gestore(
            session, episode_id, gestore_id, author=AUTHOR, clinical_manager_id=manager_id or None,
            effective_on=today - timedelta(days=5),
        )  # fmt: skip
        report.enrolled += 1
        if rng.random() < 0.5:
            assign_case_manager(session, episode_id, rng.choice(nurses[gestore_id]), author=AUTHOR)
        if not manager_id or rng.random() > 0.8:
            continue
        pact = draft_pact(session, episode_id, scopes=SCOPES, author=AUTHOR, at=signed_at - timedelta(hours=1))
        if rng.random() < 0.15:
            continue  # left for the GP to sign
        sign_pact(session, pact.id, role="patient", signer="Firma del paziente", signed_at=signed_at, author=AUTHOR)
        sign_pact(
            session, pact.id, role="clinical_manager", signer="Firma del clinical manager", signed_at=signed_at,
            author=AUTHOR,
        )  # fmt: skip
        report.pacts_signed += 1

    step("Care plans")
    bulk = generate_all_plans(session, author=AUTHOR, start=today)
    report.plans = bulk.plans
    drafts = session.scalars(
        select(CarePlanRecord.id).where(CarePlanRecord.status == PlanStatus.DRAFT).order_by(CarePlanRecord.id)
    ).all()
    for plan_id in drafts:
        if rng.random() < 0.75:
            activate_plan(session, plan_id, author=AUTHOR)
            report.plans_active += 1

    step("Accounts")
    gp_code = busiest[0]
    demo_gp = managers[gp_code][1]
    people = [
        ("medico", "clinician", {"gestore_id": coop.id, "practitioner_id": demo_gp}, f"GP {gp_code} of {coop.name}"),
        ("casemanager", "case_manager", {"gestore_id": coop.id, "practitioner_id": nurses[coop.id][0]},
         f"case manager of {coop.name}"),
        ("casemanager2", "case_manager", {"gestore_id": asst.id, "practitioner_id": nurses[asst.id][0]},
         f"case manager of {asst.name} (another gestore)"),
        ("operatore", "operator", {"gestore_id": coop.id}, f"operator of {coop.name}"),
        ("gestore", "gestore_admin", {"gestore_id": coop.id}, f"administrator of {coop.name}"),
        ("analista", "ats_analyst", {"ats_code": report.ats}, f"analyst of ATS {report.ats} {place}"),
    ]  # fmt: skip
    for username, role, scope, description in people:
        secret = password()
        create_account(
            session, username=username, display_name=description, role=role, password=secret, author=AUTHOR,
            **scope,  # type: ignore[arg-type]
        )  # fmt: skip
        report.accounts.append(DemoAccount(username, secret, role, description))
    return report


def _gestore(session: Session, code: str, name: str, kind: str, ats: str, since: date) -> Gestore:
    return create_gestore(
        session,
        code=code,
        name=name,
        kind=kind,
        ats_codes=[ats],
        accredited_from=since,
        capacity=1_000_000,
        phone="02 1234 5678",
        email=f"{code.lower()}@example.org",
        address="Via della Salute 1, Milano",
        author=AUTHOR,
    )


def _network(session: Session, ats: str, gestori: tuple[Gestore, ...], since: date) -> None:
    """A hospital, a laboratory, an imaging centre and a clinic offering the pathways' services, in every network."""
    by_kind: dict[str, set[str]] = {}
    for template in default_templates().templates:
        for activity in template.activities:
            if activity.spec.code:
                by_kind.setdefault(activity.spec.kind, set()).add(activity.spec.code)
    labs = by_kind.get("lab", set())
    exams = by_kind.get("instrumental", set())
    visits = by_kind.get("specialist_visit", set())
    providers = (
        ("OSP-1", "Ospedale Maggiore", "hospital", labs | exams | visits),
        ("LAB-1", "Laboratorio Analisi Centrale", "laboratory", labs),
        ("RAD-1", "Centro Diagnostico per Immagini", "imaging", exams),
        ("AMB-1", "Poliambulatorio Specialistico", "outpatient_clinic", visits),
    )
    for code, name, kind, services in providers:
        provider = add_provider(
            session, code=code, name=name, kind=kind, services=services, ats_code=ats, author=AUTHOR
        )
        for gestore in gestori:
            add_to_network(session, gestore.id, provider.id, joined_on=since, author=AUTHOR)
