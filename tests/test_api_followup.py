"""The follow-up through the API, over a real socket, on SQLite and PostgreSQL: the case manager's work list
(filters, keyset pages, next actions, scopes, the analyst's pseudonyms), assigning, snoozing and closing items;
booking an activity and a plan-year, rescheduling, cancelling, the provider's calendar; calls, transitions of care
and a manual "done" on the patient's timeline; a revoked pact stops every write with 409 and empties the list.

The world is ``tests.apiworld`` with ``add_followup``: A1 (COOP1, GP1, case manager NU1) has an active plan, an
ECG booked, refreshed work items and a discharge posted yesterday.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from presa.care.calendar import national_holidays
from presa.care.service.common import today_in_italy
from presa.web.api.followup import PseudonymousWorkItemOut, WorkItemOut, WorkListOut
from tests.conftest import Api

FOLLOWUP_WORLD = True
OK = (200, 201)


def caller(api: Api) -> Any:
    def as_(account: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = api.http.request(method, path, headers=api.world.headers(account), **kwargs)
        assert response.status_code in OK, (account, method, path, response.text)
        return response

    return as_


def test_the_case_manager_works_the_list(api: Api) -> None:
    w, http, as_ = api.world, api.http, caller(api)
    a1 = w.patients["A1"]
    items = as_("case1", "GET", "/api/work-items", params={"limit": 500}).json()["items"]
    assert items and {i["patient_id"] for i in items} == {a1}
    order = [(-i["priority_score"], i["due_on"], i["id"]) for i in items]
    assert order == sorted(order)
    follow_up = next(i for i in items if i["id"] == w.item_id)
    assert follow_up["kind"] == "post_discharge" and follow_up["owner_id"] == w.practitioners["NU1"]
    assert follow_up["next_action"] == "call the patient after the discharge"
    assert follow_up["action_path"] == f"/api/patients/{a1}/contacts"
    unbooked = next(i for i in items if i["kind"] == "not_booked")
    assert unbooked["action_path"] == f"/api/plans/{w.plan_id}/activities/{unbooked['activity_id']}/slots"

    # Keyset pages of one item cover the list once, in order.
    seen, cursor = [], None
    while True:
        page = as_("case1", "GET", "/api/work-items", params={"limit": 1} | ({"after": cursor} if cursor else {}))
        seen += [i["id"] for i in page.json()["items"]]
        if (cursor := page.json()["next_cursor"]) is None:
            break
    assert seen == [i["id"] for i in items]

    def count(account: str = "case1", **params: Any) -> int:
        return len(as_(account, "GET", "/api/work-items", params={"limit": 500, **params}).json()["items"])

    total = len(items)
    assert count(kind="post_discharge") == 1 and count(kind=["post_discharge", "pai_review"]) == 2
    assert count(level=2) == total and count(level=1) == 0 and count(gp_id="GP1") == total and count(gp_id="GP2") == 0
    assert count(pathology="diabetes_type2") == total and count(pathology="copd") == 0
    assert count(mine="true") == total - 1  # the PAI review is the clinical manager's
    assert count(owner_id=w.practitioners["GP1"]) == 1 and count(unassigned="true") == 0
    assert sum(count(priority=p) for p in ("routine", "urgent", "asap")) == total
    today = date.today()
    assert count(due_until=(today - timedelta(days=1)).isoformat()) + count(due_from=today.isoformat()) == total
    assert count("clin1") == total and count("clin1b") == 0 and count("case2") == 0 and count("oper1") == total
    other = http.get("/api/work-items", params={"gestore_id": w.gestori["COOP2"]}, headers=w.headers("case1"))
    assert other.status_code == 403

    # The analyst sees the ATS's list under pseudonyms (unanswered invitations too): no id, resident id or free text.
    analyst = as_("analyst", "GET", "/api/work-items", params={"limit": 500}).json()["items"]
    assert sum(i["pseudonym"] == w.pseudonym("A1") for i in analyst) == total
    assert {i["pseudonym"] for i in analyst if i["kind"] == "invited_no_answer"} == {
        w.pseudonym(r) for r in ("A3", "A4")
    }
    assert not {"patient_id", "resident_id", "title", "owner_id"} & set(analyst[0])
    other_ats = as_("analyst322", "GET", "/api/work-items").json()["items"]
    assert [i["pseudonym"] for i in other_ats] == [w.pseudonym("B1")]

    # Assign, snooze (hidden until then, unless asked for), close.
    assigned = as_(
        "oper1", "POST", f"/api/work-items/{unbooked['id']}/assign", json={"owner_id": w.practitioners["NU1"]}
    )
    assert assigned.json()["owner_id"] == w.practitioners["NU1"]
    nobody = http.post(
        f"/api/work-items/{unbooked['id']}/assign",
        json={"owner_id": w.practitioners["NU2"]},
        headers=w.headers("case1"),
    )
    assert nobody.status_code == 409 and "holds no role" in nobody.json()["detail"]
    until = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    snoozed = as_("case1", "POST", f"/api/work-items/{unbooked['id']}/snooze", json={"until": until, "reason": "away"})
    assert snoozed.json()["status"] == "snoozed" and count() == total - 1 and count(include_snoozed="true") == total
    # The list writes its rows without the response models; they read exactly as the models write them.
    listed = as_("case1", "GET", "/api/work-items", params={"limit": 500, "include_snoozed": "true"}).json()
    assert next(i for i in listed["items"] if i["id"] == unbooked["id"]) == snoozed.json()
    assert WorkListOut.model_validate(listed).model_dump(mode="json") == listed
    for item in listed["items"]:
        assert list(item) == list(WorkItemOut.model_fields)
        assert WorkItemOut.model_validate(item).model_dump(mode="json") == item
    for item in analyst:
        assert list(item) == list(PseudonymousWorkItemOut.model_fields)
        assert PseudonymousWorkItemOut.model_validate(item).model_dump(mode="json") == item
    closed = as_("case1", "POST", f"/api/work-items/{unbooked['id']}/close", json={"outcome": "booked by phone"})
    assert closed.json()["status"] == "closed" and count(include_snoozed="true") == total - 1
    again = http.post(f"/api/work-items/{unbooked['id']}/close", json={"outcome": "x"}, headers=w.headers("case1"))
    assert again.status_code == 409 and "is closed" in again.json()["detail"]

    # Every patient shown or changed left an audit row, with the client's address.
    trail = as_("analyst", "GET", "/api/audit", params={"patient": w.pseudonym("A1"), "limit": 1000}).json()
    actions = {(e["actor"], e["action"], e["entity"]) for e in trail}
    for expected in (("case1", "list", "work_item"), ("oper1", "assign", "work_item"), ("case1", "snooze", "work_item"),
                     ("case1", "close", "work_item"), ("analyst", "list", "work_item")):  # fmt: skip
        assert expected in actions, expected


def test_booking_an_activity_and_a_plan_year(api: Api) -> None:
    w, http, as_ = api.world, api.http, caller(api)
    plan = w.plan_id
    slots = as_("oper1", "GET", f"/api/plans/{plan}/activities/{w.activity_id}/slots", params={"limit": 5}).json()
    assert len(slots) == 5 and all(s["service_code"] == "90.27.1" and not s["booked"] for s in slots)
    booked = as_("oper1", "POST", f"/api/plans/{plan}/activities/{w.activity_id}/booking",
                 json={"slot_id": slots[0]["id"]}).json()  # fmt: skip
    assert booked["status"] == "booked" and booked["slot"]["booked"] and booked["slot"]["provider_name"]
    twice = http.post(
        f"/api/plans/{plan}/activities/{w.activity_id}/booking", json={"slot_id": slots[1]["id"]},
        headers=w.headers("oper1"),
    )  # fmt: skip
    assert twice.status_code == 409 and "already booked" in twice.json()["detail"]
    unknown = http.post(
        f"/api/plans/{plan}/activities/no-such/booking", json={"slot_id": slots[1]["id"]}, headers=w.headers("oper1")
    )
    assert unknown.status_code == 404
    moved = as_("case1", "POST", f"/api/bookings/{booked['id']}/reschedule",
                json={"slot_id": slots[1]["id"], "reason": "the patient works that morning"}).json()  # fmt: skip
    assert moved["replaces_id"] == booked["id"] and moved["slot"]["id"] == slots[1]["id"]
    old = http.post(f"/api/bookings/{booked['id']}/cancel", json={"reason": "x"}, headers=w.headers("case1"))
    assert old.status_code == 409 and "rescheduled" in old.json()["detail"]
    cancelled = as_("case1", "POST", f"/api/bookings/{moved['id']}/cancel", json={"reason": "the patient is away"})
    assert cancelled.json()["status"] == "cancelled"

    # The provider's calendar: the slots of a day, booked or free; the ECG booked by the world is there.
    ecg = w.schedules["89.52"]
    first = as_("case1", "GET", f"/api/patients/{w.patients['A1']}/timeline").json()["bookings"][0]
    calendar = as_("case1", "GET", f"/api/schedules/{ecg}/slots", params={"start": first["slot"]["day"]}).json()
    assert [s["id"] for s in calendar if s["booked"]] == [first["slot"]["id"]]
    assert not any("patient" in k for k in calendar[0])
    free = as_("case1", "GET", f"/api/schedules/{ecg}/slots", params={"free": "true"}).json()
    assert not any(s["booked"] for s in free)
    too_long = http.get(f"/api/schedules/{ecg}/slots", params={"end": "2099-01-01"}, headers=w.headers("case1"))
    assert too_long.status_code == 422

    # A plan-year: previewed (nothing stored), then booked; one visit to the clinic a day.
    proposals = as_("oper1", "POST", f"/api/plans/{plan}/bookings/preview").json()
    assert proposals and all(p["activity"]["code"] in ("90.27.1", "89.52") or p["slot"] is None for p in proposals)
    year = as_("oper1", "POST", f"/api/plans/{plan}/bookings").json()
    assert len(year["booked"]) == sum(p["slot"] is not None for p in proposals)
    days = [b["slot"]["day"] for b in year["booked"]]
    assert len(days) == len(set(days))
    assert {a["activity_id"] for a in year["without_slot"]} == {
        p["activity"]["activity_id"] for p in proposals if p["slot"] is None
    }
    timeline = as_("case1", "GET", f"/api/patients/{w.patients['A1']}/timeline").json()
    live = {b["id"] for b in timeline["bookings"] if b["status"] == "booked"}
    assert live == {w.booking_id} | {b["id"] for b in year["booked"]}
    assert {a["booking_id"] for p in timeline["plans"] for a in p["activities"]} - {None} == live

    # The gestore administrator registers a lab, adds it to the network, publishes its schedule and slots.
    italy = today_in_italy()
    schedule = {
        "service_code": "89.52", "name": "ECG pomeriggio", "slot_minutes": 20,
        "openings": [{"weekday": d, "starts": "14:00", "ends": "15:00"} for d in range(7)],
        "valid_from": italy.isoformat(), "publish_until": (italy + timedelta(days=14)).isoformat(),
    }  # fmt: skip
    same = http.post(f"/api/providers/{w.provider_id}/schedules", json=schedule, headers=w.headers("admin1"))
    assert same.status_code == 409  # one schedule per provider and service: AMB1 has its ECG one
    lab = as_("admin1", "POST", "/api/providers", json={"code": "LAB9", "name": "Lab", "kind": "laboratory",
                                                        "services": ["89.52"], "ats_code": "321"}).json()  # fmt: skip
    outside = http.post(f"/api/providers/{lab['id']}/schedules", json=schedule, headers=w.headers("admin1"))
    assert outside.status_code == 403 and "not in the network" in outside.json()["detail"]
    as_("admin1", "POST", f"/api/gestori/{w.gestori['COOP1']}/network",
        json={"provider_id": lab["id"], "joined_on": date.today().isoformat()})  # fmt: skip
    created = as_("admin1", "POST", f"/api/providers/{lab['id']}/schedules", json=schedule).json()
    days = [italy + timedelta(days=d) for d in range(14)]
    holidays = {**national_holidays(italy.year), **national_holidays(italy.year + 1)}
    assert created["published"] == 3 * sum(d not in holidays for d in days)  # 3 slots a day, none on holidays
    schedules = as_("case1", "GET", f"/api/providers/{w.provider_id}/schedules").json()
    assert [s["service_code"] for s in schedules] == ["89.52", "90.27.1"] and schedules[0]["openings"]
    closure = as_("admin1", "POST", f"/api/providers/{w.provider_id}/closures",
                  json={"day": first["slot"]["day"], "reason": "ECG machine serviced"}).json()  # fmt: skip
    assert closure["cancelled_bookings"] >= 1
    after = as_("case1", "GET", f"/api/patients/{w.patients['A1']}/timeline").json()["bookings"]
    assert next(b for b in after if b["id"] == w.booking_id)["status"] == "cancelled"
    month = {"start": date.today().isoformat(), "end": (date.today() + timedelta(days=30)).isoformat()}
    published = as_("admin1", "POST", f"/api/schedules/{ecg}/slots", json=month)
    assert published.json()["published"] >= 0


def test_calls_transitions_done_and_a_revoked_pact(api: Api) -> None:
    w, http, as_ = api.world, api.http, caller(api)
    a1 = w.patients["A1"]
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    asked = {"direction": "outbound", "outcome": "call_back", "call_back_at": later, "note": "after lunch"}
    call = as_("oper1", "POST", f"/api/patients/{a1}/contacts", json=asked)
    assert call.json()["call_back_item_id"] is not None
    missing_time = http.post(f"/api/patients/{a1}/contacts", json={"direction": "inbound", "outcome": "call_back"},
                             headers=w.headers("oper1"))  # fmt: skip
    assert missing_time.status_code == 422
    about = as_("case1", "POST", f"/api/patients/{a1}/contacts",
                json={"direction": "outbound", "outcome": "reached", "item_id": w.item_id}).json()  # fmt: skip
    assert about["item_id"] == w.item_id
    a2_item = http.post(f"/api/patients/{w.patients['A2']}/contacts",
                        json={"direction": "outbound", "outcome": "reached", "item_id": w.item_id},
                        headers=w.headers("case2"))  # fmt: skip
    assert a2_item.status_code == 404

    er_day = (date.today() - timedelta(days=2)).isoformat()
    er = as_("clin1", "POST", f"/api/patients/{a1}/care-transitions", json={"kind": "er_visit", "event_on": er_day})
    assert er.status_code == 201 and er.json()["follow_up"]["kind"] == "post_discharge"
    assert er.json()["review"]["owner_id"] == w.practitioners["GP1"]
    again = as_("case1", "POST", f"/api/patients/{a1}/care-transitions", json={"kind": "er_visit", "event_on": er_day})
    assert again.json()["id"] == er.json()["id"]
    future = http.post(f"/api/patients/{a1}/care-transitions",
                       json={"kind": "er_visit", "event_on": (date.today() + timedelta(days=2)).isoformat()},
                       headers=w.headers("clin1"))  # fmt: skip
    assert future.status_code == 422

    done = as_("clin1", "POST", f"/api/plans/{w.plan_id}/activities/gp_visit-01/done",
               json={"done_on": date.today().isoformat(), "note": "seen in the surgery"}).json()  # fmt: skip
    assert done["source"] == "manual" and done["outcome"] in ("done_on_time", "done_late")

    # The patient reads their own timeline: plan, bookings, calls, transitions; no internal work items.
    own = as_("patient1", "GET", f"/api/patients/{a1}/timeline").json()
    visit = next(a for p in own["plans"] for a in p["activities"] if a["id"] == "gp_visit-01")
    assert visit["outcome"]["note"] == "seen in the surgery" and own["alerts"] == []
    assert [c["outcome"] for c in own["contacts"]] == ["call_back", "reached"]
    assert {t["kind"] for t in own["transitions"]} == {"discharge", "er_visit"}
    staff = as_("case1", "GET", f"/api/patients/{a1}/timeline").json()
    assert call.json()["call_back_item_id"] in {a["id"] for a in staff["alerts"]}

    # A revoked pact: every write answers 409 with the reason, reads go on, the list no longer shows the patient.
    items = as_("case1", "GET", "/api/work-items").json()["items"]
    as_("oper1", "POST", f"/api/pacts/{w.pact_id}/revoke", json={"reason": "the patient withdrew consent"})
    slot = w.slot_id
    for account, path, body in (
        ("case1", f"/api/work-items/{items[0]['id']}/close", {"outcome": "x"}),
        ("case1", f"/api/work-items/{items[0]['id']}/assign", {"owner_id": w.practitioners["NU1"]}),
        ("oper1", f"/api/plans/{w.plan_id}/activities/{w.activity_id}/booking", {"slot_id": slot}),
        ("oper1", f"/api/bookings/{w.booking_id}/cancel", {"reason": "x"}),
        ("oper1", f"/api/plans/{w.plan_id}/bookings/preview", None),
        ("oper1", f"/api/plans/{w.plan_id}/bookings", None),
        ("oper1", f"/api/patients/{a1}/contacts", {"direction": "inbound", "outcome": "reached"}),
        ("clin1", f"/api/patients/{a1}/care-transitions", {"kind": "discharge", "event_on": date.today().isoformat()}),
        ("clin1", f"/api/plans/{w.plan_id}/activities/gp_visit-02/done", {"done_on": date.today().isoformat(),
                                                                           "note": "x"}),
    ):  # fmt: skip
        stopped = http.post(path, json=body, headers=w.headers(account))
        assert stopped.status_code == 409, (path, stopped.text)
        assert "was revoked" in stopped.json()["detail"], path
    slots = http.get(f"/api/plans/{w.plan_id}/activities/{w.activity_id}/slots", headers=w.headers("oper1"))
    assert slots.status_code == 409
    read = as_("case1", "GET", f"/api/patients/{a1}/timeline").json()
    assert read["processing"]["allowed"] is False and "revoked" in read["processing"]["reason"]
    assert as_("case1", "GET", "/api/work-items").json()["items"] == []
