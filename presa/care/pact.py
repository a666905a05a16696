"""The care pact (Patto di cura) rules, pure: consent scopes, signatures, revocation and what they allow.

A pact (FHIR ``Consent``, the signed PDF as ``DocumentReference``) names the patient, the gestore and the clinical
manager, and the consent scopes the patient gives: ``care`` (always: without it there is no presa in carico),
``data_sharing`` with the gestore's network, ``reminders_sms``, ``reminders_email``, ``telemonitoring`` and
``caregiver_reminders`` (appointments also told to a caregiver the patient names). Pacts
are versioned within an enrolment episode: a new version starts as a draft and, once signed by the patient (or a
legal representative) and by the clinical manager, supersedes the previous one. Revoking the signed pact stops any
further processing of the patient's plan until a new version is signed; :func:`processing_decision` says whether
processing may go on, and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from presa.care.enrolment import FINAL_STATES, EpisodeState


class ConsentScope(StrEnum):
    CARE = "care"
    DATA_SHARING = "data_sharing"
    REMINDERS_SMS = "reminders_sms"
    REMINDERS_EMAIL = "reminders_email"
    TELEMONITORING = "telemonitoring"
    CAREGIVER_REMINDERS = "caregiver_reminders"


class PactStatus(StrEnum):
    DRAFT = "draft"
    SIGNED = "signed"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"


class SignerRole(StrEnum):
    PATIENT = "patient"
    LEGAL_REPRESENTATIVE = "legal_representative"
    CLINICAL_MANAGER = "clinical_manager"


PATIENT_SIDE: frozenset[SignerRole] = frozenset({SignerRole.PATIENT, SignerRole.LEGAL_REPRESENTATIVE})


class PactError(ValueError):
    """A pact operation refused, with the reason."""


def check_scopes(scopes: Iterable[str]) -> frozenset[ConsentScope]:
    """The scopes as enum members; refuses unknown ones and a pact without consent to care."""
    given = list(scopes)
    known_values = {m.value for m in ConsentScope}
    unknown = [s for s in given if s not in known_values]
    if unknown:
        known = ", ".join(ConsentScope)
        raise PactError(f"unknown consent scope(s) {', '.join(map(repr, unknown))}: the scopes are {known}")
    parsed = frozenset(ConsentScope(s) for s in given)
    if ConsentScope.CARE not in parsed:
        raise PactError("a care pact needs the 'care' scope: without consent to care there is no presa in carico")
    return parsed


def missing_signatures(signed: Iterable[SignerRole]) -> tuple[str, ...]:
    """What the pact still needs before it is signed: the patient's side and the clinical manager."""
    roles = set(signed)
    missing = []
    if not roles & PATIENT_SIDE:
        missing.append("patient or legal_representative")
    if SignerRole.CLINICAL_MANAGER not in roles:
        missing.append("clinical_manager")
    return tuple(missing)


def check_signature(
    *,
    status: PactStatus,
    version: int,
    role: SignerRole | str,
    signer: str,
    already_signed: Iterable[SignerRole],
    signed_at: datetime,
    drafted_at: datetime,
    now: datetime,
) -> SignerRole:
    """Check one signature of a pact version and return its role."""
    if status is not PactStatus.DRAFT:
        raise PactError(f"care pact v{version} is {status}: only a draft can be signed")
    try:
        parsed = SignerRole(role)
    except ValueError:
        raise PactError(f"unknown signer role '{role}': the roles are {', '.join(SignerRole)}") from None
    roles = set(already_signed)
    if parsed in roles:
        raise PactError(f"care pact v{version} is already signed by its {parsed}")
    if parsed in PATIENT_SIDE and roles & PATIENT_SIDE:
        raise PactError(f"care pact v{version} is already signed on the patient's side")
    if not signer.strip():
        raise PactError("a signature needs the signer's name")
    if signed_at.tzinfo is None:
        raise PactError("the signature time must be timezone-aware")
    if signed_at > now:
        raise PactError(f"signature time {signed_at.isoformat()} is in the future")
    if signed_at < drafted_at:
        raise PactError(
            f"signature time {signed_at.isoformat()} is before care pact v{version} was drafted "
            f"({drafted_at.isoformat()})"
        )
    return parsed


def check_revocation(*, status: PactStatus, version: int, reason: str) -> None:
    if status is not PactStatus.SIGNED:
        raise PactError(f"care pact v{version} is {status}: only the signed pact in force can be revoked")
    if not reason.strip():
        raise PactError("a revocation needs a reason")


@dataclass(frozen=True, slots=True)
class PactFacts:
    """What the decision needs to know of one pact version."""

    id: int
    version: int
    status: PactStatus
    scopes: frozenset[ConsentScope]
    signed_at: datetime | None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revocation_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessingDecision:
    """Whether the patient's plan may be processed (new versions, reminders, work-list items), and why."""

    allowed: bool
    reason: str
    pact_id: int | None = None
    scopes: frozenset[ConsentScope] = frozenset()

    def allows(self, scope: ConsentScope) -> bool:
        return self.allowed and scope in self.scopes


def processing_decision(
    patient: str, episode_state: EpisodeState | None, pacts: Sequence[PactFacts]
) -> ProcessingDecision:
    """Decide from the open episode's state and its pact versions; the latest signed or revoked version rules."""
    if episode_state is None or episode_state in FINAL_STATES:
        closed = f" (its last episode is {episode_state})" if episode_state else ""
        return ProcessingDecision(False, f"patient {patient} has no open enrolment episode{closed}")
    in_force = [p for p in pacts if p.status in (PactStatus.SIGNED, PactStatus.REVOKED)]
    if not in_force:
        return ProcessingDecision(False, f"patient {patient} has no signed care pact")
    pact = max(in_force, key=lambda p: p.version)
    if pact.status is PactStatus.REVOKED:
        when = pact.revoked_at.date().isoformat() if pact.revoked_at else "an unknown date"
        return ProcessingDecision(
            False,
            f"the care pact v{pact.version} of patient {patient} was revoked on {when} by {pact.revoked_by} "
            f"({pact.revocation_reason}): no further processing until a new version is signed",
            pact.id,
        )
    if ConsentScope.CARE not in pact.scopes:
        return ProcessingDecision(False, f"care pact v{pact.version} of patient {patient} gives no consent to care")
    signed = pact.signed_at.date().isoformat() if pact.signed_at else "an unknown date"
    return ProcessingDecision(True, f"care pact v{pact.version} signed on {signed}", pact.id, pact.scopes)
