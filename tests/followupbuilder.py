"""Builders for the follow-up tests: a patient with an active PAI, and later months' flows as shipped (CSV).

Dates are fixed: the patient is enrolled on carebuilder's TODAY (2026-03-02) and the plan starts on START.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from presa.care.plan import CarePlan
from presa.care.service import activate_plan, generate_plan, load_plan
from presa.care.store.models import CarePlanRecord
from tests.carebuilder import AT, TODAY, CareRuns, Enrolled, enrolled

START = date(2026, 3, 9)
PATHOLOGIES = ("hypertension", "diabetes_type2")
LATER = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)  # 10:00 in Rome: flows of the spring and summer are in by then

HEADERS = {
    "residents": "resident_id;birth_date;sex;municipality;ats;gp_id;registration_date;death_date",
    "prescriptions": "resident_id;dispensing_date;atc;aic;packs;ddd",
    "outpatient": "resident_id;service_date;service_code;discipline;provider_id",
    "discharges": "resident_id;admission_date;discharge_date;dx_main;dx_2;dx_3;dx_4;dx_5;dx_6;procedure_main;drg;"
    "regime;admission_type;discharge_mode",
    "er_visits": "resident_id;visit_date;triage;outcome",
    "exemptions": "resident_id;exemption_code;start_date;end_date",
}


@dataclass
class Planned:
    care: Enrolled
    plan: CarePlanRecord
    pure: CarePlan

    def activity(self, activity_id: str) -> date:
        return self.pure.activity(activity_id).day


def planned(db: Session, runs: CareRuns, *, scopes: tuple[str, ...] | None = None) -> Planned:
    """A patient taken in charge with an active PAI of hypertension and type 2 diabetes from START."""
    care = (
        enrolled(db, runs, pathologies=PATHOLOGIES)
        if scopes is None
        else enrolled(db, runs, pathologies=PATHOLOGIES, scopes=scopes)
    )
    plan = generate_plan(db, care.patient.id, start=START, author="dr.rossi", at=AT)
    activate_plan(db, plan.id, author="dr.rossi", at=AT, today=TODAY)
    db.refresh(care.episode)
    return Planned(care, plan, load_plan(db, plan.id))


@dataclass
class Flows:
    """Later months' flows of some residents, written as ';' separated text the way the region ships them."""

    rows: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in HEADERS})

    def resident(self, resident_id: str) -> Flows:
        self.rows["residents"].append(f"{resident_id};1956-03-01;F;015146;321;GP1;2000-01-01;")
        return self

    def service(self, resident_id: str, day: date, code: str, *, provider: str = "P1") -> Flows:
        self.rows["outpatient"].append(f"{resident_id};{day.isoformat()};{code};08;{provider}")
        return self

    def discharge(self, resident_id: str, day: date, *, admitted: date | None = None) -> Flows:
        admission = (admitted or day).isoformat()
        self.rows["discharges"].append(f"{resident_id};{admission};{day.isoformat()};4280;;;;;;;127;1;2;2")
        return self

    def er(self, resident_id: str, day: date) -> Flows:
        self.rows["er_visits"].append(f"{resident_id};{day.isoformat()};4;1")
        return self

    def drug(self, resident_id: str, day: date) -> Flows:
        self.rows["prescriptions"].append(f"{resident_id};{day.isoformat()};C09AA05;012345678;1;28")
        return self

    def raw(self, table: str, line: str) -> Flows:
        self.rows[table].append(line)
        return self

    def write(self, directory: Path, *, suffix: str = "") -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for table, header in HEADERS.items():
            name = f"{table}{'_' + suffix if suffix else ''}.csv"
            (directory / name).write_text("\n".join([header, *self.rows[table]]) + "\n", encoding="utf-8")
        return directory


def clinic(
    db: Session,
    gestore_id: int,
    services: tuple[str, ...],
    *,
    code: str = "AMB1",
    publish_from: date = date(2026, 3, 9),
    publish_until: date = date(2027, 3, 9),
    slot_minutes: int = 30,
) -> dict[str, int]:
    """An outpatient clinic in the gestore's network with a schedule per service, open Monday to Friday 9-11,
    slots published for the plan year; the schedule ids by service code."""
    from datetime import time

    from presa.care.service.organisations import add_provider, add_to_network
    from presa.followup.service.booking import create_schedule, publish_slots

    provider = add_provider(db, code=code, name=f"Poliambulatorio {code}", kind="outpatient_clinic",
                            services=services, ats_code="321", author="admin")  # fmt: skip
    add_to_network(db, gestore_id, provider.id, joined_on=date(2026, 1, 1), author="admin")
    schedules = {}
    for service in services:
        schedule = create_schedule(
            db, provider.id, service_code=service, name=f"{service} at {code}", slot_minutes=slot_minutes,
            openings=[(d, time(9), time(11)) for d in range(5)], valid_from=date(2026, 1, 1), author="admin", at=AT,
        )  # fmt: skip
        publish_slots(db, schedule.id, start=publish_from, end=publish_until)
        schedules[service] = schedule.id
    return schedules
