"""Browser sessions and the sign-in lock-out, for the web pages (``presa.web.pages``).

- A session is a random cookie value (256 bits); the store keeps only its SHA-256 (``web_sessions``), so a copy of
  the database opens no session. It ends :data:`LIFETIME` after sign-in, after :data:`IDLE` without a request, at
  sign-out, and for every session of the account when its password changes.
- The CSRF token of a session is an HMAC of the session's hash under the app's secret key: nothing more to store,
  different for every session, useless without the key.
- Lock-out: the failed sign-ins of a username - known or not, so the lock says nothing about which usernames exist -
  are counted in ``sign_in_failures`` (how many, the first and the last, and until when the name is locked).
  :data:`MAX_FAILURES` failures within :data:`WINDOW` lock the username for :data:`LOCK`; while it is locked even
  the right password is refused, without being checked. A successful sign-in forgets the failures.
- The API's token endpoint also counts failures per client address (``sign_in_address_failures``), with the same
  thresholds, so that one address cannot try a few passwords on each of many usernames. A successful sign-in does
  not forget an address's failures: otherwise an attacker holding one account could reset the count at will.
  The pages do not lock addresses: every browser behind a hospital's proxy shares one.
- The counters' rows are created (``ON CONFLICT DO NOTHING``) and locked before the password is checked, always
  username first, then address: parallel attempts wait for each other instead of all slipping under the threshold,
  and two sign-ins never hold the rows in opposite orders.

Like every service, these never commit: the caller's transaction does (a refused sign-in must still be
committed, so that its failure counts).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from presa.auth.models import Account, AddressSignInFailures, SignInFailures, WebSession
from presa.auth.service import AuthError, authenticate, change_password, check_password_strength
from presa.care.service.common import get, now
from presa.care.store.audit import record

LIFETIME = timedelta(hours=8)
IDLE = timedelta(minutes=30)
TOUCH_EVERY = timedelta(seconds=60)
"""How stale ``last_seen_at`` may get before a request writes it again (one write a minute, not one a page)."""
MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
LOCK = timedelta(minutes=15)
COOKIE_BYTES = 32


Counter = SignInFailures | AddressSignInFailures
C = TypeVar("C", SignInFailures, AddressSignInFailures)


class LockedOutError(AuthError):
    """Too many failed sign-ins for this username, or from this address: refused until ``until``."""

    def __init__(self, until: datetime, *, by_address: bool = False) -> None:
        self.until = until
        self.by_address = by_address
        whose = "from this address" if by_address else "for this username"
        super().__init__(f"too many failed sign-ins {whose}: try again after {until.isoformat(timespec='seconds')}")


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session: ``cookie`` goes to the browser once and is never stored."""

    cookie: str
    record: WebSession
    account: Account


def digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8")).hexdigest()


def csrf_token(key: bytes, session: WebSession) -> str:
    """The session's CSRF token: HMAC-SHA-256 of its stored hash under the secret key."""
    return hmac.new(key, b"csrf:" + session.token_hash.encode("ascii"), hashlib.sha256).hexdigest()


def check_csrf(key: bytes, session: WebSession, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(key, session), given or "")


def normal_username(username: str) -> str:
    return username.strip().lower()[:64]


def sign_in(
    session: Session,
    username: str,
    password: str,
    *,
    remote_addr: str | None = None,
    user_agent: str | None = None,
    at: datetime | None = None,
) -> OpenedSession:
    """Check the password (unless the username is locked out) and open a session; count a failure otherwise."""
    at = at or now()
    account = guarded_authenticate(session, username, password, at=at)
    return open_session(session, account, remote_addr=remote_addr, user_agent=user_agent, at=at)


def guarded_authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    lock_address: str | None = None,
    at: datetime | None = None,
) -> Account:
    """The account, if neither the username nor ``lock_address`` (when given) is locked out and the password is
    right; otherwise :class:`LockedOutError` (the password unchecked) or :class:`AuthError`, the failure counted
    for both."""
    at = at or now()
    name = normal_username(username)
    counters: list[Counter] = [_counter(session, SignInFailures, name, at)]
    if lock_address:
        counters.append(_counter(session, AddressSignInFailures, lock_address[:64], at))
    for counter in counters:
        if counter.locked_until is not None and counter.locked_until > at:
            by_address = isinstance(counter, AddressSignInFailures)
            record(
                session,
                actor=name or "?",
                action="sign_in_locked",
                entity="account",
                detail={"by": "address" if by_address else "username", "until": counter.locked_until.isoformat()},
                at=at,
            )
            raise LockedOutError(counter.locked_until, by_address=by_address)
    try:
        account = authenticate(session, name, password, at=at)
    except AuthError:
        for counter in counters:
            _add_failure(session, counter, name, at)
            _prune(session, type(counter), at)
        session.flush()
        raise
    for counter in counters:
        if isinstance(counter, SignInFailures) or counter.failures == 0:
            session.delete(counter)
    session.flush()
    return account


def count_failure(session: Session, username: str, *, at: datetime | None = None) -> SignInFailures:
    """One more failure for ``username``; the :data:`MAX_FAILURES`-th within :data:`WINDOW` locks it out."""
    at = at or now()
    name = normal_username(username)
    row = _counter(session, SignInFailures, name, at)
    _add_failure(session, row, name, at)
    _prune(session, SignInFailures, at)
    session.flush()
    return row


PRUNE_BATCH = 100


def _prune(session: Session, model: type[Counter], at: datetime) -> int:
    """Delete up to :data:`PRUNE_BATCH` counters that no longer count (last failure outside the window, no lock in
    force): usernames tried once and never again, by a spray of guesses, would otherwise pile up for ever. Each
    failure cleans a little, so the table holds about the failures of the last window."""
    key = SignInFailures.username if model is SignInFailures else AddressSignInFailures.remote_addr
    stale = (
        select(key)
        .where(
            model.last_failure_at <= at - max(WINDOW, LOCK),
            or_(model.locked_until.is_(None), model.locked_until <= at),
        )
        .limit(PRUNE_BATCH)
        # rows another sign-in holds are left to a later failure: no waiting on them, so no deadlock either
        .with_for_update(skip_locked=True)
    )
    result = session.execute(delete(model).where(key.in_(stale)), execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


def _add_failure(session: Session, row: Counter, name: str, at: datetime) -> None:
    """Count one failure on a counter's row; the :data:`MAX_FAILURES`-th within :data:`WINDOW` locks it."""
    stale = row.first_failure_at <= at - WINDOW or (row.locked_until is not None and row.locked_until <= at)
    if row.failures == 0 or stale:
        row.failures, row.first_failure_at, row.locked_until = 0, at, None
    row.failures += 1
    row.last_failure_at = at
    if row.failures >= MAX_FAILURES:
        row.locked_until = at + LOCK
        record(
            session,
            actor=name or "?",
            action="lock_out",
            entity="address" if isinstance(row, AddressSignInFailures) else "account",
            detail={"failures": row.failures, "until": row.locked_until.isoformat()},
            at=at,
        )


def open_session(
    session: Session,
    account: Account,
    *,
    remote_addr: str | None = None,
    user_agent: str | None = None,
    at: datetime | None = None,
) -> OpenedSession:
    at = at or now()
    cookie = secrets.token_urlsafe(COOKIE_BYTES)
    stored = WebSession(
        account_id=account.id,
        token_hash=digest(cookie),
        created_at=at,
        last_seen_at=at,
        expires_at=at + LIFETIME,
        remote_addr=remote_addr[:64] if remote_addr else None,
        user_agent=user_agent[:200] if user_agent else None,
    )
    session.add(stored)
    session.flush()
    record(session, actor=account.username, action="open_session", entity="web_session", entity_id=stored.id, at=at)
    return OpenedSession(cookie, stored, account)


def session_of(
    session: Session, cookie: str | None, *, at: datetime | None = None
) -> tuple[WebSession, Account] | None:
    """The live session the cookie names and its active account, or None; refreshes ``last_seen_at``."""
    if not cookie or len(cookie) > 100:
        return None
    at = at or now()
    stored = session.scalars(select(WebSession).where(WebSession.token_hash == digest(cookie))).first()
    if stored is None or stored.closed_at is not None or stored.expires_at <= at or stored.last_seen_at + IDLE <= at:
        return None
    account = session.get(Account, stored.account_id)
    if account is None or not account.active:
        return None
    if at - stored.last_seen_at >= TOUCH_EVERY:
        stored.last_seen_at = at
    return stored, account


def close_session(session: Session, stored: WebSession, *, author: str, at: datetime | None = None) -> None:
    at = at or now()
    if stored.closed_at is None:
        stored.closed_at, stored.closed_by = at, author[:64]
        session.flush()
        record(session, actor=author, action="close_session", entity="web_session", entity_id=stored.id, at=at)


def close_all_sessions(session: Session, account_id: int, *, author: str, at: datetime | None = None) -> None:
    at = at or now()
    session.execute(
        update(WebSession)
        .where(WebSession.account_id == account_id, WebSession.closed_at.is_(None), WebSession.expires_at > at)
        .values(closed_at=at, closed_by=author[:64]),
        execution_options={"synchronize_session": "fetch"},
    )
    record(session, actor=author, action="close_sessions", entity="account", entity_id=account_id, at=at)


def change_password_and_reopen(
    session: Session,
    stored: WebSession,
    *,
    old: str,
    new: str,
    remote_addr: str | None = None,
    user_agent: str | None = None,
    at: datetime | None = None,
) -> OpenedSession:
    """Change the account's password knowing the old one (a wrong one counts as a failed sign-in), close every
    session and API token of the account, and open a new session for this browser."""
    at = at or now()
    account = get(session, Account, stored.account_id, "account")
    failures = session.get(SignInFailures, normal_username(account.username), with_for_update=True)
    if failures is not None and failures.locked_until is not None and failures.locked_until > at:
        raise LockedOutError(failures.locked_until)
    check_password_strength(new, account.username)  # before anything is written
    try:
        change_password(session, account.id, old=old, new=new, at=at)
    except AuthError:
        count_failure(session, account.username, at=at)
        raise
    close_all_sessions(session, account.id, author=account.username, at=at)
    return open_session(session, account, remote_addr=remote_addr, user_agent=user_agent, at=at)


def _counter(session: Session, model: type[C], key: str, at: datetime) -> C:
    """The counter's row for ``key``, created with no failures when missing, locked for this transaction."""
    column = SignInFailures.username if model is SignInFailures else AddressSignInFailures.remote_addr
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(model)
        .values({column.key: key, "failures": 0, "first_failure_at": at, "last_failure_at": at})
        .on_conflict_do_nothing(index_elements=[column.key])
    )
    row: C = session.scalars(
        select(model).where(column == key).with_for_update().execution_options(populate_existing=True)
    ).one()
    return row
