"""Malformed and hostile requests to every endpoint, over a real socket: each answers 4xx with a message, never
5xx, and the store is intact afterwards.

Every field of every body gets each hostile value in turn (wrong types, out-of-range numbers, huge, SQL-ish,
control and broken-Unicode strings, nested structures, impossible dates), and every body is also sent whole as
invalid JSON, the wrong JSON type, the wrong content type, too large, or with an unknown field. So that a hostile
value that happens to be valid text changes nothing, each call aims at a target that is refused after validation:
a patient, pact, plan or batch that does not exist, another ATS or gestore, an unknown invitation code, a wrong
password.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apiworld import PASSWORD
from tests.conftest import Api
from tests.test_api_access import ENDPOINTS, ROLE_ACCOUNTS, Endpoint, body_for, fill

FOLLOWUP_WORLD = True  # every endpoint of the table has its target (tests.conftest.api)

HOSTILE_VALUES: list[Any] = [
    None,
    0,
    -1,
    2**63,
    1.5,
    True,
    "",
    "   ",
    "x" * 100_000,
    "'; DROP TABLE patients; --",
    "1 OR 1=1",
    "a\x00b",
    "\ud800",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "%s%s%n",
    [],
    {},
    ["x"],
    {"$gt": ""},
    "2026-02-30",
    "9999-12-31",
    "2026-01-01T10:00:00",
]
WHOLE_BODIES: list[tuple[str, bytes]] = [
    ("application/json", b""),
    ("application/json", b"{"),
    ("application/json", b"null"),
    ("application/json", b"[]"),
    ("application/json", b'"text"'),
    ("application/json", b"123"),
    ("application/json", b"[" * 5000 + b"]" * 5000),
    ("application/json", b"\xff\xfe\x00"),
    ("application/json", b'{"a": NaN}'),
    ("text/plain", b"hello"),
    ("application/xml", b"<a/>"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n"),
]
# Targets refused after validation, so that a body that does validate changes nothing.
POISON: dict[str, dict[str, Any]] = {
    "POST /api/invitations": {"ats_code": "322"},
    "POST /api/gestori": {"ats_codes": ["322"]},
    "POST /api/providers": {"ats_code": "322"},
    "POST /api/practitioners": {"ats_code": "322"},
}


def bodied() -> Iterator[Endpoint]:
    for endpoint in ENDPOINTS:
        if endpoint.method == "POST":
            yield endpoint


def caller(endpoint: Endpoint) -> str:
    return ROLE_ACCOUNTS[sorted(endpoint.allowed)[0]]


def target(api: Api, endpoint: Endpoint, account: str) -> tuple[str, dict[str, Any]]:
    path = fill(api, endpoint.path, account, missing=True)
    w = api.world
    path = path.replace(f"/gestori/{w.gestori['COOP1']}/", f"/gestori/{w.gestori['COOP2']}/")
    path = path.replace(f"/practitioners/{w.practitioners['GP1']}/", f"/practitioners/{w.practitioners['GP2']}/")
    base = body_for(api, endpoint, account) or {}
    return path, {**base, **POISON.get(endpoint.id, {})}


def send(api: Api, method: str, path: str, account: str, content: bytes, kind: str = "application/json") -> Any:
    headers = {**api.world.headers(account), "Content-Type": kind}
    return api.http.request(method, path, content=content, headers=headers)


def assert_refused(response: Any, what: str) -> None:
    assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:300])
    payload = response.json()
    assert isinstance(payload["detail"], str) and payload["detail"], what
    assert "x" * 1000 not in response.text, "a huge value was echoed back"


@pytest.mark.parametrize("endpoint", list(bodied()), ids=lambda e: e.id)
def test_each_field_refuses_hostile_values(api: Api, endpoint: Endpoint) -> None:
    account = caller(endpoint)
    path, body = target(api, endpoint, account)
    assert_refused(send(api, "POST", path, account, json.dumps(body).encode()), "the poisoned valid body")
    for field in [*body, "unknown_field"]:
        for value in HOSTILE_VALUES:
            content = json.dumps({**body, field: value}).encode()  # ASCII escapes carry the lone surrogate
            assert_refused(send(api, "POST", path, account, content), f"{field}={str(value)[:40]!r}")


@pytest.mark.parametrize("endpoint", list(bodied()), ids=lambda e: e.id)
def test_malformed_bodies_and_content_types_are_refused(api: Api, endpoint: Endpoint) -> None:
    account = caller(endpoint)
    path, body = target(api, endpoint, account)
    for kind, content in WHOLE_BODIES:
        response = send(api, "POST", path, account, content, kind)
        if endpoint.body is None and response.status_code == 404:
            continue  # no body expected: the target decides
        assert_refused(response, f"{kind}: {content[:30]!r}")
    too_large = json.dumps({**body, "pad": "x" * 300_000}).encode()
    response = send(api, "POST", path, account, too_large)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]


def test_hostile_paths_and_queries_are_refused(api: Api) -> None:
    refs = ["0", "-1", "99999999999999999999", "1.5", "%27%20OR%201=1", "ps_zz", "..%2F..%2Fetc", "%00", "x" * 39]
    for account in ("admin1", "analyst", "patient1"):
        for ref in refs:
            for path in (f"/api/patients/{ref}", f"/api/patients/{ref}/pacts", f"/api/patients/{ref}/plans"):
                if account == "analyst" and path.endswith(("pacts", "plans")):
                    continue
                assert_refused(api.http.get(path, headers=api.world.headers(account)), f"{account} {path}")
    for ident in ("0", "-5", "2147483648", "9" * 30, "abc", "1e3"):
        for path in (f"/api/plans/{ident}", f"/api/pacts/{ident}", f"/api/plans/{ident}/calendar.ics"):
            assert_refused(api.http.get(path, headers=api.world.headers("admin1")), path)
        assert_refused(
            api.http.get(f"/api/invitations/{ident}", headers=api.world.headers("analyst")), f"batch {ident}"
        )
    queries = [
        "limit=0",
        "limit=100000",
        "offset=-1",
        "offset=99999999999999999999",
        "level=9",
        "level=abc",
        "state=nonsense",
        "pathology=%25%27%20OR%201%3D1%20--",
        "pathology=" + "a" * 100,
        "gestore_id=99999999999",
        "eligible=maybe",
    ]
    for query in queries:
        assert_refused(api.http.get(f"/api/patients?{query}", headers=api.world.headers("admin1")), query)
    for query in ("since=yesterday", "since=2026-01-01T00:00:00", "limit=5000", "actor=%00", "patient=ps_1"):
        assert_refused(api.http.get(f"/api/audit?{query}", headers=api.world.headers("analyst")), query)
    for query in ("ats=999", "accredited_on=2026-13-01"):
        assert_refused(api.http.get(f"/api/gestori?{query}", headers=api.world.headers("admin1")), query)


def test_sign_in_refuses_malformed_credentials(api: Api) -> None:
    attempts: list[tuple[str, bytes]] = [
        ("application/json", json.dumps({"username": "admin1", "password": "wrong password"}).encode()),
        ("application/json", json.dumps({"username": "admin1"}).encode()),
        ("application/json", json.dumps({"username": 5, "password": PASSWORD}).encode()),
        ("application/json", json.dumps({"username": "adm\u0000in1", "password": PASSWORD}).encode()),
        ("application/json", json.dumps({"username": "admin1", "password": "\ud800"}).encode()),
        ("application/json", json.dumps({"username": "x" * 10_000, "password": PASSWORD}).encode()),
        ("application/json", json.dumps({"username": "admin1", "password": PASSWORD, "role": "x"}).encode()),
        ("application/json", b"{"),
        ("application/json", b"[]"),
        ("application/x-www-form-urlencoded", b"username=admin1&password=nope&grant_type=client_credentials"),
        ("application/x-www-form-urlencoded", b"username=%27%20OR%201%3D1%20--&password=x"),
        ("application/x-www-form-urlencoded", b"username=admin1&password=x&extra=1"),
        ("text/plain", b"admin1:" + PASSWORD.encode()),
    ]
    for kind, content in attempts:
        response = api.http.post("/api/auth/token", content=content, headers={"Content-Type": kind})
        assert_refused(response, content.decode(errors="replace")[:40])
    good = api.http.post("/api/auth/token", data={"username": "admin1", "password": PASSWORD})
    assert good.status_code == 200 and good.json()["token_type"] == "bearer"


def test_the_store_is_intact_after_the_hostile_requests(api: Api) -> None:
    w = api.world
    page = api.http.get("/api/patients", headers=w.headers("admin1")).json()
    assert [p["resident_id"] for p in page["items"]] == ["A1"]
    analyst = api.http.get("/api/patients", headers=w.headers("analyst")).json()
    assert len(analyst["items"]) == 4
    pacts = api.http.get(f"/api/patients/{w.patients['A1']}/pacts", headers=w.headers("admin1")).json()
    assert [p["status"] for p in pacts["pacts"]] == ["signed"] and pacts["processing"]["allowed"]
    gestori = api.http.get("/api/gestori", headers=w.headers("admin1")).json()
    assert sorted(g["code"] for g in gestori) == ["ASST3", "COOP1", "COOP2"]
    providers = api.http.get("/api/providers", headers=w.headers("admin1")).json()
    assert [p["code"] for p in providers] == ["AMB1"]
    timeline = api.http.get(f"/api/patients/{w.patients['A1']}/timeline", headers=w.headers("case1")).json()
    assert [b["id"] for b in timeline["bookings"]] == [w.booking_id] and not timeline["contacts"]
    assert len(timeline["transitions"]) == 1 and all(a["status"] == "open" for a in timeline["alerts"])
