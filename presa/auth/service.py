"""Accounts, passwords and bearer tokens.

- Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's low-memory profile) and rehashed at
  sign-in when those parameters change. An unknown username costs the same hash as a known one, and every refusal
  says the same thing, so a caller cannot tell which half was wrong.
- A bearer token is ``presa_`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 is stored -
  a slow hash adds nothing to a secret that long - so a copy of the database holds no usable token. Tokens expire
  (8 hours by default, 30 days at most) and can be revoked one by one or all at once; changing the password or
  disabling the account revokes them all.
- :func:`account_for_subject` finds the account of an identity-provider subject, for the day presa sits behind an
  OIDC provider: the provider authenticates, presa still decides the role and its scope.

Services never commit; each writes an audit row (no patient: these are not patient data).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from presa.auth.models import GESTORE_ROLES, PRACTITIONER_ROLES, Account, ApiToken, Role
from presa.care.service.common import CareError, get, now
from presa.care.store.audit import record
from presa.care.store.bulk import table_of
from presa.care.store.models import Practitioner

TOKEN_PREFIX = "presa_"
TOKEN_BYTES = 32
DEFAULT_TOKEN_TTL = timedelta(hours=8)
MAX_TOKEN_TTL = timedelta(days=30)
LAST_USED_RESOLUTION = timedelta(minutes=1)
MIN_PASSWORD_LENGTH = 12
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
REFUSED = "wrong username or password"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("presa: the hash an unknown username is checked against")


class AuthError(Exception):
    """Authentication refused; the message never says which part was wrong."""


class AccountError(CareError):
    """An account that cannot be created or changed as asked."""


@dataclass(frozen=True, slots=True)
class Bearer:
    """A valid bearer token and what its account may see: the account's role and scope, the practitioner's code
    (a GP's patients are those whose ``gp_id`` it is)."""

    token_id: int
    account_id: int
    username: str
    role: Role
    ats_code: str | None
    gestore_id: int | None
    practitioner_id: int | None
    practitioner_code: str | None
    patient_id: int | None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new bearer token: ``token`` is shown to its owner once and never stored."""

    token: str
    record: ApiToken


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_strength(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if username.lower() in password.lower():
        raise AccountError("the password must not contain the username")
    if len(set(password)) < 5:
        raise AccountError("the password must use at least 5 different characters")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_account(
    session: Session,
    *,
    username: str,
    display_name: str,
    role: Role | str,
    author: str,
    password: str | None = None,
    external_subject: str | None = None,
    ats_code: str | None = None,
    gestore_id: int | None = None,
    practitioner_id: int | None = None,
    patient_id: int | None = None,
    at: datetime | None = None,
) -> Account:
    """An account with one role and exactly the scope the role needs."""
    at = at or now()
    if not USERNAME.fullmatch(username):
        raise AccountError(
            f"username '{username}': 3 to 64 characters among lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    try:
        kind = Role(role)
    except ValueError:
        raise AccountError(f"unknown role '{role}': the roles are {', '.join(Role)}") from None
    _check_scope(kind, ats_code, gestore_id, practitioner_id, patient_id)
    if password is None and external_subject is None:
        raise AccountError("an account needs a password or an identity-provider subject to sign in with")
    if password is not None:
        check_password_strength(password, username)
    if session.scalar(select(Account.id).where(Account.username == username)) is not None:
        raise AccountError(f"username '{username}' is taken")
    account = Account(
        username=username,
        display_name=display_name.strip() or username,
        role=kind,
        password_hash=hash_password(password) if password is not None else None,
        external_subject=external_subject,
        ats_code=ats_code,
        gestore_id=gestore_id,
        practitioner_id=practitioner_id,
        patient_id=patient_id,
        created_at=at,
        password_changed_at=at if password is not None else None,
    )
    session.add(account)
    session.flush()
    record(
        session,
        actor=author,
        action="create",
        entity="account",
        entity_id=account.id,
        detail={"role": kind.value},
        at=at,
    )
    return account


def authenticate(session: Session, username: str, password: str, *, at: datetime | None = None) -> Account:
    """The active account with this username and password, or :class:`AuthError`."""
    at = at or now()
    account = session.scalars(select(Account).where(Account.username == username)).first()
    stored = account.password_hash if account is not None and account.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
        verified = stored is not _DUMMY_HASH
    except (VerificationError, InvalidHashError):
        verified = False
    if account is None or not verified or not account.active:
        record(session, actor=username[:100] or "?", action="sign_in_refused", entity="account", at=at)
        raise AuthError(REFUSED)
    if _hasher.check_needs_rehash(stored):
        account.password_hash = hash_password(password)
    record(session, actor=account.username, action="sign_in", entity="account", entity_id=account.id, at=at)
    return account


def issue_token(
    session: Session,
    account_id: int,
    *,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
    label: str = "api",
    at: datetime | None = None,
) -> IssuedToken:
    """A new bearer token for an active account, valid for ``ttl``."""
    at = at or now()
    account = get(session, Account, account_id, "account")
    if not account.active:
        raise AccountError(f"account '{account.username}' is disabled")
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise AccountError(f"a token lives more than 0 and at most {MAX_TOKEN_TTL.days} days, not {ttl}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    stored = ApiToken(
        account_id=account.id,
        token_hash=token_digest(token),
        label=label[:100] or "api",
        created_at=at,
        expires_at=at + ttl,
    )
    session.add(stored)
    session.flush()
    record(
        session,
        actor=account.username,
        action="issue_token",
        entity="api_token",
        entity_id=stored.id,
        detail={"expires_at": stored.expires_at.isoformat(), "label": stored.label},
        at=at,
    )
    return IssuedToken(token, stored)


def authenticate_token(session: Session, token: str, *, at: datetime | None = None) -> Account:
    """The account a bearer token belongs to, if the token is known, unexpired, unrevoked and its account active."""
    return get(session, Account, authenticate_bearer(session, token, at=at).account_id, "account")


_TOKENS, _ACCOUNTS, _PRACTITIONERS = table_of(ApiToken), table_of(Account), table_of(Practitioner)
_t, _a = _TOKENS.c, _ACCOUNTS.c
BEARER = (
    select(_t.id.label("token_id"), _t.token_hash, _t.expires_at, _t.revoked_at, _t.last_used_at,
           _a.id.label("account_id"), _a.username, _a.role, _a.ats_code, _a.gestore_id, _a.practitioner_id,
           _a.patient_id, _a.disabled_at, _PRACTITIONERS.c.code.label("practitioner_code"))
    .select_from(_TOKENS.join(_ACCOUNTS, _a.id == _t.account_id))
    .outerjoin(_PRACTITIONERS, _PRACTITIONERS.c.id == _a.practitioner_id)
    .where(_t.token_hash == bindparam("digest"))
)  # fmt: skip
"""Token, account and practitioner's code in one statement on the tables, built once: it runs on every request,
so neither the ORM's objects nor the building and cache-keying of a statement are paid each time. Its row goes to
:func:`accepted_bearer`."""
TOKEN_USED = update(_TOKENS).where(_t.id == bindparam("token_id")).values(last_used_at=bindparam("used_at"))
"""The token's ``last_used_at``, written when :func:`token_use_stale`."""


def authenticate_bearer(session: Session, token: str, *, at: datetime | None = None) -> Bearer:
    """The account of a valid bearer token, in one query; ``last_used_at`` is written when it is more than
    :data:`LAST_USED_RESOLUTION` old, so that a busy client does not write (and lock) its token row on every
    request."""
    at = at or now()
    digest = bearer_digest(token)
    row = session.connection().execute(BEARER, {"digest": digest}).first()
    bearer = accepted_bearer(row, digest, at)
    if token_use_stale(row, at):
        session.connection().execute(TOKEN_USED, {"token_id": bearer.token_id, "used_at": at})
    return bearer


def bearer_digest(token: str) -> str:
    """The digest a token is stored under; an :class:`AuthError` for what cannot be one of ours."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        raise AuthError("invalid or expired token")
    return token_digest(token)


def accepted_bearer(row: Any, digest: str, at: datetime) -> Bearer:
    """The :class:`Bearer` of a row of :data:`BEARER` (``None``: no such token) if the token is valid at ``at``;
    an :class:`AuthError` that says no more than "invalid or expired" otherwise."""
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise AuthError("invalid or expired token")
    if row.revoked_at is not None or row.expires_at <= at or row.disabled_at is not None:
        raise AuthError("invalid or expired token")
    return Bearer(
        token_id=row.token_id,
        account_id=row.account_id,
        username=row.username,
        role=Role(row.role),
        ats_code=row.ats_code,
        gestore_id=row.gestore_id,
        practitioner_id=row.practitioner_id,
        practitioner_code=row.practitioner_code,
        patient_id=row.patient_id,
    )


def token_use_stale(row: Any, at: datetime) -> bool:
    """Whether the token's ``last_used_at`` (a row of :data:`BEARER`) is to be written at ``at``."""
    return row.last_used_at is None or not timedelta(0) <= at - row.last_used_at < LAST_USED_RESOLUTION


def revoke_token(session: Session, token_id: int, *, author: str, at: datetime | None = None) -> ApiToken:
    at = at or now()
    stored = get(session, ApiToken, token_id, "token")
    if stored.revoked_at is None:
        stored.revoked_at, stored.revoked_by = at, author[:64]
        session.flush()
        record(session, actor=author, action="revoke_token", entity="api_token", entity_id=stored.id, at=at)
    return stored


def revoke_all_tokens(session: Session, account_id: int, *, author: str, at: datetime | None = None) -> int:
    """Revoke every live token of an account; how many."""
    at = at or now()
    revoked = session.execute(
        update(ApiToken)
        .where(ApiToken.account_id == account_id, ApiToken.revoked_at.is_(None), ApiToken.expires_at > at)
        .values(revoked_at=at, revoked_by=author[:64]),
        execution_options={"preserve_rowcount": True, "synchronize_session": "fetch"},
    )
    count = int(getattr(revoked, "rowcount", 0))
    record(
        session, actor=author, action="revoke_tokens", entity="account", entity_id=account_id, detail={"count": count}
    )
    return count


def change_password(session: Session, account_id: int, *, old: str, new: str, at: datetime | None = None) -> Account:
    """Change a password knowing the old one; every token of the account is revoked."""
    at = at or now()
    account = get(session, Account, account_id, "account")
    authenticate(session, account.username, old, at=at)
    check_password_strength(new, account.username)
    account.password_hash = hash_password(new)
    account.password_changed_at = at
    session.flush()
    revoke_all_tokens(session, account.id, author=account.username, at=at)
    record(session, actor=account.username, action="change_password", entity="account", entity_id=account.id, at=at)
    return account


def disable_account(session: Session, account_id: int, *, author: str, at: datetime | None = None) -> Account:
    """Disable an account: no sign-in, no token works any more."""
    at = at or now()
    account = get(session, Account, account_id, "account")
    if account.disabled_at is None:
        account.disabled_at = at
        session.flush()
        revoke_all_tokens(session, account.id, author=author, at=at)
        record(session, actor=author, action="disable", entity="account", entity_id=account.id, at=at)
    return account


def account_for_subject(session: Session, external_subject: str) -> Account:
    """The active account of an identity-provider subject (``issuer|subject``), for OIDC sign-in."""
    account = session.scalars(select(Account).where(Account.external_subject == external_subject)).first()
    if account is None or not account.active:
        raise AuthError("no active account for this identity")
    return account


def _check_scope(
    role: Role, ats_code: str | None, gestore_id: int | None, practitioner_id: int | None, patient_id: int | None
) -> None:
    needs = {
        "ats_code": role is Role.ATS_ANALYST,
        "gestore_id": role in GESTORE_ROLES,
        "practitioner_id": role in PRACTITIONER_ROLES,
        "patient_id": role is Role.PATIENT,
    }
    given = {
        "ats_code": ats_code,
        "gestore_id": gestore_id,
        "practitioner_id": practitioner_id,
        "patient_id": patient_id,
    }
    missing = [name for name, needed in needs.items() if needed and given[name] is None]
    extra = [name for name, needed in needs.items() if not needed and given[name] is not None]
    if missing:
        raise AccountError(f"a {role} account needs {', '.join(missing)}")
    if extra:
        raise AccountError(f"a {role} account takes no {', '.join(extra)}: its scope would be ambiguous")
