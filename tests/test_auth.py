"""Accounts, argon2 passwords and hashed, expiring, revocable bearer tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from presa.auth.models import Account, ApiToken, Role
from presa.auth.service import (
    AccountError,
    AuthError,
    account_for_subject,
    authenticate,
    authenticate_token,
    change_password,
    create_account,
    disable_account,
    issue_token,
    revoke_all_tokens,
    revoke_token,
)
from presa.care.store.audit import trail
from tests.carebuilder import AT, CareRuns, clinical_manager, enrolled, gestore

PASSWORD = "correct horse battery staple"


def analyst(db: Session, username: str = "anna.ats", *, password: str = PASSWORD) -> Account:
    return create_account(
        db,
        username=username,
        display_name="Anna Analista",
        role="ats_analyst",
        ats_code="321",
        password=password,
        author="admin",
        at=AT,
    )


def test_passwords_are_stored_as_argon2id_and_checked(db: Session) -> None:
    account = analyst(db)
    assert account.password_hash is not None and account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash
    assert authenticate(db, "anna.ats", PASSWORD, at=AT).id == account.id
    for username, password in (("anna.ats", "wrong password!!"), ("nobody", PASSWORD), ("anna.ats", "")):
        with pytest.raises(AuthError, match=r"^wrong username or password$"):
            authenticate(db, username, password, at=AT)
    assert [a.action for a in trail(db) if a.entity == "account"] == [
        "create",
        "sign_in",
        "sign_in_refused",
        "sign_in_refused",
        "sign_in_refused",
    ]


def test_weak_passwords_and_bad_usernames_are_refused(db: Session) -> None:
    with pytest.raises(AccountError, match="at least 12 characters"):
        analyst(db, password="short")
    with pytest.raises(AccountError, match="must not contain the username"):
        analyst(db, "marco", password="marco-is-the-best")
    with pytest.raises(AccountError, match="at least 5 different characters"):
        analyst(db, password="aaaaaaaaaaaabbbb")
    with pytest.raises(AccountError, match="username 'Bad Name'"):
        analyst(db, "Bad Name")
    analyst(db)
    with pytest.raises(AccountError, match=r"username 'anna\.ats' is taken"):
        analyst(db)


def test_each_role_has_exactly_its_scope(db: Session, tmp_path: Path) -> None:
    care = enrolled(db, CareRuns(tmp_path))
    create_account(
        db,
        username="dr.rossi",
        display_name="Maria Rossi",
        role="clinician",
        gestore_id=care.gestore.id,
        practitioner_id=care.manager.id,
        password=PASSWORD,
        author="admin",
        at=AT,
    )
    create_account(
        db, username="patient.r1", display_name="Paziente", role="patient", patient_id=care.patient.id,
        password=PASSWORD, author="admin", at=AT,
    )  # fmt: skip
    with pytest.raises(AccountError, match="a clinician account needs practitioner_id"):
        create_account(
            db, username="dr.x", display_name="X", role="clinician", gestore_id=care.gestore.id, password=PASSWORD,
            author="admin", at=AT,
        )  # fmt: skip
    with pytest.raises(AccountError, match="a patient account takes no gestore_id"):
        create_account(
            db, username="patient.p2", display_name="P", role="patient", patient_id=care.patient.id,
            gestore_id=care.gestore.id, password=PASSWORD, author="admin", at=AT,
        )  # fmt: skip
    with pytest.raises(AccountError, match="unknown role 'superuser'"):
        create_account(db, username="root", display_name="R", role="superuser", password=PASSWORD, author="a", at=AT)
    with pytest.raises(AccountError, match="needs a password or an identity-provider subject"):
        create_account(db, username="ghost", display_name="G", role="ats_analyst", ats_code="321", author="a", at=AT)
    # The database holds the same rule for rows written around the service.
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(Account(username="raw", display_name="raw", role=Role.OPERATOR, created_at=AT))
        db.flush()
    assert sorted(db.scalars(select(Account.role))) == [Role.CLINICIAN, Role.PATIENT]


def test_tokens_are_stored_hashed_expire_and_can_be_revoked(db: Session) -> None:
    account = analyst(db)
    issued = issue_token(db, account.id, ttl=timedelta(hours=1), label="laptop", at=AT)
    assert issued.token.startswith("presa_") and len(issued.token) == 49
    stored = db.execute(text("SELECT token_hash FROM api_tokens")).scalars().all()
    assert stored == [hashlib.sha256(issued.token.encode()).hexdigest()]  # the token itself is nowhere
    assert authenticate_token(db, issued.token, at=AT + timedelta(minutes=59)).id == account.id
    last_used = select(ApiToken.last_used_at).where(ApiToken.id == issued.record.id)
    assert db.scalar(last_used) == AT + timedelta(minutes=59)  # written by the check, in its transaction

    with pytest.raises(AuthError, match="invalid or expired token"):
        authenticate_token(db, issued.token, at=AT + timedelta(hours=1))
    for forged in ("presa_" + "A" * 43, issued.token[:-1] + "x", "Bearer " + issued.token, "", "presa_" + "a" * 500):
        with pytest.raises(AuthError, match="invalid or expired token"):
            authenticate_token(db, forged, at=AT)

    second = issue_token(db, account.id, at=AT)
    revoke_token(db, second.record.id, author="anna.ats", at=AT + timedelta(minutes=1))
    with pytest.raises(AuthError):
        authenticate_token(db, second.token, at=AT + timedelta(minutes=2))
    with pytest.raises(AccountError, match="at most 30 days"):
        issue_token(db, account.id, ttl=timedelta(days=31), at=AT)
    with pytest.raises(AccountError, match="more than 0"):
        issue_token(db, account.id, ttl=timedelta(0), at=AT)


def test_changing_the_password_or_disabling_revokes_every_token(db: Session) -> None:
    account = analyst(db)
    tokens = [issue_token(db, account.id, at=AT).token for _ in range(3)]
    with pytest.raises(AuthError):
        change_password(db, account.id, old="not the password", new="another good passphrase", at=AT)
    with pytest.raises(AccountError, match="at least 12"):
        change_password(db, account.id, old=PASSWORD, new="short", at=AT)
    change_password(db, account.id, old=PASSWORD, new="another good passphrase", at=AT)
    for token in tokens:
        with pytest.raises(AuthError):
            authenticate_token(db, token, at=AT)
    with pytest.raises(AuthError):
        authenticate(db, "anna.ats", PASSWORD, at=AT)
    authenticate(db, "anna.ats", "another good passphrase", at=AT)

    fresh = issue_token(db, account.id, at=AT).token
    disable_account(db, account.id, author="admin", at=AT + timedelta(minutes=5))
    with pytest.raises(AuthError):
        authenticate_token(db, fresh, at=AT + timedelta(minutes=6))
    with pytest.raises(AuthError, match=r"^wrong username or password$"):
        authenticate(db, "anna.ats", "another good passphrase", at=AT)
    with pytest.raises(AccountError, match="is disabled"):
        issue_token(db, account.id, at=AT)
    live = db.scalars(select(ApiToken).where(ApiToken.revoked_at.is_(None))).all()
    assert live == []
    assert revoke_all_tokens(db, account.id, author="admin", at=AT) == 0


def test_an_identity_provider_subject_finds_its_account(db: Session) -> None:
    coop = gestore(db)
    gp = clinical_manager(db, coop)
    create_account(
        db,
        username="dr.oidc",
        display_name="Dr OIDC",
        role="clinician",
        gestore_id=coop.id,
        practitioner_id=gp.id,
        external_subject="https://idp.example|abc-123",
        author="admin",
        at=AT,
    )
    assert account_for_subject(db, "https://idp.example|abc-123").username == "dr.oidc"
    with pytest.raises(AuthError):
        account_for_subject(db, "https://idp.example|other")
    with pytest.raises(AuthError):  # no password: password sign-in is impossible
        authenticate(db, "dr.oidc", "", at=AT)


def test_failure_counters_that_no_longer_count_are_pruned(db: Session) -> None:
    """A spray of usernames tried once must not pile up rows for ever: each failure deletes a batch of counters
    whose window and lock are over, and keeps those still counting or locking."""
    from presa.auth.models import AddressSignInFailures, SignInFailures
    from presa.auth.sessions import LOCK, PRUNE_BATCH, WINDOW, guarded_authenticate

    old = AT - max(WINDOW, LOCK) - timedelta(minutes=1)
    sprayed = [f"guess{n:04d}" for n in range(PRUNE_BATCH + 20)]
    for name in sprayed:
        db.add(SignInFailures(username=name, failures=1, first_failure_at=old, last_failure_at=old))
    db.add(SignInFailures(username="still-locked", failures=5, first_failure_at=old, last_failure_at=old,
                          locked_until=AT + timedelta(minutes=5)))  # fmt: skip
    db.add(SignInFailures(username="recent", failures=2, first_failure_at=AT, last_failure_at=AT))
    db.add(AddressSignInFailures(remote_addr="192.0.2.9", failures=1, first_failure_at=old, last_failure_at=old))
    db.flush()

    with pytest.raises(AuthError):
        guarded_authenticate(db, "nobody", "wrong password", lock_address="192.0.2.1", at=AT)

    left = set(db.scalars(select(SignInFailures.username)))
    assert len(left & set(sprayed)) == 20  # one batch deleted, the rest left to the next failures
    assert {"still-locked", "recent", "nobody"} <= left
    assert set(db.scalars(select(AddressSignInFailures.remote_addr))) == {"192.0.2.1"}
