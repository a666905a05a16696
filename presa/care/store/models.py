"""The care store's tables, as typed SQLAlchemy 2 models; the schema itself is made by the Alembic migrations.

Groups, with their FHIR R4 counterparts:

- organisations: :class:`Ats`, :class:`Gestore` (with the ATS it serves, :class:`GestoreAts`), :class:`Provider`
  (erogatore) with the services it offers (:class:`ProviderService`) and the gestori whose network it belongs to
  (:class:`NetworkMembership`) - ``Organization``, ``HealthcareService``;
- people: :class:`Practitioner` (GP/MMG, specialist, nurse, operator) and their roles within a gestore
  (:class:`PractitionerRole`: clinical manager, case manager, operator, specialist) - ``Practitioner``,
  ``PractitionerRole``;
- population: :class:`StratificationRun`, one :class:`PatientStratum` per resident and run loaded (the history of
  levels and pathologies), and :class:`Patient` with the latest of them - ``Patient``, ``RiskAssessment``,
  ``Condition``;
- enrolment: :class:`Episode` with its full history (:class:`EpisodeEvent`) - ``EpisodeOfCare`` with
  ``statusHistory``; :class:`InvitationBatch` and :class:`Invitation` - ``CommunicationRequest``;
- care pact: :class:`CarePact` versions, their :class:`PactScope` rows and :class:`PactSignature` rows -
  ``Consent``;
- PAI: :class:`CarePlanRecord`, its :class:`PlanVersion` rows (author and change of each), each naming its
  :class:`PlanCalendar` - the dated :class:`PlanCalendarActivity` rows, shared by every version with the same
  calendar - ``CarePlan`` with ``ServiceRequest`` activities;
- :class:`AuditEvent`: the append-only trail (``AuditEvent``); database triggers refuse UPDATE and DELETE.

Enumerated columns are VARCHAR with a named CHECK, so adding a value is an ordinary migration on both databases.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from presa.care.enrolment import EpisodeState
from presa.care.pact import ConsentScope, PactStatus, SignerRole
from presa.care.store.types import BigId, JsonList, UTCDateTime, str_enum

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ResidentId = String(32)
AtsCode = String(3)
Municipality = String(6)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), date: Date()}  # noqa: RUF012 (SQLAlchemy's own hook)


class GestoreKind(StrEnum):
    GP_COOPERATIVE = "gp_cooperative"
    ASST = "asst"
    PRIVATE_ACCREDITED = "private_accredited"


class ProviderKind(StrEnum):
    HOSPITAL = "hospital"
    OUTPATIENT_CLINIC = "outpatient_clinic"
    LABORATORY = "laboratory"
    IMAGING = "imaging"
    PHARMACY = "pharmacy"
    OTHER = "other"


class Profession(StrEnum):
    GP = "gp"
    SPECIALIST = "specialist"
    NURSE = "nurse"
    OPERATOR = "operator"


class RoleKind(StrEnum):
    CLINICAL_MANAGER = "clinical_manager"
    CASE_MANAGER = "case_manager"
    OPERATOR = "operator"
    SPECIALIST = "specialist"


class PlanStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    COMPLETED = "completed"


# --- organisations -------------------------------------------------------------------------------------------


class Ats(Base):
    """One of Lombardy's 8 health agencies (codes 321-328), seeded by the first migration."""

    __tablename__ = "ats"

    code: Mapped[str] = mapped_column(AtsCode, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Gestore(Base):
    __tablename__ = "gestori"
    __table_args__ = (
        CheckConstraint("capacity >= 0", name="capacity_not_negative"),
        CheckConstraint(
            "accredited_until IS NULL OR accredited_until >= accredited_from", name="accreditation_ordered"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[GestoreKind] = mapped_column(str_enum(GestoreKind, "kind"))
    accredited_from: Mapped[date]
    accredited_until: Mapped[date | None]
    capacity: Mapped[int] = mapped_column(comment="patients it can take in charge at once")
    phone: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]

    areas: Mapped[list[GestoreAts]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def ats_codes(self) -> tuple[str, ...]:
        return tuple(sorted(a.ats_code for a in self.areas))

    def accredited_on(self, day: date) -> bool:
        return self.accredited_from <= day and (self.accredited_until is None or day <= self.accredited_until)


class GestoreAts(Base):
    """An ATS where a gestore takes patients in charge."""

    __tablename__ = "gestore_ats"

    gestore_id: Mapped[int] = mapped_column(ForeignKey("gestori.id", ondelete="CASCADE"), primary_key=True)
    ats_code: Mapped[str] = mapped_column(ForeignKey("ats.code"), primary_key=True, index=True)


class Provider(Base):
    """An erogatore: a hospital, clinic, laboratory or pharmacy that delivers services."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ProviderKind] = mapped_column(str_enum(ProviderKind, "kind"))
    ats_code: Mapped[str | None] = mapped_column(ForeignKey("ats.code"))
    municipality: Mapped[str | None] = mapped_column(Municipality)

    services: Mapped[list[ProviderService]] = relationship(cascade="all, delete-orphan", lazy="selectin")


class ProviderService(Base):
    """A nomenclator service (DPCM 12/01/2017 code) that a provider offers."""

    __tablename__ = "provider_services"

    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True)
    service_code: Mapped[str] = mapped_column(String(16), primary_key=True, index=True)


class NetworkMembership(Base):
    """A provider in a gestore's network, from one day, until another."""

    __tablename__ = "gestore_network"
    __table_args__ = (CheckConstraint("left_on IS NULL OR left_on >= joined_on", name="period_ordered"),)

    gestore_id: Mapped[int] = mapped_column(ForeignKey("gestori.id", ondelete="CASCADE"), primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), primary_key=True, index=True)
    joined_on: Mapped[date]
    left_on: Mapped[date | None]


class Practitioner(Base):
    """A person who cares for patients: GP (MMG/PLS, ``code`` = the flows' ``gp_id``), specialist, nurse, operator.

    ``opted_out_on`` records a GP's choice not to take part in the presa in carico as clinical manager.
    """

    __tablename__ = "practitioners"
    __table_args__ = (CheckConstraint("opted_out_on IS NULL OR profession = 'gp'", name="only_gps_opt_out"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    family_name: Mapped[str] = mapped_column(String(100))
    given_name: Mapped[str] = mapped_column(String(100))
    profession: Mapped[Profession] = mapped_column(str_enum(Profession, "profession"))
    discipline: Mapped[str | None] = mapped_column(String(64))
    ats_code: Mapped[str | None] = mapped_column(ForeignKey("ats.code"))
    phone: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(200))
    opted_out_on: Mapped[date | None]

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


class PractitionerRole(Base):
    """A practitioner's role within a gestore, for a period (FHIR ``PractitionerRole``)."""

    __tablename__ = "practitioner_roles"
    __table_args__ = (
        CheckConstraint("end_on IS NULL OR end_on >= start_on", name="period_ordered"),
        Index("ix_practitioner_roles_gestore_role", "gestore_id", "role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    gestore_id: Mapped[int] = mapped_column(ForeignKey("gestori.id"))
    role: Mapped[RoleKind] = mapped_column(str_enum(RoleKind, "role"))
    start_on: Mapped[date]
    end_on: Mapped[date | None]

    def active_on(self, day: date) -> bool:
        return self.start_on <= day and (self.end_on is None or day <= self.end_on)


# --- population ----------------------------------------------------------------------------------------------


class StratificationRun(Base):
    """A stratification run loaded into the store (``presa.stratify`` run directory)."""

    __tablename__ = "stratification_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text, comment="the run directory it was loaded from")
    run_digest: Mapped[str] = mapped_column(String(64), unique=True, comment="SHA-256 of its run.json")
    catalog_name: Mapped[str] = mapped_column(String(200))
    catalog_version: Mapped[str] = mapped_column(String(64))
    catalog_digest: Mapped[str] = mapped_column(String(64))
    reference_date: Mapped[date]
    population: Mapped[int]
    eligible: Mapped[int]
    loaded_at: Mapped[datetime]
    loaded_by: Mapped[str] = mapped_column(String(100))


class PatientStratum(Base):
    """What one run said of one resident: the history of levels and pathologies, never updated."""

    __tablename__ = "patient_strata"

    run_id: Mapped[int] = mapped_column(ForeignKey("stratification_runs.id"), primary_key=True)
    resident_id: Mapped[str] = mapped_column(ResidentId, primary_key=True, index=True)
    sex: Mapped[str] = mapped_column(String(1))
    birth_date: Mapped[date]
    age: Mapped[int] = mapped_column(SmallInteger)
    ats_code: Mapped[str] = mapped_column(AtsCode)
    gp_id: Mapped[str | None] = mapped_column(String(32))
    municipality: Mapped[str | None] = mapped_column(Municipality)
    level: Mapped[int] = mapped_column(SmallInteger)
    pathologies: Mapped[list[str]] = mapped_column(JsonList)
    eligible: Mapped[bool]


class Patient(Base):
    """A resident who is or was eligible, identified by the pseudonymous ``resident_id`` only.

    Level, pathologies, ATS and GP are those of the latest run that saw the patient (``run_id``); earlier values
    stay in ``patient_strata``.
    """

    __tablename__ = "patients"
    __table_args__ = (
        CheckConstraint("sex IN ('M', 'F')", name="sex"),
        CheckConstraint("level BETWEEN 1 AND 5", name="level"),
        Index(
            "ix_patients_without_pseudonym_index",
            "ats_code",
            "id",
            postgresql_where=text("pseudonym_index IS NULL"),
            sqlite_where=text("pseudonym_index IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[str] = mapped_column(ResidentId, unique=True)
    sex: Mapped[str] = mapped_column(String(1))
    birth_date: Mapped[date]
    municipality: Mapped[str | None] = mapped_column(Municipality)
    ats_code: Mapped[str] = mapped_column(ForeignKey("ats.code"), index=True)
    gp_id: Mapped[str | None] = mapped_column(String(32), index=True)
    level: Mapped[int] = mapped_column(SmallInteger)
    pathologies: Mapped[list[str]] = mapped_column(JsonList, comment="catalog pathology ids, main first")
    eligible: Mapped[bool]
    run_id: Mapped[int] = mapped_column(ForeignKey("stratification_runs.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    pseudonym_index: Mapped[int | None] = mapped_column(
        BigInteger,
        index=True,
        comment="keyed digest of the pseudonym, for analysts' lookups (presa.care.service.pseudonyms)",
    )

    def age_on(self, day: date) -> int:
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - before_birthday


# --- enrolment -----------------------------------------------------------------------------------------------


class Episode(Base):
    """An enrolment episode (presa in carico): at most one open per patient."""

    __tablename__ = "enrolment_episodes"
    __table_args__ = (
        Index(
            "uq_enrolment_episodes_open_patient",
            "patient_id",
            unique=True,
            postgresql_where=text("closed_on IS NULL"),
            sqlite_where=text("closed_on IS NULL"),
        ),
        Index("ix_enrolment_episodes_gestore_state", "gestore_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    state: Mapped[EpisodeState] = mapped_column(str_enum(EpisodeState, "state"), index=True)
    state_since: Mapped[date] = mapped_column(comment="effective date of the current state")
    gestore_id: Mapped[int | None] = mapped_column(ForeignKey("gestori.id"))
    clinical_manager_id: Mapped[int | None] = mapped_column(ForeignKey("practitioners.id"), index=True)
    case_manager_id: Mapped[int | None] = mapped_column(ForeignKey("practitioners.id"), index=True)
    opened_run_id: Mapped[int | None] = mapped_column(ForeignKey("stratification_runs.id"))
    level_at_opening: Mapped[int] = mapped_column(SmallInteger)
    opened_at: Mapped[datetime]
    closed_on: Mapped[date | None]

    patient: Mapped[Patient] = relationship()
    events: Mapped[list[EpisodeEvent]] = relationship(order_by="EpisodeEvent.seq", viewonly=True)


class EpisodeEvent(Base):
    """One entry of an episode's history: the transition, its effective date, when it was recorded and by whom."""

    __tablename__ = "enrolment_events"
    __table_args__ = (UniqueConstraint("episode_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("enrolment_episodes.id"))
    seq: Mapped[int]
    from_state: Mapped[EpisodeState | None] = mapped_column(str_enum(EpisodeState, "from_state"))
    to_state: Mapped[EpisodeState] = mapped_column(str_enum(EpisodeState, "to_state"))
    effective_on: Mapped[date]
    recorded_at: Mapped[datetime]
    author: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)


class InvitationBatch(Base):
    """The letters of one ATS prepared together."""

    __tablename__ = "invitation_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    ats_code: Mapped[str] = mapped_column(ForeignKey("ats.code"))
    letter_date: Mapped[date]
    size: Mapped[int]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))


class Invitation(Base):
    """One patient's letter; unique per episode, so nobody is invited twice in the same episode."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("invitation_batches.id"), index=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("enrolment_episodes.id"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)


# --- care pact -----------------------------------------------------------------------------------------------


class CarePact(Base):
    """One version of a patient's care pact within an episode."""

    __tablename__ = "care_pacts"
    __table_args__ = (
        UniqueConstraint("episode_id", "version"),
        CheckConstraint(
            "status <> 'revoked' OR (revoked_at IS NOT NULL AND revoked_by IS NOT NULL "
            "AND revocation_reason IS NOT NULL)",
            name="revocation_recorded",
        ),
        CheckConstraint("status = 'draft' OR signed_at IS NOT NULL", name="signature_recorded"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("enrolment_episodes.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    gestore_id: Mapped[int] = mapped_column(ForeignKey("gestori.id"))
    clinical_manager_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    version: Mapped[int]
    status: Mapped[PactStatus] = mapped_column(str_enum(PactStatus, "status"))
    drafted_at: Mapped[datetime]
    drafted_by: Mapped[str] = mapped_column(String(100))
    signed_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(100))
    revocation_reason: Mapped[str | None] = mapped_column(Text)

    scope_rows: Mapped[list[PactScope]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    signatures: Mapped[list[PactSignature]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="PactSignature.signed_at"
    )

    @property
    def scopes(self) -> frozenset[ConsentScope]:
        return frozenset(s.scope for s in self.scope_rows)


class PactScope(Base):
    """A consent scope the patient gave in a pact version (absent = not given)."""

    __tablename__ = "care_pact_scopes"

    pact_id: Mapped[int] = mapped_column(ForeignKey("care_pacts.id", ondelete="CASCADE"), primary_key=True)
    scope: Mapped[ConsentScope] = mapped_column(str_enum(ConsentScope, "scope"), primary_key=True)


class PactSignature(Base):
    __tablename__ = "care_pact_signatures"
    __table_args__ = (UniqueConstraint("pact_id", "signer_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pact_id: Mapped[int] = mapped_column(ForeignKey("care_pacts.id", ondelete="CASCADE"))
    signer_role: Mapped[SignerRole] = mapped_column(str_enum(SignerRole, "signer_role"))
    signer_name: Mapped[str] = mapped_column(String(200))
    signed_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(100))


# --- PAI -----------------------------------------------------------------------------------------------------


class CarePlanRecord(Base):
    """A patient's PAI for one plan year, with what it was built from; its versions hold the activities."""

    __tablename__ = "care_plans"
    __table_args__ = (
        CheckConstraint("end_on > start_on", name="period_ordered"),
        CheckConstraint("current_version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("enrolment_episodes.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    pact_id: Mapped[int] = mapped_column(ForeignKey("care_pacts.id"))
    start_on: Mapped[date]
    end_on: Mapped[date]
    municipality: Mapped[str | None] = mapped_column(Municipality)
    status: Mapped[PlanStatus] = mapped_column(str_enum(PlanStatus, "status"))
    current_version: Mapped[int]
    level: Mapped[int] = mapped_column(SmallInteger)
    age: Mapped[int] = mapped_column(SmallInteger)
    sex: Mapped[str] = mapped_column(String(1))
    pathologies: Mapped[list[str]] = mapped_column(JsonList)
    pathways: Mapped[list[str]] = mapped_column(JsonList, comment="the PDTA templates merged")
    generic_follow_up: Mapped[list[str]] = mapped_column(
        JsonList, comment="pathologies without a template: the clinician completes the plan"
    )
    templates_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))
    activated_at: Mapped[datetime | None]
    activated_by: Mapped[str | None] = mapped_column(String(100))


class PlanVersion(Base):
    """A version of a plan: version 1 as generated, each later one a personalisation with author and reason."""

    __tablename__ = "care_plan_versions"
    __table_args__ = (
        UniqueConstraint("plan_id", "version"),
        CheckConstraint("version = 1 OR (action IS NOT NULL AND reason IS NOT NULL)", name="change_explained"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("care_plans.id"))
    calendar_id: Mapped[int] = mapped_column(ForeignKey("plan_calendars.id"), comment="the version's activities")
    version: Mapped[int]
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    action: Mapped[str | None] = mapped_column(String(8), comment="add, drop or move; null for version 1")
    activity_id: Mapped[str | None] = mapped_column(String(96))
    reason: Mapped[str | None] = mapped_column(Text)
    from_day: Mapped[date | None]
    to_day: Mapped[date | None]


class PlanCalendar(Base):
    """A distinct dated calendar of activities, stored once and shared by every plan version that has it.

    A region's plans repeat - the same merged pathways laid from the same start give the same calendar - so the
    activities are kept per calendar, not per version: a million residents' 324,559 plans have 7,555 calendars.
    ``digest`` is the SHA-256 of the activities in order (``presa.care.store.calendars.calendar_digest``).
    """

    __tablename__ = "plan_calendars"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    activities: Mapped[int]


class PlanCalendarActivity(Base):
    """One dated activity of a plan calendar, with the pathways (PDTA templates) that asked for it."""

    __tablename__ = "plan_calendar_activities"

    calendar_id: Mapped[int] = mapped_column(ForeignKey("plan_calendars.id"), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    position: Mapped[int] = mapped_column(comment="the activity's place in the plan, from 0")
    day: Mapped[date] = mapped_column(index=True)
    origin: Mapped[str] = mapped_column(String(12))
    key: Mapped[str] = mapped_column(String(96))
    code: Mapped[str | None] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    discipline: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(16))
    description_it: Mapped[str] = mapped_column(Text)
    description_en: Mapped[str] = mapped_column(Text)
    times_per_year: Mapped[float]
    precedes_visit: Mapped[bool]
    pathways: Mapped[list[str]] = mapped_column(JsonList)
    conditions: Mapped[list[str]] = mapped_column(JsonList)


# --- audit ---------------------------------------------------------------------------------------------------


class AuditEvent(Base):
    """Who did what to which patient's data, when and from where. Append-only: triggers refuse UPDATE/DELETE."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(40))
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(index=True, comment="no foreign key: the trail outlives rows")
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonList)
