"""Accounts and API tokens, in the care store (same metadata, same migrations).

An account has one role and the scope that role needs: an ATS analyst their ATS; a gestore administrator,
clinician, case manager or operator their gestore (a clinician and a case manager also their practitioner record,
so that a GP sees their own patients); a patient their patient record. ``external_subject`` is the identity
provider's subject for accounts that sign in through OIDC; ``password_hash`` is null for those that never use a
password. API tokens are stored as the SHA-256 of the token only: the token itself is shown once, at issue.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from presa.care.store.models import Base
from presa.care.store.types import str_enum


class Role(StrEnum):
    ATS_ANALYST = "ats_analyst"
    GESTORE_ADMIN = "gestore_admin"
    CLINICIAN = "clinician"
    CASE_MANAGER = "case_manager"
    OPERATOR = "operator"
    PATIENT = "patient"


GESTORE_ROLES: frozenset[Role] = frozenset({Role.GESTORE_ADMIN, Role.CLINICIAN, Role.CASE_MANAGER, Role.OPERATOR})
PRACTITIONER_ROLES: frozenset[Role] = frozenset({Role.CLINICIAN, Role.CASE_MANAGER})


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("role <> 'ats_analyst' OR ats_code IS NOT NULL", name="analyst_has_ats"),
        CheckConstraint(
            "role NOT IN ('gestore_admin', 'clinician', 'case_manager', 'operator') OR gestore_id IS NOT NULL",
            name="staff_has_gestore",
        ),
        CheckConstraint(
            "role NOT IN ('clinician', 'case_manager') OR practitioner_id IS NOT NULL", name="carer_is_practitioner"
        ),
        CheckConstraint("role <> 'patient' OR patient_id IS NOT NULL", name="patient_has_record"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    external_subject: Mapped[str | None] = mapped_column(String(255), unique=True, comment="OIDC issuer|subject")
    ats_code: Mapped[str | None] = mapped_column(ForeignKey("ats.code"))
    gestore_id: Mapped[int | None] = mapped_column(ForeignKey("gestori.id"), index=True)
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioners.id"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    created_at: Mapped[datetime]
    password_changed_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]

    @property
    def active(self) -> bool:
        return self.disabled_at is None


class ApiToken(Base):
    """A bearer token: its SHA-256, its account, when it expires and whether it was revoked."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("expires_at > created_at", name="expires_after_issue"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None]


class WebSession(Base):
    """A signed-in browser: the SHA-256 of its cookie, its account, when it was last seen and when it ends.

    A session ends at ``expires_at`` (absolute), after ``presa.auth.sessions.IDLE`` without a request, or when it
    is closed (sign-out, password change, account disabled): ``closed_at``.
    """

    __tablename__ = "web_sessions"
    __table_args__ = (CheckConstraint("expires_at > created_at", name="expires_after_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(200))


class SignInFailures(Base):
    """Failed sign-ins of one username (known or not), for the lock-out: how many since when, locked until when."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (CheckConstraint("failures >= 0", name="failures_not_negative"),)

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int]
    first_failure_at: Mapped[datetime]
    last_failure_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]


class AddressSignInFailures(Base):
    """Failed sign-ins from one client address (any usernames), for the API's lock-out: the same counts as
    :class:`SignInFailures`, so that one address cannot try a few passwords on each of many usernames."""

    __tablename__ = "sign_in_address_failures"
    __table_args__ = (CheckConstraint("failures >= 0", name="failures_not_negative"),)

    remote_addr: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int]
    first_failure_at: Mapped[datetime]
    last_failure_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]
