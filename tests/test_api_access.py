"""Every endpoint, over a real socket, with each wrong role (403) and with the right role of the wrong gestore,
GP, patient or ATS (404, the same answer as for something that does not exist); nothing of the patient leaks.

The expected roles are written out here, apart from ``presa.web.access.POLICY``, so the policy is checked
against a second statement of it rather than against itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Select, select
from sqlalchemy.exc import StatementError

from presa.auth.models import Account
from presa.care.store import make_engine, session_factory
from presa.care.store.models import Patient
from presa.web.access import patients_query, visibility, visible
from presa.web.deps import actor_of
from tests.conftest import Api

ROLE_ACCOUNTS = {  # one account per role, each within A1's scope
    "ats_analyst": "analyst",
    "gestore_admin": "admin1",
    "clinician": "clin1",
    "case_manager": "case1",
    "operator": "oper1",
    "patient": "patient1",
}
OUT_OF_SCOPE = {  # the same roles, outside A1's scope: another ATS, gestore, GP or patient
    "ats_analyst": ["analyst322"],
    "gestore_admin": ["admin2"],
    "clinician": ["clin2", "clin1b"],
    "case_manager": ["case2"],
    "operator": ["oper2"],
    "patient": ["patient2"],
}
ALL = frozenset(ROLE_ACCOUNTS)
STAFF = frozenset({"gestore_admin", "clinician", "case_manager", "operator"})
SERVICE_CENTRE = frozenset({"gestore_admin", "case_manager", "operator"})
ADMIN = frozenset({"gestore_admin"})
TODAY = date.today().isoformat()
FOLLOWUP_WORLD = True  # tests.conftest.api: A1 also has an active plan, a booking, work items, a clinic


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    allowed: frozenset[str]
    body: dict[str, Any] | None = None
    scoped: bool = True
    """True when the right role outside the scope must get 404 (patients and what hangs from them)."""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("GET", "/api/me", ALL, scoped=False),
    Endpoint("GET", "/api/patients", ALL, scoped=False),
    Endpoint("GET", "/api/patients/{patient}", ALL),
    Endpoint("POST", "/api/patients/{patient}/transitions", STAFF, {"to_state": "withdrawn", "reason": "test"}),
    Endpoint("POST", "/api/patients/{patient}/gestore", frozenset({"patient"}), {"gestore_id": "{coop1:int}"}),
    Endpoint(
        "POST",
        "/api/enrolments",
        frozenset({"gestore_admin", "operator"}),
        {"invitation_code": "1-AAAAAAAA", "birth_date": "1950-01-01"},
        scoped=False,
    ),
    Endpoint(
        "POST",
        "/api/patients/{patient}/clinical-manager",
        frozenset({"gestore_admin"}),
        {"practitioner_id": "{gp1:int}"},
    ),
    Endpoint("GET", "/api/invitations", frozenset({"ats_analyst"}), scoped=False),
    Endpoint("POST", "/api/invitations", frozenset({"ats_analyst"}), {"ats_code": "321", "limit": 1}, scoped=False),
    Endpoint("GET", "/api/invitations/{batch}", frozenset({"ats_analyst"})),
    Endpoint("GET", "/api/invitations/{batch}/letters.pdf", frozenset({"ats_analyst"})),
    Endpoint("GET", "/api/patients/{patient}/invitation-letter.pdf", frozenset({"ats_analyst", "patient"})),
    Endpoint("POST", "/api/patients/{patient}/pacts", STAFF, {"scopes": ["care"]}),
    Endpoint("GET", "/api/patients/{patient}/pacts", STAFF | {"patient"}),
    Endpoint("GET", "/api/pacts/{pact}", STAFF | {"patient"}),
    Endpoint(
        "POST",
        "/api/pacts/{pact}/signatures",
        STAFF | {"patient"},
        {"role": "patient", "signer": "Anna", "signed_at": "{now}"},
    ),
    Endpoint("POST", "/api/pacts/{pact}/revoke", STAFF | {"patient"}, {"reason": "test"}),
    Endpoint("GET", "/api/pacts/{pact}/pdf", STAFF | {"patient"}),
    Endpoint("POST", "/api/patients/{patient}/plans/preview", frozenset({"clinician"}), {"start": TODAY}),
    Endpoint("POST", "/api/patients/{patient}/plans", frozenset({"clinician"}), {"start": TODAY}),
    Endpoint("GET", "/api/patients/{patient}/plans", STAFF | {"patient"}),
    Endpoint("GET", "/api/plans/{plan}", STAFF | {"patient"}),
    Endpoint("GET", "/api/plans/{plan}/versions", STAFF | {"patient"}),
    Endpoint("GET", "/api/plans/{plan}/offered", frozenset({"clinician"})),
    Endpoint(
        "POST",
        "/api/plans/{plan}/changes",
        frozenset({"clinician"}),
        {"action": "drop", "activity_id": "gp_visit-01", "reason": "test"},
    ),
    Endpoint("POST", "/api/plans/{plan}/activate", frozenset({"clinician"})),
    Endpoint("GET", "/api/plans/{plan}/calendar.ics", STAFF | {"patient"}),
    Endpoint("GET", "/api/plans/{plan}/pdf", STAFF | {"patient"}),
    Endpoint("GET", "/api/gestori", ALL, scoped=False),
    Endpoint("GET", "/api/gestori/{coop1}", ALL, scoped=False),
    Endpoint(
        "POST",
        "/api/gestori",
        frozenset({"ats_analyst"}),
        {
            "code": "NEW1",
            "name": "Nuovo gestore",
            "kind": "asst",
            "ats_codes": ["321"],
            "accredited_from": TODAY,
            "capacity": 10,
        },
        scoped=False,
    ),
    Endpoint("GET", "/api/providers", ALL, scoped=False),
    Endpoint(
        "POST",
        "/api/providers",
        frozenset({"ats_analyst", "gestore_admin"}),
        {"code": "LAB-NEW", "name": "Laboratorio", "kind": "laboratory", "ats_code": "321"},
        scoped=False,
    ),
    Endpoint(
        "POST",
        "/api/gestori/{coop1}/network",
        frozenset({"gestore_admin"}),
        {"provider_id": 1, "joined_on": TODAY},
        scoped=False,
    ),
    Endpoint("GET", "/api/practitioners", ALL, scoped=False),
    Endpoint(
        "POST",
        "/api/practitioners",
        frozenset({"gestore_admin"}),
        {"code": "GPNEW", "family_name": "Verdi", "given_name": "Luca", "profession": "gp", "ats_code": "321"},
        scoped=False,
    ),
    Endpoint(
        "POST",
        "/api/gestori/{coop1}/roles",
        frozenset({"gestore_admin"}),
        {"practitioner_id": "{gp1:int}", "role": "case_manager", "start_on": TODAY},
        scoped=False,
    ),
    Endpoint("POST", "/api/practitioners/{gp1}/opt-out", frozenset({"clinician"}), {}, scoped=False),
    Endpoint("GET", "/api/audit", frozenset({"ats_analyst"}), scoped=False),
    # the follow-up
    Endpoint("GET", "/api/work-items", STAFF | {"ats_analyst"}, scoped=False),
    Endpoint("POST", "/api/work-items/{item}/assign", STAFF, {"owner_id": "{nu1:int}"}),
    Endpoint("POST", "/api/work-items/{item}/snooze", STAFF, {"until": "{tomorrow}", "reason": "test"}),
    Endpoint("POST", "/api/work-items/{item}/close", STAFF, {"outcome": "test"}),
    Endpoint("GET", "/api/patients/{patient}/timeline", STAFF | {"patient"}),
    Endpoint("GET", "/api/providers/{provider}/schedules", STAFF, scoped=False),
    Endpoint(
        "POST",
        "/api/providers/{provider}/schedules",
        ADMIN,
        {
            "service_code": "89.52",
            "name": "ECG",
            "slot_minutes": 20,
            "openings": [{"weekday": 0, "starts": "14:00", "ends": "16:00"}],
            "valid_from": TODAY,
        },
        scoped=False,
    ),
    Endpoint("POST", "/api/providers/{provider}/closures", ADMIN, {"day": TODAY, "reason": "test"}, scoped=False),
    Endpoint("GET", "/api/schedules/{schedule}/slots", STAFF, scoped=False),
    Endpoint("POST", "/api/schedules/{schedule}/slots", ADMIN, {"start": TODAY, "end": "{in30}"}, scoped=False),
    Endpoint("GET", "/api/plans/{plan}/activities/{activity}/slots", SERVICE_CENTRE),
    Endpoint("POST", "/api/plans/{plan}/activities/{activity}/booking", SERVICE_CENTRE, {"slot_id": "{slot:int}"}),
    Endpoint("POST", "/api/bookings/{booking}/reschedule", SERVICE_CENTRE, {"slot_id": "{slot:int}", "reason": "t"}),
    Endpoint("POST", "/api/bookings/{booking}/cancel", SERVICE_CENTRE, {"reason": "test"}),
    Endpoint("POST", "/api/plans/{plan}/bookings/preview", SERVICE_CENTRE),
    Endpoint("POST", "/api/plans/{plan}/bookings", SERVICE_CENTRE),
    Endpoint("POST", "/api/plans/{plan}/activities/{activity}/done", STAFF, {"done_on": TODAY, "note": "test"}),
    Endpoint(
        "POST", "/api/patients/{patient}/contacts", SERVICE_CENTRE, {"direction": "outbound", "outcome": "refused"}
    ),
    Endpoint("POST", "/api/patients/{patient}/care-transitions", STAFF, {"kind": "er_visit", "event_on": TODAY}),
]
# Where the right role outside its scope is told 403 rather than 404: ATS, gestore or self that is not theirs.
SCOPE_403 = {
    "POST /api/invitations": {"ats_analyst"},
    "POST /api/gestori": {"ats_analyst"},
    "POST /api/gestori/{coop1}/network": {"gestore_admin"},
    "POST /api/gestori/{coop1}/roles": {"gestore_admin"},
    "POST /api/practitioners/{gp1}/opt-out": {"clinician"},
    "POST /api/providers/{provider}/schedules": {"gestore_admin"},
    "POST /api/providers/{provider}/closures": {"gestore_admin"},
    "POST /api/schedules/{schedule}/slots": {"gestore_admin"},
}


def fill(api: Api, text: str, account: str, *, missing: bool = False) -> str:
    w = api.world
    values = {
        "patient": "ps_00000000000000000000" if missing and account.startswith("analyst") else w.ref(account, "A1"),
        "pact": str(w.pact_id),
        "plan": str(w.plan_id),
        "batch": str(w.batch_321),
        "coop1": str(w.gestori["COOP1"]),
        "gp1": str(w.practitioners["GP1"]),
        "nu1": str(w.practitioners["NU1"]),
        "now": datetime.now(UTC).isoformat(),
        "tomorrow": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "in30": (date.today() + timedelta(days=30)).isoformat(),
        "item": str(w.item_id),
        "booking": str(w.booking_id),
        "provider": str(w.provider_id),
        "schedule": str(w.schedules.get("89.52", 0)),
        "activity": w.activity_id,
        "slot": str(w.slot_id),
    }
    if missing:
        values.update(patient=values["patient"] if account.startswith("analyst") else "999999")
        values.update(pact="999999", plan="999999", batch="999999", item="999999", booking="999999")
        values.update(provider="999999", schedule="999999")
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def body_for(api: Api, endpoint: Endpoint, account: str) -> dict[str, Any] | None:
    if endpoint.body is None:
        return None
    out: dict[str, Any] = {}
    for key, value in endpoint.body.items():
        if isinstance(value, str) and value.endswith(":int}"):
            out[key] = int(fill(api, value.replace(":int}", "}"), account))
        elif isinstance(value, str):
            out[key] = fill(api, value, account)
        else:
            out[key] = value
    return out


def call(api: Api, endpoint: Endpoint, account: str | None, *, missing: bool = False) -> Any:
    headers = api.world.headers(account) if account else {}
    path = fill(api, endpoint.path, account or "", missing=missing)
    return api.http.request(endpoint.method, path, json=body_for(api, endpoint, account or ""), headers=headers)


def assert_nothing_leaked(api: Api, response: Any) -> None:
    """Nothing of A1 in the answer beyond what the request itself carried."""
    w, asked = api.world, str(response.request.url) + response.request.content.decode()
    for secret in (
        w.resident_ids["A1"],
        w.pseudonym("A1"),
        w.birth_dates["A1"].isoformat(),
        f'"id":{w.patients["A1"]}',
    ):
        assert secret in asked or secret not in response.text, secret


def test_the_table_covers_every_operation_of_the_openapi_document(api: Api) -> None:
    document = api.http.get("/api/openapi.json").json()
    operations = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if path != "/api/auth/token"
    }
    normalised = {
        e.id.replace("{patient}", "{ref}")
        .replace("{pact}", "{pact_id}")
        .replace("{plan}", "{plan_id}")
        .replace("{batch}", "{batch_id}")
        .replace("/gestori/{coop1}", "/gestori/{gestore_id}")
        .replace("/practitioners/{gp1}", "/practitioners/{practitioner_id}")
        .replace("{item}", "{item_id}")
        .replace("{booking}", "{booking_id}")
        .replace("{provider}", "{provider_id}")
        .replace("{schedule}", "{schedule_id}")
        .replace("{activity}", "{activity_id}")
        for e in ENDPOINTS
    }
    assert operations == normalised


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_without_a_valid_token_every_endpoint_answers_401(api: Api, endpoint: Endpoint) -> None:
    anonymous = call(api, endpoint, None)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == "Bearer"
    forged = api.http.request(
        endpoint.method,
        fill(api, endpoint.path, "admin1"),
        json=body_for(api, endpoint, "admin1"),
        headers={"Authorization": "Bearer presa_" + "x" * 43},
    )
    assert forged.status_code == 401 and forged.json()["detail"] == "invalid or expired token"
    assert_nothing_leaked(api, anonymous)
    assert_nothing_leaked(api, forged)


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.allowed != ALL], ids=lambda e: e.id)
def test_each_wrong_role_is_refused_with_403(api: Api, endpoint: Endpoint) -> None:
    for role, account in ROLE_ACCOUNTS.items():
        if role in endpoint.allowed:
            continue
        response = call(api, endpoint, account)
        assert response.status_code == 403, (role, response.text)
        assert response.json()["detail"].startswith(f"the {role} role may not ")
        assert_nothing_leaked(api, response)


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.scoped], ids=lambda e: e.id)
def test_the_right_role_outside_its_scope_gets_the_404_of_a_missing_patient(api: Api, endpoint: Endpoint) -> None:
    for role in endpoint.allowed:
        for account in OUT_OF_SCOPE[role]:
            response = call(api, endpoint, account)
            missing = call(api, endpoint, account, missing=True)
            assert response.status_code == missing.status_code == 404, (account, response.text, missing.text)
            ref = fill(api, "{patient}", account)
            shape = response.json()["detail"].replace(ref, "<ref>")
            missing_ref = fill(api, "{patient}", account, missing=True)
            assert shape.split(" ")[:-1] == missing.json()["detail"].replace(missing_ref, "<ref>").split(" ")[:-1]
            assert_nothing_leaked(api, response)


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.id in SCOPE_403], ids=lambda e: e.id)
def test_acting_for_another_ats_gestore_or_gp_is_refused_with_403(api: Api, endpoint: Endpoint) -> None:
    for role in SCOPE_403[endpoint.id]:
        for account in OUT_OF_SCOPE[role][:1]:
            response = call(api, endpoint, account)
            assert response.status_code == 403, (account, response.text)


@pytest.mark.parametrize(
    "endpoint", [e for e in ENDPOINTS if e.method == "GET" and e.path != "/api/audit"], ids=lambda e: e.id
)
def test_the_right_role_within_its_scope_reads(api: Api, endpoint: Endpoint) -> None:
    for role in endpoint.allowed:
        response = call(api, endpoint, ROLE_ACCOUNTS[role])
        assert response.status_code == 200, (role, response.text)


def test_analysts_see_pseudonyms_only(api: Api) -> None:
    w = api.world
    page = api.http.get("/api/patients", headers=w.headers("analyst")).json()
    assert {p["pseudonym"] for p in page["items"]} == {w.pseudonym(r) for r in ("A1", "A2", "A3", "A4")}
    detail = api.http.get(f"/api/patients/{w.pseudonym('A1')}", headers=w.headers("analyst"))
    assert detail.status_code == 200
    text = str(page) + detail.text
    for resident in ("A1", "A2", "A3", "A4"):
        assert w.resident_ids[resident] not in text and w.birth_dates[resident].isoformat() not in text
    assert not {"id", "resident_id", "birth_date"} & set(detail.json())
    assert all(not {"id", "resident_id", "birth_date"} & set(item) for item in page["items"])
    assert all(e["author"] is None and e["reason"] is None for ep in detail.json()["episodes"] for e in ep["events"])
    # An internal id does not work for an analyst, and another ATS's analyst does not see the patient.
    by_id = api.http.get(f"/api/patients/{w.patients['A1']}", headers=w.headers("analyst"))
    assert by_id.status_code == 404
    other = api.http.get("/api/patients", headers=w.headers("analyst322")).json()
    assert [p["pseudonym"] for p in other["items"]] == [w.pseudonym("B1")]


def test_each_account_lists_exactly_its_patients(api: Api) -> None:
    w = api.world
    expected = {
        "admin1": {"A1"},
        "case1": {"A1"},
        "oper1": {"A1"},
        "clin1": {"A1"},
        "clin1b": set(),
        "admin2": {"A2"},
        "clin2": {"A2"},
        "patient1": {"A1"},
        "patient2": {"A2"},
    }
    ids = {v: k for k, v in w.patients.items()}
    for account, residents in expected.items():
        page = api.http.get("/api/patients", headers=w.headers(account)).json()
        assert {ids[p["id"]] for p in page["items"]} == residents, account


def test_the_per_row_scope_of_the_lists_is_exactly_the_scope_for_every_account(api_database: str, api: Api) -> None:
    """``visible`` (what the follow-up lists carry, a probe per row) and ``patients_query`` (the patients pages and
    the API list) are two statements of one scope: they must name the same patients for every account. So must
    ``visibility``'s condition, built once per form and run with each account's values (the API's work list); run
    without them it fails rather than show the patients of the account it was built for."""
    engine = make_engine(api_database)
    try:
        with session_factory(engine)() as db:
            accounts = list(db.scalars(select(Account)))
            assert len({a.role for a in accounts}) == len(ROLE_ACCOUNTS)
            built: dict[str, Select[int]] = {}
            for account in accounts:
                actor = actor_of(db, account, 0, None)
                exact = {p.id for p, _ in db.execute(patients_query(actor))}
                assert set(db.scalars(select(Patient.id).where(visible(actor, Patient.id)))) == exact, account.username
                scope = visibility(actor)
                once = built.setdefault(scope.form, select(Patient.id).where(scope.condition(Patient.id)))
                assert set(db.scalars(once, scope.values)) == exact, account.username
            assert len(built) >= 4
            for statement in built.values():
                with pytest.raises(StatementError, match="A value is required for bind parameter 'scope_"):
                    db.scalars(statement).all()
                db.rollback()
    finally:
        engine.dispose()
