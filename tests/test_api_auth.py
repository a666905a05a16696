"""The token endpoint's lock-out, over a real socket, on SQLite and PostgreSQL: per username and per client address,
429 with Retry-After, the same answer for a username that exists and one that does not, every step audited.

The live server trusts ``X-Forwarded-For`` from the loopback (uvicorn's default), so each test speaks from
addresses of its own (documentation ranges) and the tests do not lock each other out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from presa.auth.models import AddressSignInFailures, SignInFailures
from presa.auth.service import create_account
from presa.auth.sessions import LOCK, MAX_FAILURES
from presa.care.store import make_engine
from presa.care.store.models import AuditEvent
from tests.apiworld import PASSWORD
from tests.conftest import Api

WRONG = "not the password at all"
LOCKED_DETAIL = (
    r"^too many failed sign-ins {whose}: try again after \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 \(in \d+ s\)$"
)


ACCOUNTS = ("lock.a", "lock.b", "lock.c")


@pytest.fixture(scope="module")
def store(api: Api, api_database: str) -> Iterator[Engine]:
    """The live API's database, with accounts of their own that sign in with a password."""
    engine = make_engine(api_database)
    with Session(engine) as db, db.begin():
        for username in ACCOUNTS:
            create_account(
                db, username=username, display_name=username, role="ats_analyst", ats_code="321",
                password=PASSWORD, author="setup",
            )  # fmt: skip
    try:
        yield engine
    finally:
        engine.dispose()


def token(api: Api, username: str, password: str, address: str) -> httpx.Response:
    return api.http.post(
        "/api/auth/token",
        data={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )


def audit(store: Engine, *where: Any) -> list[AuditEvent]:
    with Session(store) as db:
        return list(db.scalars(select(AuditEvent).where(*where).order_by(AuditEvent.id)))


def unlock(store: Engine, model: type[SignInFailures] | type[AddressSignInFailures]) -> None:
    """Move every lock of ``model`` into the past, as if its 15 minutes had gone by."""
    with Session(store) as db, db.begin():
        db.execute(update(model).values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))


def assert_locked(response: httpx.Response, whose: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["errors"] == []
    assert re.match(LOCKED_DETAIL.format(whose=whose), response.json()["detail"]), response.json()["detail"]
    wait = int(response.headers["Retry-After"])
    assert 0 < wait <= LOCK.total_seconds()
    assert response.json()["detail"].endswith(f"(in {wait} s)")
    assert "access_token" not in response.text


def test_failures_lock_a_username_even_for_the_right_password_known_or_not(api: Api, store: Engine) -> None:
    # Every attempt from another address: only the username's count is at work here.
    for i in range(MAX_FAILURES):
        assert token(api, "lock.a", WRONG, f"198.51.100.{i + 1}").status_code == 401
        assert token(api, "nobody.here", WRONG, f"198.51.100.{i + 1}").status_code == 401
    known = token(api, "lock.a", PASSWORD, "198.51.100.50")
    unknown = token(api, "nobody.here", PASSWORD, "198.51.100.51")
    for response in (known, unknown):
        assert_locked(response, "for this username")
    # Nothing in the answer tells the two apart but the clock.
    assert sorted(known.headers) == sorted(unknown.headers)
    assert abs(int(known.headers["Retry-After"]) - int(unknown.headers["Retry-After"])) <= 2

    rows = audit(store, AuditEvent.actor == "lock.a")
    actions = [row.action for row in rows]
    assert actions.count("sign_in_refused") == MAX_FAILURES and actions.count("lock_out") == 1
    assert actions[-1] == "sign_in_locked" and rows[-1].detail is not None and rows[-1].detail["by"] == "username"
    assert rows[-1].remote_addr == "198.51.100.50"
    assert "sign_in" not in actions  # the right password was never checked while locked

    unlock(store, SignInFailures)
    assert token(api, "lock.a", PASSWORD, "198.51.100.60").status_code == 200
    with Session(store) as db:  # a success forgets the username's failures
        assert db.get(SignInFailures, "lock.a") is None


def test_failures_from_one_address_lock_it_for_every_username(api: Api, store: Engine) -> None:
    address = "203.0.113.7"
    for i in range(MAX_FAILURES - 1):
        assert token(api, f"guess{i}", WRONG, address).status_code == 401
    # A success in between does not forgive the address: one account would otherwise reset the count at will.
    assert token(api, "lock.b", PASSWORD, address).status_code == 200
    assert token(api, "guess9", WRONG, address).status_code == 401  # the fifth failure: locked
    assert_locked(token(api, "lock.b", PASSWORD, address), "from this address")
    assert_locked(token(api, "no.such.user", WRONG, address), "from this address")
    assert token(api, "lock.b", PASSWORD, "203.0.113.8").status_code == 200  # other addresses are not affected

    lock = audit(store, AuditEvent.action == "lock_out", AuditEvent.entity == "address")
    assert [row.remote_addr for row in lock] == [address]
    locked = audit(store, AuditEvent.action == "sign_in_locked", AuditEvent.remote_addr == address)
    assert [(row.actor, row.detail) for row in locked] == [
        ("lock.b", {"by": "address", "until": lock[0].detail["until"] if lock[0].detail else None}),
        ("no.such.user", {"by": "address", "until": lock[0].detail["until"] if lock[0].detail else None}),
    ]
    with Session(store) as db:
        row = db.get(AddressSignInFailures, address)
        assert row is not None and row.failures == MAX_FAILURES

    unlock(store, AddressSignInFailures)
    assert token(api, "lock.b", PASSWORD, address).status_code == 200


def test_parallel_attempts_do_not_slip_past_the_threshold(api: Api, store: Engine) -> None:
    def attempt(i: int) -> int:
        with httpx.Client(base_url=api.server.url, timeout=60) as client:
            response = client.post(
                "/api/auth/token",
                json={"username": "lock.c", "password": WRONG},
                headers={"X-Forwarded-For": f"192.0.2.{i + 1}"},
            )
            return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(3 * MAX_FAILURES)))
    assert statuses.count(401) == MAX_FAILURES and statuses.count(429) == 2 * MAX_FAILURES, statuses
    with Session(store) as db:
        row = db.get(SignInFailures, "lock.c")
        assert row is not None and row.failures == MAX_FAILURES and row.locked_until is not None
