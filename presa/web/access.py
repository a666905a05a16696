"""Who may do what, and which patients each account may see: the one place that decides, denying by default.

Two questions, answered in this order for every request:

1. **May this role ever call this endpoint?** :data:`POLICY` maps each :class:`Permission` to the roles that hold
   it; a role without it gets 403, before anything is looked up (so a 403 says nothing about any patient).
2. **Is this patient within the account's scope?** :func:`scope_condition` is the SQL condition every patient
   query carries (:func:`patients_query`, :func:`visible_patient`); a patient outside it answers 404, exactly as a
   patient that does not exist. Pacts, plans and batches are reached through their patient (or ATS) the same way;
   so are the follow-up's work items and bookings (:func:`visible`, the same condition as an ``EXISTS``), which
   staff see only for their own gestore.

Scopes, on the patient and the latest of their enrolment episodes (open, or the last one closed):

- ``patient``: themself;
- ``gestore_admin``, ``operator``, ``case_manager``: the patients whose latest episode is with their gestore;
- ``clinician`` (a GP or specialist): of those, the ones they are clinical manager of or GP (``gp_id``) of;
- ``ats_analyst``: the patients of their ATS, **pseudonymised**: they address and see patients by a keyed
  pseudonym (``presa.care.pseudonyms``), never by internal id, resident id, birth date, or the names and free text
  of the history (see ``presa.web.api.patients``).

Invited patients belong to no gestore yet: a gestore takes one in charge with the letter's invitation code and the
patient's birth date (``POST /api/enrolments``), or the patient chooses their gestore themself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Select, and_, bindparam, false, func, or_, select
from sqlalchemy.orm import QueryableAttribute, Session, aliased

from presa.auth.models import Role
from presa.care.pseudonyms import pseudonym
from presa.care.service.pseudonyms import patient_of_pseudonym
from presa.care.store.models import Episode, Patient
from presa.web.errors import ApiError, not_found

R = Role
STAFF = frozenset({R.GESTORE_ADMIN, R.CLINICIAN, R.CASE_MANAGER, R.OPERATOR})
SERVICE_CENTRE = frozenset({R.GESTORE_ADMIN, R.CASE_MANAGER, R.OPERATOR})


class Permission(StrEnum):
    READ_PATIENTS = "read patients"
    TRANSITION = "move enrolment episodes"
    CHOOSE_GESTORE = "choose their own gestore"
    TAKE_IN_CHARGE = "take invited patients in charge"
    ASSIGN_CLINICAL_MANAGER = "name clinical managers"
    INVITE = "prepare and print invitation letters"
    READ_OWN_LETTER = "read a patient's invitation letter"
    DRAFT_PACTS = "draft care pacts"
    SIGN_PACTS = "sign care pacts"
    REVOKE_PACTS = "revoke care pacts"
    READ_PACTS = "read care pacts"
    WRITE_PLANS = "write care plans"
    READ_PLANS = "read care plans"
    READ_ORGANISATIONS = "read gestori, providers and practitioners"
    REGISTER_GESTORI = "register gestori"
    REGISTER_PROVIDERS = "register providers"
    MANAGE_GESTORE = "manage a gestore's network and staff"
    OPT_OUT = "opt out of the presa in carico"
    READ_AUDIT = "query the audit trail"
    READ_WORKLIST = "read work lists"
    WORK_ITEMS = "assign, snooze and close work-list items"
    READ_TIMELINE = "read a patient's follow-up timeline"
    READ_SCHEDULES = "read providers' schedules and slots"
    MANAGE_SCHEDULES = "publish providers' schedules and closures"
    BOOK = "book, reschedule and cancel activities"
    LOG_CONTACTS = "log calls with patients"
    POST_TRANSITIONS = "post discharges and ER visits"
    MARK_DONE = "mark planned activities done"


POLICY: Mapping[Permission, frozenset[Role]] = {
    Permission.READ_PATIENTS: frozenset(R),
    Permission.TRANSITION: STAFF,
    Permission.CHOOSE_GESTORE: frozenset({R.PATIENT}),
    Permission.TAKE_IN_CHARGE: frozenset({R.GESTORE_ADMIN, R.OPERATOR}),
    Permission.ASSIGN_CLINICAL_MANAGER: frozenset({R.GESTORE_ADMIN}),
    Permission.INVITE: frozenset({R.ATS_ANALYST}),
    Permission.READ_OWN_LETTER: frozenset({R.PATIENT, R.ATS_ANALYST}),
    Permission.DRAFT_PACTS: STAFF,
    Permission.SIGN_PACTS: STAFF | {R.PATIENT},
    Permission.REVOKE_PACTS: STAFF | {R.PATIENT},
    Permission.READ_PACTS: STAFF | {R.PATIENT},
    Permission.WRITE_PLANS: frozenset({R.CLINICIAN}),
    Permission.READ_PLANS: STAFF | {R.PATIENT},
    Permission.READ_ORGANISATIONS: frozenset(R),
    Permission.REGISTER_GESTORI: frozenset({R.ATS_ANALYST}),
    Permission.REGISTER_PROVIDERS: frozenset({R.ATS_ANALYST, R.GESTORE_ADMIN}),
    Permission.MANAGE_GESTORE: frozenset({R.GESTORE_ADMIN}),
    Permission.OPT_OUT: frozenset({R.CLINICIAN}),
    Permission.READ_AUDIT: frozenset({R.ATS_ANALYST}),
    Permission.READ_WORKLIST: STAFF | {R.ATS_ANALYST},
    Permission.WORK_ITEMS: STAFF,
    Permission.READ_TIMELINE: STAFF | {R.PATIENT},
    Permission.READ_SCHEDULES: STAFF,
    Permission.MANAGE_SCHEDULES: frozenset({R.GESTORE_ADMIN}),
    Permission.BOOK: SERVICE_CENTRE,
    Permission.LOG_CONTACTS: SERVICE_CENTRE,
    Permission.POST_TRANSITIONS: STAFF,
    Permission.MARK_DONE: STAFF,
}
"""Which roles hold each permission; a permission missing here is held by nobody."""


@dataclass(frozen=True, slots=True)
class Actor:
    """The signed-in account, as the request sees it."""

    account_id: int
    username: str
    role: Role
    ats_code: str | None
    gestore_id: int | None
    practitioner_id: int | None
    practitioner_code: str | None
    patient_id: int | None
    token_id: int
    remote_addr: str | None

    @property
    def pseudonymised(self) -> bool:
        return self.role is Role.ATS_ANALYST

    @property
    def staff(self) -> bool:
        return self.role in STAFF


def check(actor: Actor, permission: Permission) -> None:
    """403 unless the actor's role holds the permission."""
    if actor.role not in POLICY.get(permission, frozenset()):
        raise ApiError(403, f"the {actor.role} role may not {permission}")


_OTHER_EPISODE = aliased(Episode, name="other_episode")  # an alias is costly to build: once
_PROBED_PATIENT = aliased(Patient, name="probed_patient")  # the probes' own names: never correlated with the outside
_PROBED_EPISODE = aliased(Episode, name="probed_episode")


def latest_episode() -> Any:
    """The id of each patient's latest episode, as a subquery correlated with :class:`Patient`."""
    other = _OTHER_EPISODE
    return select(func.max(other.id)).where(other.patient_id == Patient.id).correlate(Patient).scalar_subquery()


def scope_condition(actor: Actor) -> ColumnElement[bool]:
    """The condition on (:class:`Patient`, its latest :class:`Episode`) that holds for the actor's patients."""
    role = actor.role
    if role is R.PATIENT and actor.patient_id is not None:
        return Patient.id == actor.patient_id
    if role is R.ATS_ANALYST and actor.ats_code is not None:
        return Patient.ats_code == actor.ats_code
    if role in (R.GESTORE_ADMIN, R.OPERATOR, R.CASE_MANAGER) and actor.gestore_id is not None:
        return Episode.gestore_id == actor.gestore_id
    if role is R.CLINICIAN and actor.gestore_id is not None and actor.practitioner_id is not None:
        own = Episode.clinical_manager_id == actor.practitioner_id
        if actor.practitioner_code is not None:
            own = or_(own, Patient.gp_id == actor.practitioner_code)
        return and_(Episode.gestore_id == actor.gestore_id, own)
    return false()


def visible(actor: Actor, patient_id: QueryableAttribute[int] | ColumnElement[int]) -> ColumnElement[bool]:
    """True where ``patient_id`` (a column of another table: work items, bookings) names a patient in the actor's
    scope; the condition the follow-up's lists carry. The same patients as :func:`scope_condition`.

    Written as a probe of the row's own patient: a boolean scalar subquery with a LIMIT, which PostgreSQL evaluates
    per row, never turns into a join, and credits with a selectivity of one half, so that a list is walked in its
    index's order and only the rows it shows are probed (0.7 ms for a page at 20,000 residents). The form
    ``EXISTS (patient with latest episode in scope)`` was planned as a semi-join computing every patient's latest
    episode on each request (78 ms at 20,000 residents, a scan of the region at a million), and ``(probe) = value``
    as a sort of the whole list (its default selectivity, 0.5 %, made the planner expect only a few rows)."""
    scope = visibility(actor)
    return _visible_form(scope.form, patient_id, lambda name: bindparam(name, scope.values[name], unique=True))


@dataclass(frozen=True, slots=True)
class Visibility:
    """:func:`visible` for a statement built once and run for many actors (``presa.followup.service.worklist``'s
    ``PageScope``): the condition depends on ``form`` only, its bind parameters are named after the keys of
    ``values`` and hold no value, so that the statement fails when run without this actor's values - it can never
    show the patients of the actor it was first built for."""

    form: str
    values: Mapping[str, Any]

    def condition(self, patient_id: QueryableAttribute[int] | ColumnElement[int]) -> ColumnElement[bool]:
        return _visible_form(self.form, patient_id, lambda name: bindparam(name, required=True))


def visibility(actor: Actor) -> Visibility:
    """The form of the actor's scope and its values (the parameters are named ``scope_*``: apart from any other)."""
    role = actor.role
    if role is R.PATIENT and actor.patient_id is not None:
        return Visibility("patient", {"scope_patient": actor.patient_id})
    if role is R.ATS_ANALYST and actor.ats_code is not None:
        return Visibility("ats", {"scope_ats": actor.ats_code})
    if role in (R.GESTORE_ADMIN, R.OPERATOR, R.CASE_MANAGER) and actor.gestore_id is not None:
        return Visibility("gestore", {"scope_gestore": actor.gestore_id})
    if role is R.CLINICIAN and actor.gestore_id is not None and actor.practitioner_id is not None:
        values = {"scope_gestore": actor.gestore_id, "scope_practitioner": actor.practitioner_id}
        if actor.practitioner_code is None:
            return Visibility("clinician", values)
        return Visibility("clinician or gp", {**values, "scope_gp": actor.practitioner_code})
    return Visibility("nobody", {})


def _visible_form(
    form: str,
    patient_id: QueryableAttribute[int] | ColumnElement[int],
    value: Callable[[str], BindParameter[Any]],
) -> ColumnElement[bool]:
    """The condition of :func:`visible` of one ``form``, each value the bind parameter ``value(name)``."""
    if form == "patient":
        return patient_id == value("scope_patient")
    if form == "ats":
        return _patient_probe(_PROBED_PATIENT.ats_code == value("scope_ats"), patient_id)
    if form == "gestore":
        return _latest_episode_probe(_PROBED_EPISODE.gestore_id == value("scope_gestore"), patient_id)
    if form in ("clinician", "clinician or gp"):
        own = _PROBED_EPISODE.clinical_manager_id == value("scope_practitioner")
        if form == "clinician or gp":
            own = or_(own, _patient_probe(_PROBED_PATIENT.gp_id == value("scope_gp"), patient_id))
        return _latest_episode_probe(and_(_PROBED_EPISODE.gestore_id == value("scope_gestore"), own), patient_id)
    return false()


def _patient_probe(
    condition: ColumnElement[bool], patient_id: QueryableAttribute[int] | ColumnElement[int]
) -> ColumnElement[bool]:
    """``condition`` on the patient ``patient_id`` names (false when there is none), evaluated per row."""
    probe = select(condition).where(_PROBED_PATIENT.id == patient_id).limit(1).scalar_subquery()
    return func.coalesce(probe, false())


def _latest_episode_probe(
    condition: ColumnElement[bool], patient_id: QueryableAttribute[int] | ColumnElement[int]
) -> ColumnElement[bool]:
    """``condition`` on the latest episode of the patient ``patient_id`` names (false without one), per row."""
    episode = _PROBED_EPISODE
    probe = (
        select(condition).where(episode.patient_id == patient_id).order_by(episode.id.desc()).limit(1).scalar_subquery()
    )
    return func.coalesce(probe, false())


def patients_query(actor: Actor) -> Select[Patient, Episode]:
    """Patients within the actor's scope, each with their latest episode (None when they have none)."""
    return select(Patient, Episode).outerjoin(Episode, Episode.id == latest_episode()).where(scope_condition(actor))


class Pseudonyms:
    """Patients' pseudonyms for analysts, and back: a pseudonym finds its patient by an index lookup
    (``presa.care.service.pseudonyms``), never by computing the pseudonyms of a whole ATS."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def of(self, patient: Patient) -> str:
        return pseudonym(self.key, patient.resident_id)

    def resolve(self, session: Session, ats_code: str, value: str) -> int | None:
        return patient_of_pseudonym(session, self.key, ats_code, value)


def visible_patient(session: Session, actor: Actor, ref: str, pseudonyms: Pseudonyms) -> tuple[Patient, Episode | None]:
    """The patient ``ref`` names (an id; a pseudonym for analysts) if within the actor's scope, else 404.

    The 404 names what the caller asked for and nothing else, in the same words whether the patient does not
    exist or is not theirs to see.
    """
    patient_id = _patient_id(session, actor, ref, pseudonyms)
    if patient_id is None:
        raise not_found(f"patient {ref[:40]}")
    return visible_patient_id(session, actor, patient_id, shown=f"patient {ref[:40]}")


def visible_patient_id(
    session: Session, actor: Actor, patient_id: int, *, shown: str | None = None
) -> tuple[Patient, Episode | None]:
    row = session.execute(patients_query(actor).where(Patient.id == patient_id)).first()
    if row is None:
        raise not_found(shown or f"patient {patient_id}")
    patient, episode = row
    return patient, episode


def _patient_id(session: Session, actor: Actor, ref: str, pseudonyms: Pseudonyms) -> int | None:
    if actor.pseudonymised:
        return pseudonyms.resolve(session, actor.ats_code or "", ref)
    if not ref.isascii() or not ref.isdigit() or len(ref) > 10:
        return None
    value = int(ref)
    return value if 1 <= value < 2**31 else None
