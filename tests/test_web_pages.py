"""The web pages over a real socket, without a browser: sessions (cookie flags, CSRF, lock-out, expiry, password
change, sign-out), the same roles and scopes as the API, the audit of every page read, the error pages and headers,
and the message catalogues. The flows in a real browser are tests/test_web_browser.py.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from presa.auth.models import Account, Role, SignInFailures, WebSession
from presa.auth.sessions import MAX_FAILURES
from presa.care.enrolment import EpisodeState
from presa.care.pact import ConsentScope, PactStatus, SignerRole
from presa.care.store import make_engine, session_factory
from presa.care.store.models import AuditEvent, GestoreKind, PlanStatus, ProviderKind
from presa.followup.store import (
    ContactDirection,
    ContactOutcome,
    ExecutionSource,
    ItemKind,
    Priority,
    TransitionKind,
)
from presa.web.access import patients_query
from presa.web.deps import actor_of
from presa.web.pages import i18n
from presa.web.pages.core import TEMPLATES
from presa.web.pages.scope import scoped_patients
from presa.web.pages.timeline import STATUSES
from tests.apiworld import PASSWORD
from tests.conftest import Databases
from tests.webworld import WebWorld, csrf_of, login_token, signed_in, web_server

PAGES_DIR = Path(__file__).resolve().parent.parent / "presa" / "web" / "pages"


@pytest.fixture(scope="module")
def web(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    url = databases.new("sqlite")
    with web_server(url, tmp_path_factory.mktemp("web-runs")) as (world, _):
        yield world


def rows(web: WebWorld, model: type, *where: object) -> list:  # type: ignore[type-arg]
    engine = make_engine(web.database)
    try:
        with session_factory(engine)() as db:
            return list(db.scalars(select(model).where(*where)))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def change(web: WebWorld, statement: object) -> None:
    engine = make_engine(web.database)
    try:
        with engine.begin() as connection:
            connection.execute(statement)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def attempt(web: WebWorld, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=web.url) as client:
        token = login_token(client.get("/login").text)
        return client.post("/login", data={"username": username, "password": password, "login_token": token})


# --- sessions --------------------------------------------------------------------------------------------------------


def test_sign_in_sets_a_session_cookie_httponly_samesite_and_secure_off_loopback(web: WebWorld) -> None:
    with httpx.Client(base_url=web.url) as client:
        assert client.get("/patients").headers["location"] == "/login?next=/patients"
        form = client.get("/login")
        assert "presa_login" in form.cookies
        answer = client.post(
            "/login",
            data={"username": "gp1", "password": PASSWORD, "login_token": login_token(form.text), "next": "/patients"},
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/patients"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("presa_session="))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain HTTP on loopback
        stored = rows(web, WebSession)
        value = cookie.split(";")[0].split("=", 1)[1]
        assert value not in {s.token_hash for s in stored}  # only its SHA-256 is stored
        assert client.get("/patients").status_code == 200
    # Served under another name (behind a proxy), the cookies are Secure: this client sends them by hand.
    with httpx.Client(base_url=web.url, headers={"Host": "presa.example.org"}) as client:
        form = client.get("/login")
        [login_cookie] = [c for c in form.headers.get_list("set-cookie") if c.startswith("presa_login=")]
        assert "Secure" in login_cookie
        answer = client.post(
            "/login",
            data={"username": "gp1", "password": PASSWORD, "login_token": login_token(form.text)},
            headers={"Cookie": login_cookie.split(";")[0]},
        )
        assert answer.status_code == 303
        [session_cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("presa_session=")]
        assert "Secure" in session_cookie and "HttpOnly" in session_cookie


def test_forms_need_the_csrf_token_and_the_same_origin(web: WebWorld) -> None:
    with signed_in(web.url, "gp1") as client:
        page = client.get(f"/patients/{web.patient('A3')}")
        token = csrf_of(page.text)
        bare = client.post("/logout", data={})
        assert bare.status_code == 403 and "<html" in bare.text
        forged = client.post("/logout", data={"csrf_token": "0" * 64})
        assert forged.status_code == 403
        elsewhere = client.post("/logout", data={"csrf_token": token}, headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403
        assert client.get("/patients").status_code == 200  # still signed in
        done = client.post("/logout", data={"csrf_token": token})
        assert done.status_code == 303 and done.headers["location"] == "/login"
        assert client.get("/patients").status_code == 303  # the session is closed
    # The sign-in form has its own token: without it nothing is checked.
    with httpx.Client(base_url=web.url) as client:
        refused = client.post("/login", data={"username": "gp1", "password": PASSWORD, "login_token": "x"})
        assert refused.status_code == 401 and "presa_session" not in refused.cookies


def test_repeated_failures_lock_the_username_even_for_the_right_password(web: WebWorld) -> None:
    for _ in range(MAX_FAILURES):
        assert attempt(web, "nurse1", "not the password at all").status_code == 401
    [failures] = rows(web, SignInFailures, SignInFailures.username == "nurse1")
    assert failures.failures == MAX_FAILURES and failures.locked_until is not None
    locked = attempt(web, "nurse1", PASSWORD)
    assert locked.status_code == 401 and "bloccato" in locked.text
    # An unknown username locks the same way: the lock says nothing about which names exist.
    for _ in range(MAX_FAILURES):
        attempt(web, "nobody-here", "guess guess guess")
    assert "bloccato" in attempt(web, "nobody-here", "guess guess guess").text
    actions = [e.action for e in rows(web, AuditEvent, AuditEvent.actor == "nurse1")]
    assert actions.count("sign_in_refused") == MAX_FAILURES and "lock_out" in actions and "sign_in_locked" in actions
    # Once the lock ends the right password works and the failures are forgotten.
    change(
        web,
        update(SignInFailures)
        .where(SignInFailures.username == "nurse1")
        .values(locked_until=datetime.now(UTC) - timedelta(seconds=1)),
    )
    assert attempt(web, "nurse1", PASSWORD).status_code == 303
    assert rows(web, SignInFailures, SignInFailures.username == "nurse1") == []


def test_an_idle_session_ends(web: WebWorld) -> None:
    with signed_in(web.url, "boss1") as client:
        assert client.get("/gestore").status_code == 200
        change(
            web,
            update(WebSession)
            .where(WebSession.closed_at.is_(None))
            .values(last_seen_at=datetime.now(UTC) - timedelta(minutes=31)),
        )
        assert client.get("/gestore").headers["location"] == "/login?next=/gestore"


def test_changing_the_password_closes_every_session_and_token(web: WebWorld) -> None:
    with signed_in(web.url, "oper9") as other, signed_in(web.url, "oper9") as client:
        form = client.get("/account/password")
        token = csrf_of(form.text)
        weak = client.post(
            "/account/password", data={"csrf_token": token, "old": PASSWORD, "new": "short", "again": "short"}
        )
        assert weak.status_code == 422
        fresh = "a new long passphrase"
        wrong = client.post(
            "/account/password",
            data={"csrf_token": token, "old": "wrong wrong wrong", "new": fresh, "again": fresh},
        )
        assert wrong.status_code == 401
        new = "another long passphrase 42"
        done = client.post("/account/password", data={"csrf_token": token, "old": PASSWORD, "new": new, "again": new})
        assert done.status_code == 303
        assert client.get("/patients").status_code == 200  # this browser got a new session
        assert other.get("/patients").status_code == 303  # the other one is closed
        assert attempt(web, "oper9", new).status_code == 303


# --- roles, scopes and audit -----------------------------------------------------------------------------------------


def test_roles_and_scopes_are_the_apis(web: WebWorld) -> None:
    a1, a2, a3 = (web.patient(r) for r in ("A1", "A2", "A3"))
    with signed_in(web.url, "gp1") as gp:
        listed = gp.get("/patients").text
        assert f"/patients/{a1}" in listed and f"/patients/{a3}" in listed and f"/patients/{a2}" not in listed
        other = gp.get(f"/patients/{a2}")
        assert other.status_code == 404 and "A2" not in other.text
        assert gp.get("/patients/99999").text == other.text.replace(str(a2), "99999")  # same answer as a missing one
        assert gp.get("/ats").status_code == 403 and gp.get("/gestore").status_code == 403
        assert gp.get(f"/pacts/{web.world.other_pact_id}/pdf").status_code == 404
        todo = gp.get("/patients?action=pact").text
        assert f"/patients/{a3}" in todo and f"/patients/{a1}" not in todo
    with signed_in(web.url, "nurse2") as nurse:
        assert nurse.get(f"/patients/{a3}").status_code == 404
        assert nurse.get(f"/patients/{a2}").status_code == 200
        assert nurse.post(f"/pacts/{web.a3_pact}/sign", data={"csrf_token": "x"}).status_code == 403
    with signed_in(web.url, "ana") as analyst:
        assert analyst.get("/patients").status_code == 403
        assert analyst.get(f"/patients/{a1}").status_code == 403
        assert analyst.get("/gestore").status_code == 403
    with signed_in(web.url, "boss1") as boss:
        assert boss.get("/ats").status_code == 403
        assert (
            boss.get("/gestore/network").status_code == 200
            and "Laboratorio Analisi Uno" in boss.get("/gestore/network").text
        )


def test_lists_page_by_patient_id(web: WebWorld) -> None:
    a1, a3 = web.patient("A1"), web.patient("A3")
    assert a1 < a3
    with signed_in(web.url, "gp1") as gp:
        later = gp.get(f"/patients?after={a1}").text
        assert f"/patients/{a3}" in later and f"/patients/{a1}" not in later and "before=" in later
        earlier = gp.get(f"/patients?before={a3}").text
        assert f"/patients/{a1}" in earlier and f"/patients/{a3}" not in earlier
        assert "after=" not in gp.get("/patients").text  # one page only


def test_the_narrowed_scope_finds_exactly_the_scope_for_every_account(web: WebWorld) -> None:
    engine = make_engine(web.database)
    try:
        with session_factory(engine)() as db:
            accounts = list(db.scalars(select(Account)))
            assert {a.role for a in accounts} == set(Role)
            for account in accounts:
                actor = actor_of(db, account, 0, None)
                exact = {p.id for p, _ in db.execute(patients_query(actor))}
                assert {p.id for p, _ in db.execute(scoped_patients(actor))} == exact, account.username
    finally:
        engine.dispose()


def test_every_page_read_of_patient_data_is_audited_with_the_address(web: WebWorld) -> None:
    a1 = web.patient("A1")
    with signed_in(web.url, "gp1") as gp:
        before = len(rows(web, AuditEvent, AuditEvent.actor == "gp1", AuditEvent.patient_id == a1))
        assert gp.get(f"/patients/{a1}").status_code == 200
        assert gp.get(f"/plans/{web.world.plan_id}").status_code == 200
        assert gp.get("/patients").status_code == 200
    found = rows(web, AuditEvent, AuditEvent.actor == "gp1", AuditEvent.patient_id == a1)
    new = [(e.action, e.entity) for e in found[before:]]
    assert new == [("read", "patient"), ("read", "care_plan"), ("list", "patient")]
    assert {e.remote_addr for e in found[before:]} == {"127.0.0.1"}


def test_gestore_funnel_counts_by_gp_and_level(web: WebWorld) -> None:
    with signed_in(web.url, "boss1") as boss:
        page = boss.get("/gestore").text
    # COOP1's GP1 has A1 (pact signed, draft plan) and A3 (gestore chosen) on their list.
    row = re.search(r"<th scope=\"row\">Nome CognomeGP1</th>(.*?)</tr>", page, re.S)
    assert row, page
    assert [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row.group(1))] == [2, 2, 2, 1, 0]


# --- pages, errors, headers, languages -------------------------------------------------------------------------------


def test_error_pages_for_pages_and_json_for_the_api(web: WebWorld) -> None:
    with httpx.Client(base_url=web.url) as client:
        page = client.get("/no/such/page")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        api = client.get("/api/no/such/endpoint")
        assert api.status_code == 404 and api.json()["detail"]
        assert client.get("/api/patients").status_code == 401
        login = client.get("/login")
        for header in ("content-security-policy", "x-frame-options", "x-content-type-options", "server-timing"):
            assert header in login.headers
        assert login.headers["cache-control"] == "no-store"
        assert "content-security-policy" not in client.get("/api/openapi.json").headers


def test_english_is_available_and_italian_is_the_default(web: WebWorld) -> None:
    with httpx.Client(base_url=web.url) as client:
        assert '<html lang="it">' in client.get("/login").text
        switched = client.get("/lang/en?next=/login")
        assert switched.headers["location"] == "/login"
        page = client.get("/login").text
        assert '<html lang="en">' in page and "Sign in" in page
        assert client.get("/lang/en?next=https://evil.example/").headers["location"] == "/"


def test_catalogues_hold_the_same_keys_and_every_key_used() -> None:
    italian, english = i18n.catalogue("it"), i18n.catalogue("en")
    assert set(italian) == set(english)
    used: set[str] = set()
    for file in [*TEMPLATES.glob("*.html"), *PAGES_DIR.glob("*.py")]:
        used |= set(re.findall(r"""\bt\(\s*['"]([a-z0-9_.]+)['"]""", file.read_text(encoding="utf-8")))
    assert used, "no key found: the pattern is wrong"
    prefixes = {k for k in used if k.endswith(".")}
    assert sorted(used - prefixes - set(italian)) == []
    assert all(any(key.startswith(prefix) for key in italian) for prefix in prefixes)
    # The keys built from the domain's values: every value has its words.
    values = {
        "state": EpisodeState,
        "scope": ConsentScope,
        "signer": SignerRole,
        "pact.status": PactStatus,
        "plan.status": PlanStatus,
        "provider": ProviderKind,
        "gestore_kind": GestoreKind,
        "role": Role,
        "kind": ("gp_visit", "specialist_visit", "instrumental", "lab", "education"),
        "source": ("exemptions", "prescriptions", "discharges", "outpatient"),
        "level": ("1", "2", "3", "4", "5"),
        "level.rule": ("1", "2", "3", "4", "5"),
        "action": ("any", "pact", "plan", "renew"),
        "error": ("401.title", "403.title", "404.title", "409.title", "413.title", "422.title", "500.title"),
        "item_kind": ItemKind,
        "next": ItemKind,
        "priority": Priority,
        "contact_outcome": ContactOutcome,
        "direction": ContactDirection,
        "execution": ExecutionSource,
        "transition": TransitionKind,
        "activity_status": STATUSES,
        "entry": ("activity", "booking", "execution", "contact", "transition"),
        "weekday": tuple(str(d) for d in range(7)),
        "timeline": ("move", "book", *(f"booking_{s}" for s in ("cancelled", "rescheduled"))),
    }
    missing = [f"{p}.{v}" for p, members in values.items() for v in members if f"{p}.{v}" not in italian]
    assert missing == []


def test_page_handlers_are_plain_functions_run_in_the_thread_pool() -> None:
    """A coroutine handler runs on the event loop: its database work (and a sign-in's password check) would hold
    up every other request of the worker. Forms are read by an async dependency instead (``PostedForm``)."""
    from fastapi.routing import APIRoute

    from presa.web.pages import account, ats, booking, gestore, me, patients, plans, timeline, worklist

    parts = (account, ats, booking, gestore, me, patients, plans, timeline, worklist)
    handlers = [route for part in parts for route in part.router.routes if isinstance(route, APIRoute)]
    assert len(handlers) > 30
    coroutines = [route.path for route in handlers if inspect.iscoroutinefunction(route.endpoint)]
    assert coroutines == []
