"""The whole presa in carico through the API, over a real socket, on SQLite and PostgreSQL: an ATS prints its
letters, a gestore takes a patient in charge with the letter's code, the pact is drafted and signed, the clinician
previews, generates, personalises and activates the plan, exports it; the patient reads it; a revoked pact stops
all processing with 409; the analyst queries the audit trail, which says who, what, which patient and from where.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pypdf

from tests.conftest import Api

OK = (200, 201, 204)


def pdf_text(content: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_from_letter_to_active_plan_and_revocation(api: Api) -> None:
    w, http = api.world, api.http

    def as_(account: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = http.request(method, path, headers=w.headers(account), **kwargs)
        assert response.status_code in OK, (account, method, path, response.text)
        return response

    # The ATS prints the batch: one PDF, a letter per patient, in Italian, listing the gestori of the area.
    batches = as_("analyst", "GET", "/api/invitations").json()
    assert [b["id"] for b in batches] == [w.batch_321]
    detail = as_("analyst", "GET", f"/api/invitations/{w.batch_321}").json()
    assert {g["code"] for g in detail["gestori"]} == {"COOP1", "COOP2"} and len(detail["invited"]) == 4
    letters = as_("analyst", "GET", f"/api/invitations/{w.batch_321}/letters.pdf")
    assert letters.headers["content-type"] == "application/pdf"
    text = pdf_text(letters.content)
    assert text.count("Oggetto: invito alla presa in carico") == 4
    assert "Gestore COOP1" in text and "Gestore COOP2" in text and "Gestore ASST3" not in text
    assert "coop1@example.org" in text and "Via COOP1 1, Milano" in text
    assert all(w.resident_ids[r] not in text for r in ("A1", "A2", "A3", "A4"))
    codes = re.findall(r"Codice di invito: (\d+-[A-Z2-7]{8})", text)
    assert len(codes) == 4

    # A3's own letter, by pseudonym for the analyst; its code is one of the batch's.
    own = as_("analyst", "GET", f"/api/patients/{w.pseudonym('A3')}/invitation-letter.pdf")
    [a3_code] = re.findall(r"Codice di invito: (\d+-[A-Z2-7]{8})", pdf_text(own.content))
    assert a3_code in codes

    # COOP1's operator takes A3 in charge: a wrong birth date or code is the same 404.
    a3_birth = w.birth_dates["A3"].isoformat()
    wrong = http.post(
        "/api/enrolments",
        json={"invitation_code": a3_code, "birth_date": "1901-01-01"},
        headers=w.headers("oper1"),
    )
    forged = http.post(
        "/api/enrolments",
        json={"invitation_code": a3_code[:-1] + ("A" if a3_code[-1] != "A" else "B"), "birth_date": a3_birth},
        headers=w.headers("oper1"),
    )
    assert wrong.status_code == forged.status_code == 404 and wrong.json() == forged.json()
    taken = as_(
        "oper1",
        "POST",
        "/api/enrolments",
        json={"invitation_code": a3_code, "birth_date": a3_birth, "clinical_manager_id": w.practitioners["GP1"]},
    ).json()
    assert taken["state"] == "gestore_chosen" and taken["gestore_name"] == "Gestore COOP1"
    again = http.post(
        "/api/enrolments", json={"invitation_code": a3_code, "birth_date": a3_birth}, headers=w.headers("admin2")
    )
    assert again.status_code == 409 and "no longer open" in again.json()["detail"]
    a3 = str(w.patients["A3"])
    assert as_("clin1", "GET", f"/api/patients/{a3}").json()["episode"]["state"] == "gestore_chosen"

    # A refused transition names the current state and the allowed ones.
    refused = http.post(
        f"/api/patients/{a3}/transitions", json={"to_state": "pai_active", "reason": "x"}, headers=w.headers("case1")
    )
    assert refused.status_code == 409
    assert "'gestore_chosen'" in refused.json()["detail"] and "allowed states are" in refused.json()["detail"]

    # The pact: drafted, signed by the patient and the clinical manager; the episode moves to pact_signed.
    pact = as_("oper1", "POST", f"/api/patients/{a3}/pacts", json={"scopes": ["care", "reminders_sms"]}).json()
    now = datetime.now(UTC).isoformat()
    for role, signer in (("patient", "Giulia Neri"), ("clinical_manager", "Nome CognomeGP1")):
        signed = as_(
            "case1",
            "POST",
            f"/api/pacts/{pact['id']}/signatures",
            json={"role": role, "signer": signer, "signed_at": now},
        ).json()
    assert signed["status"] == "signed"
    pact_pdf = pdf_text(as_("oper1", "GET", f"/api/pacts/{pact['id']}/pdf").content)
    assert (
        "Patto di cura" in pact_pdf
        and "Giulia Neri" in pact_pdf
        and "Promemoria degli appuntamenti via SMS" in pact_pdf
    )

    # The clinician previews (nothing stored), generates, personalises and activates the plan.
    start = date.today().isoformat()
    preview = as_("clin1", "POST", f"/api/patients/{a3}/plans/preview", json={"start": start}).json()
    assert preview["id"] is None and preview["activities"]
    assert as_("clin1", "GET", f"/api/patients/{a3}/plans").json() == []
    plan = as_("clin1", "POST", f"/api/patients/{a3}/plans", json={"start": start}).json()
    assert [a["id"] for a in plan["activities"]] == [a["id"] for a in preview["activities"]]
    assert set(plan["pathways"]) == {"heart_failure", "hypertension"}
    visit = next(a for a in plan["activities"] if a["kind"] == "gp_visit")
    moved_to = (date.fromisoformat(visit["day"]) + timedelta(days=7)).isoformat()
    hostile_reason = "'; DROP TABLE audit_events; --"
    changed = as_(
        "clin1",
        "POST",
        f"/api/plans/{plan['id']}/changes",
        json={"action": "move", "activity_id": visit["id"], "day": moved_to, "reason": hostile_reason},
    ).json()
    assert changed["version"] == 2 and changed["changes"][0]["reason"] == hostile_reason
    unknown = http.post(
        f"/api/plans/{plan['id']}/changes",
        json={"action": "add", "activity_key": "no_such_activity", "day": start, "reason": "x"},
        headers=w.headers("clin1"),
    )
    assert unknown.status_code == 409 and "the activities offered are" in unknown.json()["detail"]
    active = as_("clin1", "POST", f"/api/plans/{plan['id']}/activate").json()
    assert active["status"] == "active"
    versions = as_("case1", "GET", f"/api/plans/{plan['id']}/versions").json()
    assert [(v["version"], v["action"], v["author"]) for v in versions] == [(1, None, "clin1"), (2, "move", "clin1")]
    assert as_("admin1", "GET", f"/api/patients/{a3}").json()["episode"]["state"] == "pai_active"

    # Exports: iCalendar and the patient's PDF, in Italian, month by month.
    ics = as_("case1", "GET", f"/api/plans/{plan['id']}/calendar.ics")
    assert ics.headers["content-type"].startswith("text/calendar")
    assert ics.text.startswith("BEGIN:VCALENDAR\r\n") and ics.text.count("BEGIN:VEVENT") == len(plan["activities"])
    plan_text = pdf_text(as_("case1", "GET", f"/api/plans/{plan['id']}/pdf").content)
    assert (
        "Il Suo Piano di Assistenza Individuale" in plan_text and "Visita del medico di medicina generale" in plan_text
    )

    # A revoked pact stops all processing, with the reason; reads stay possible.
    revoked = as_(
        "oper1", "POST", f"/api/pacts/{pact['id']}/revoke", json={"reason": "the patient withdrew consent"}
    ).json()
    assert revoked["status"] == "revoked"
    for method, path, body in (
        ("POST", f"/api/plans/{plan['id']}/changes", {"action": "drop", "activity_id": visit["id"], "reason": "x"}),
        ("POST", f"/api/patients/{a3}/plans/preview", {"start": start}),
        ("GET", f"/api/plans/{plan['id']}/calendar.ics", None),
        ("GET", f"/api/plans/{plan['id']}/pdf", None),
    ):
        stopped = http.request(method, path, json=body, headers=w.headers("clin1"))
        assert stopped.status_code == 409, (path, stopped.text)
        assert "was revoked" in stopped.json()["detail"] and "no further processing" in stopped.json()["detail"]
    assert as_("clin1", "GET", f"/api/plans/{plan['id']}").json()["status"] == "active"
    pacts = as_("admin1", "GET", f"/api/patients/{a3}/pacts").json()
    assert pacts["processing"]["allowed"] is False and "revoked" in pacts["processing"]["reason"]

    # The analyst's audit trail: who, what, which patient (pseudonymised), when, from where.
    trail = as_("analyst", "GET", "/api/audit", params={"patient": w.pseudonym("A3"), "limit": 1000}).json()
    actions = [(e["actor"], e["action"], e["entity"]) for e in trail]
    for expected in (
        ("analyst", "print_letter", "invitation"),
        ("oper1", "transition", "episode"),
        ("case1", "sign", "care_pact"),
        ("clin1", "preview", "care_plan"),
        ("clin1", "generate", "care_plan"),
        ("clin1", "personalise_move", "care_plan"),
        ("case1", "export_ical", "care_plan"),
        ("oper1", "revoke", "care_pact"),
        ("clin1", "read", "patient"),
    ):
        assert expected in actions, expected
    assert all(e["patient"] == w.pseudonym("A3") for e in trail)
    assert {e["remote_addr"] for e in trail if e["actor"] != "setup"} == {"127.0.0.1"}
    assert all("reason" not in (e["detail"] or {}) for e in trail)
    assert w.resident_ids["A3"] not in str(trail)


def test_the_patient_reads_their_own_record_plan_and_pact(api: Api) -> None:
    w, http = api.world, api.http
    me = http.get("/api/me", headers=w.headers("patient1")).json()
    assert me["role"] == "patient" and me["patient_id"] == w.patients["A1"]
    record = http.get(f"/api/patients/{w.patients['A1']}", headers=w.headers("patient1")).json()
    assert record["resident_id"] == "A1" and record["processing"]["allowed"]
    strat = record["stratification"]
    assert strat["level"] == 2 and {p["id"] for p in strat["pathologies"]} == {"hypertension", "diabetes_type2"}
    assert [h["level"] for h in strat["history"]] == [2]
    assert [e["to_state"] for e in record["episodes"][0]["events"]] == [
        "eligible",
        "invited",
        "gestore_chosen",
        "pact_signed",
    ]
    plan = http.get(f"/api/plans/{w.plan_id}", headers=w.headers("patient1"))
    assert plan.status_code == 200 and plan.json()["status"] == "draft"
    assert http.get(f"/api/plans/{w.plan_id}/pdf", headers=w.headers("patient1")).status_code == 200
    # A patient signs on the patient's side only.
    clinical = http.post(
        f"/api/pacts/{w.pact_id}/signatures",
        json={"role": "clinical_manager", "signer": "Me", "signed_at": datetime.now(UTC).isoformat()},
        headers=w.headers("patient1"),
    )
    assert clinical.status_code == 403


def test_lists_filter_and_paginate(api: Api) -> None:
    w, http = api.world, api.http
    analyst = w.headers("analyst")
    every = http.get("/api/patients", params={"limit": 2}, headers=analyst).json()
    assert len(every["items"]) == 2 and every["next_offset"] == 2
    rest = http.get("/api/patients", params={"limit": 2, "offset": 2}, headers=analyst).json()
    assert rest["next_offset"] is None
    assert {p["pseudonym"] for p in every["items"] + rest["items"]} == {
        w.pseudonym(r) for r in ("A1", "A2", "A3", "A4")
    }
    copd = http.get("/api/patients", params={"pathology": "copd"}, headers=analyst).json()
    assert [p["pseudonym"] for p in copd["items"]] == [w.pseudonym("A2")]
    level3 = http.get("/api/patients", params=[("level", "3")], headers=analyst).json()
    assert {p["pseudonym"] for p in level3["items"]} == {w.pseudonym("A2"), w.pseudonym("A4")}
    coop2 = http.get("/api/patients", params={"gestore_id": w.gestori["COOP2"]}, headers=analyst).json()
    assert [p["pseudonym"] for p in coop2["items"]] == [w.pseudonym("A2")]
    signed = http.get("/api/patients", params={"state": "pact_signed"}, headers=w.headers("admin1")).json()
    assert [p["resident_id"] for p in signed["items"]] == ["A1"]


def test_sign_in_and_out(api: Api) -> None:
    from tests.apiworld import PASSWORD

    http = api.http
    token = http.post("/api/auth/token", data={"username": "admin1", "password": PASSWORD}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get("/api/me", headers=headers).json()["gestore_name"] == "Gestore COOP1"
    assert http.delete("/api/auth/token", headers=headers).status_code == 204
    assert http.get("/api/me", headers=headers).status_code == 401
    as_json = http.post("/api/auth/token", json={"username": "admin1", "password": PASSWORD})
    assert as_json.status_code == 200
    refused = http.post("/api/auth/token", json={"username": "admin1", "password": "not the password"})
    assert refused.status_code == 401 and refused.json()["detail"] == "wrong username or password"


def test_the_openapi_document_describes_the_api(api: Api) -> None:
    document = api.http.get("/api/openapi.json").json()
    assert document["info"]["title"] == "presa"
    assert "/api/plans/{plan_id}/calendar.ics" in document["paths"]
    assert "OAuth2PasswordBearer" in document["components"]["securitySchemes"]
