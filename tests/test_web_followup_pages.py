"""The follow-up pages over a real socket, without a browser: the work list (filters, keyset pages, assign, snooze,
close, calls and call-backs at the desk's hours), the patient's timeline, the providers' calendars and booking (one
activity, rescheduled, cancelled; a whole plan-year), with the roles and scopes of the rest of the pages, CSRF on
every form, the audit of every read, and a revoked pact that hides the patient's items and stops every write.

The world is ``tests.webworld`` with ``add_followup``: A1 (COOP1, GP1, case manager NU1 = ``nurse1``) has an active
plan, an ECG booked at clinic AMB1, refreshed work items and a discharge posted yesterday (``world.item_id``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from presa.care.store.models import AuditEvent
from presa.followup.config import default_config
from presa.followup.store import Booking, BookingStatus, Contact, ItemKind, ItemStatus, WorkItem
from presa.web.pages.i18n import ITALY
from tests.conftest import Databases
from tests.test_web_pages import rows
from tests.webworld import WebWorld, csrf_of, signed_in, web_server


@pytest.fixture(scope="module")
def web(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    with web_server(databases.new("sqlite"), tmp_path_factory.mktemp("followup-pages"), followup=True) as (world, _):
        yield world


def items_shown(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-item="(\d+)">', html)]


def post(client: httpx.Client, path: str, data: dict[str, Any], *, from_page: str = "/work-list") -> httpx.Response:
    token = csrf_of(client.get(from_page).text)
    return client.post(path, data={"csrf_token": token, **data})


def flash_of(client: httpx.Client, response: httpx.Response) -> str:
    assert response.status_code == 303, response.text[:800]
    page = client.get(response.headers["location"]).text
    found = re.search(r'<div class="flash[^"]*" role="[a-z]+">(.*?)</div>', page, re.S)
    assert found, page[:2000]
    return found.group(1)


def audit_of(web: WebWorld, actor: str) -> list[tuple[str, str]]:
    return [(e.action, e.entity) for e in rows(web, AuditEvent, AuditEvent.actor == actor)]


# --- the work list -------------------------------------------------------------------------------------------------


def test_the_work_list_shows_the_items_most_urgent_first_with_their_next_action(web: WebWorld) -> None:
    a1 = web.patient("A1")
    wanted = sorted(
        rows(web, WorkItem, WorkItem.status == ItemStatus.OPEN, WorkItem.gestore_id == web.world.gestori["COOP1"]),
        key=lambda i: (-i.priority_score, i.due_on, i.id),
    )
    assert wanted
    with signed_in(web.url, "nurse1") as nurse:
        page = nurse.get("/work-list")
        assert page.status_code == 200
        assert items_shown(page.text) == [i.id for i in wanted]
        assert "Chiama il paziente dopo la dimissione" in page.text and "dopo la dimissione" in page.text
        assert f'href="/patients/{a1}/timeline#call"' in page.text
        unbooked = next(i for i in wanted if i.kind is ItemKind.NOT_BOOKED)
        assert f'href="/plans/{unbooked.plan_id}/activities/{unbooked.activity_id}/book"' in page.text
        # Filters: kind, level, GP, pathology, priority, owner, due dates.
        assert items_shown(nurse.get("/work-list?kind=post_discharge").text) == [web.world.item_id]
        both = nurse.get("/work-list?kind=post_discharge&kind=pai_review").text
        assert len(items_shown(both)) == 2
        assert items_shown(nurse.get("/work-list?level=1").text) == []
        assert items_shown(nurse.get("/work-list?gp=GP2").text) == []
        assert len(items_shown(nurse.get("/work-list?gp=GP1&pathology=diabetes_type2").text)) == len(wanted)
        assert items_shown(nurse.get("/work-list?pathology=copd").text) == []
        mine = items_shown(nurse.get("/work-list?owner=mine").text)
        assert len(mine) == len(wanted) - 1  # the PAI review is the clinical manager's
        assert items_shown(nurse.get(f"/work-list?owner={web.world.practitioners['GP1']}").text) != []
        bands = ("routine", "urgent", "asap")
        assert sum(len(items_shown(nurse.get(f"/work-list?priority={p}").text)) for p in bands) == len(wanted)
        today = datetime.now(ITALY).date()
        early = items_shown(nurse.get(f"/work-list?due_until={today - timedelta(days=1)}").text)
        late = items_shown(nurse.get(f"/work-list?due_from={today}").text)
        assert sorted(early + late) == sorted(i.id for i in wanted)
        # English, same rows.
        nurse.get("/lang/en?next=/work-list")
        assert "Call the patient after the discharge" in nurse.get("/work-list").text


def test_the_work_list_pages_by_keyset(web: WebWorld) -> None:
    with signed_in(web.url, "nurse1") as nurse:
        everything = items_shown(nurse.get("/work-list").text)
        seen: list[int] = []
        path: str | None = "/work-list?limit=1&kind=not_booked&kind=post_discharge&kind=pai_review&kind=due_soon"
        pages = 0
        while path is not None:
            page = nurse.get(path.replace("&amp;", "&")).text
            shown = items_shown(page)
            assert len(shown) <= 1
            seen += shown
            found = re.search(r'<a href="(/work-list\?[^"]*after=[^"]+)">', page)
            path = found.group(1) if found else None
            pages += 1
            assert pages < 100
        assert seen == [i for i in everything if i in seen] and len(seen) == pages
        assert len(seen) >= 3
        assert nurse.get("/work-list?after=bm90LWEtY3Vyc29y").status_code == 422


def test_roles_and_gestori_see_only_their_items(web: WebWorld) -> None:
    a1 = web.patient("A1")
    with signed_in(web.url, "nurse2") as other:
        assert items_shown(other.get("/work-list").text) == []
        assert other.get(f"/patients/{a1}/timeline").status_code == 404
        closing = post(other, f"/work-items/{web.world.item_id}/close", {"outcome": "not mine"})
        assert closing.status_code == 404
        assert other.get(f"/providers/{web.world.provider_id}/calendar").status_code == 404
        assert other.get(f"/plans/{web.world.plan_id}/activities/{web.world.activity_id}/book").status_code == 404
    with signed_in(web.url, "ana") as analyst:
        assert analyst.get("/work-list").status_code == 403
        assert analyst.get(f"/patients/{a1}/timeline").status_code == 403
        assert analyst.get("/calendar").status_code == 403
    with signed_in(web.url, "gp1") as gp:  # a clinician reads the list of the patients they follow, books nothing
        assert web.world.item_id in items_shown(gp.get("/work-list").text)
        assert gp.get(f"/patients/{a1}/timeline").status_code == 200
        assert gp.get(f"/plans/{web.world.plan_id}/activities/{web.world.activity_id}/book").status_code == 403
        booking = post(gp, f"/plans/{web.world.plan_id}/bookings", {})
        assert booking.status_code == 403
    with signed_in(web.url, "boss1") as boss:
        assert web.world.item_id in items_shown(boss.get("/work-list").text)
    [item] = rows(web, WorkItem, WorkItem.id == web.world.item_id)
    assert item.status is ItemStatus.OPEN


def test_assign_snooze_and_close_need_the_csrf_token_and_are_audited(web: WebWorld) -> None:
    review = next(i for i in rows(web, WorkItem, WorkItem.kind == ItemKind.PAI_REVIEW))
    with signed_in(web.url, "nurse1") as nurse:
        bare = nurse.post(f"/work-items/{review.id}/close", data={"outcome": "done"})
        assert bare.status_code == 403
        forged = nurse.post(f"/work-items/{review.id}/close", data={"outcome": "done", "csrf_token": "0" * 64})
        assert forged.status_code == 403
        nu1 = web.world.practitioners["NU1"]
        back = "/work-list?kind=pai_review"
        assigned = post(nurse, f"/work-items/{review.id}/assign", {"owner_id": nu1, "next": back})
        assert assigned.headers["location"] == "/work-list?kind=pai_review"
        assert flash_of(nurse, assigned) == "Attività assegnata."
        until = (datetime.now(ITALY) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
        empty = post(nurse, f"/work-items/{review.id}/snooze", {"until": until, "reason": ""})
        assert flash_of(nurse, empty) == "Indica il motivo."
        snoozed = post(nurse, f"/work-items/{review.id}/snooze", {"until": until, "reason": "In ferie il medico"})
        assert "Attività rinviata al" in flash_of(nurse, snoozed)
        assert review.id not in items_shown(nurse.get("/work-list").text)
        shown = nurse.get("/work-list?snoozed=true").text
        assert review.id in items_shown(shown) and "In ferie il medico" in shown
        closed = post(nurse, f"/work-items/{review.id}/close", {"outcome": "PAI rivisto con il medico"})
        assert flash_of(nurse, closed) == "Attività chiusa."
        again = post(nurse, f"/work-items/{review.id}/close", {"outcome": "twice"})
        assert "Operazione rifiutata" in flash_of(nurse, again)
    [item] = rows(web, WorkItem, WorkItem.id == review.id)
    assert item.status is ItemStatus.CLOSED and item.outcome == "PAI rivisto con il medico" and item.owner_id == nu1
    trail = audit_of(web, "nurse1")
    assert {("assign", "work_item"), ("snooze", "work_item"), ("close", "work_item")} <= set(trail)
    assert ("list", "work_item") in trail


def test_a_call_back_falls_in_the_desk_hours(web: WebWorld) -> None:
    a1 = web.patient("A1")
    desk = default_config().desk.hours()
    late = datetime.combine(datetime.now(ITALY).date() + timedelta(days=2), desk.closes, ITALY) + timedelta(hours=1)
    with signed_in(web.url, "nurse1") as nurse:
        missing = post(nurse, f"/patients/{a1}/contacts", {"direction": "outbound", "outcome": "call_back"})
        assert flash_of(nurse, missing) == "Per richiamare indica una data e ora futura, entro un anno."
        logged = post(
            nurse,
            f"/patients/{a1}/contacts",
            {"direction": "outbound", "outcome": "call_back", "call_back_at": late.strftime("%Y-%m-%dT%H:%M"),
             "note": "preferisce la mattina", "item_id": web.world.item_id},
        )  # fmt: skip
        opening = desk.next_open(late)
        assert opening.astimezone(ITALY).time() == desk.opens and opening > late
        assert flash_of(nurse, logged) == (
            f"Chiamata registrata; la richiamata è in lista dal {opening.astimezone(ITALY):%d/%m/%Y %H:%M}."
        )
        [contact] = rows(web, Contact, Contact.note == "preferisce la mattina")
        [callback] = rows(web, WorkItem, WorkItem.id == contact.call_back_item_id)
        assert callback.kind is ItemKind.CALL_BACK and callback.due_at == opening
        assert callback.id not in items_shown(nurse.get("/work-list").text)  # not before its time
        assert contact.item_id == web.world.item_id
        timeline = nurse.get(f"/patients/{a1}/timeline").text
        assert "da richiamare" in timeline and "preferisce la mattina" in timeline
    assert ("contact", "contact") in audit_of(web, "nurse1")


# --- the timeline --------------------------------------------------------------------------------------------------


def test_the_timeline_is_linked_from_the_patient_and_audited(web: WebWorld) -> None:
    a1 = web.patient("A1")
    with signed_in(web.url, "nurse1") as nurse:
        assert f'href="/patients/{a1}/timeline"' in nurse.get(f"/patients/{a1}").text
        page = nurse.get(f"/patients/{a1}/timeline")
        assert page.status_code == 200
        text = page.text
        assert "Dimissione dall&#39;ospedale" in text and "registrata da un operatore" in text
        assert "prenotata" in text and "Poliambulatorio AMB1" in text
        assert "Segnalazioni aperte" in text and "Chiama il paziente dopo la dimissione" in text
        assert f'href="/plans/{web.world.plan_id}/bookings"' in text
        kinds = re.findall(r'<tr data-kind="([a-z]+)">', text)
        assert {"activity", "booking", "transition"} <= set(kinds)
        assert '<tr class="today">' in text
    trail = audit_of(web, "nurse1")
    assert ("read", "timeline") in trail


# --- booking -------------------------------------------------------------------------------------------------------


def test_book_move_and_cancel_an_activity_from_the_calendar(web: WebWorld) -> None:
    w = web.world
    page_path = f"/plans/{w.plan_id}/activities/{w.activity_id}/book"
    with signed_in(web.url, "nurse1") as nurse:
        page = nurse.get(page_path)
        assert page.status_code == 200 and f'data-slot="{w.slot_id}"' in page.text
        calendars = nurse.get("/calendar").text
        assert f"/providers/{w.provider_id}/calendar" in calendars and "Poliambulatorio AMB1" in calendars
        week = re.search(rf'href="(/providers/{w.provider_id}/calendar\?week=[^"]+)"', page.text)
        assert week, page.text[:3000]
        calendar = nurse.get(week.group(1).replace("&amp;", "&")).text
        assert "libero" in calendar and f"/plans/{w.plan_id}/activities/{w.activity_id}/booking" in calendar
        bare = nurse.post(f"/plans/{w.plan_id}/activities/{w.activity_id}/booking", data={"slot_id": w.slot_id})
        assert bare.status_code == 403
        booked = post(nurse, f"/plans/{w.plan_id}/activities/{w.activity_id}/booking", {"slot_id": w.slot_id},
                      from_page=page_path)  # fmt: skip
        assert booked.headers["location"] == f"/patients/{web.patient('A1')}/timeline"
        assert flash_of(nurse, booked) == "Attività prenotata."
        [live] = rows(web, Booking, Booking.activity_id == w.activity_id, Booking.status == BookingStatus.BOOKED)
        assert live.slot_id == w.slot_id
        taken = post(nurse, f"/plans/{w.plan_id}/activities/{w.activity_id}/booking", {"slot_id": w.slot_id},
                     from_page=page_path)  # fmt: skip
        assert "Operazione rifiutata" in flash_of(nurse, taken)
        # The booking page now moves it: another free slot, with a reason.
        moving = nurse.get(page_path).text
        other = next(int(s) for s in re.findall(r'<tr data-slot="(\d+)">', moving) if int(s) != w.slot_id)
        no_reason = post(nurse, f"/bookings/{live.id}/reschedule", {"slot_id": other, "reason": ""},
                         from_page=page_path)  # fmt: skip
        assert flash_of(nurse, no_reason) == "Indica il motivo."
        moved = post(nurse, f"/bookings/{live.id}/reschedule", {"slot_id": other, "reason": "Il paziente lavora"},
                     from_page=page_path)  # fmt: skip
        assert flash_of(nurse, moved) == "Prenotazione spostata."
        [new] = rows(web, Booking, Booking.activity_id == w.activity_id, Booking.status == BookingStatus.BOOKED)
        assert new.slot_id == other and new.replaces_id == live.id
        week_of_slot = nurse.get(week.group(1).replace("&amp;", "&")).text
        assert "occupato" in week_of_slot
        cancelled = post(nurse, f"/bookings/{new.id}/cancel", {"reason": "Eseguito altrove"}, from_page=page_path)
        assert flash_of(nurse, cancelled) == "Prenotazione annullata."
        timeline = nurse.get(f"/patients/{web.patient('A1')}/timeline").text
        assert "Prenotazione spostata" in timeline and "Prenotazione annullata" in timeline
    assert not rows(web, Booking, Booking.activity_id == w.activity_id, Booking.status == BookingStatus.BOOKED)
    trail = audit_of(web, "nurse1")
    assert {("read_slots", "plan_activity"), ("book", "booking"), ("cancelled", "booking")} <= set(trail)


def test_book_the_whole_year_after_seeing_what_has_no_slot(web: WebWorld) -> None:
    w = web.world
    with signed_in(web.url, "nurse1") as nurse:
        preview = nurse.get(f"/plans/{w.plan_id}/bookings")
        assert preview.status_code == 200
        text = preview.text
        assert text.index("Senza posto nella finestra") < text.index("Posti proposti")
        proposed = re.search(r"Prenota le (\d+) attività", text)
        assert proposed, text[:3000]
        before = len(rows(web, Booking, Booking.status == BookingStatus.BOOKED))
        done = post(nurse, f"/plans/{w.plan_id}/bookings", {}, from_page=f"/plans/{w.plan_id}/bookings")
        message = flash_of(nurse, done)
        assert message.startswith(f"Prenotate {proposed.group(1)} attività")
    after = len(rows(web, Booking, Booking.status == BookingStatus.BOOKED))
    assert after - before == int(proposed.group(1)) > 0
    assert ("preview_booking", "care_plan") in audit_of(web, "nurse1")


# --- consent -------------------------------------------------------------------------------------------------------


def test_a_revoked_pact_hides_the_items_and_stops_every_write(web: WebWorld) -> None:
    a1, w = web.patient("A1"), web.world
    with signed_in(web.url, "nurse1") as nurse:
        assert items_shown(nurse.get("/work-list").text)
        revoked = post(nurse, f"/pacts/{w.pact_id}/revoke", {"reason": "Il paziente ritira il consenso"},
                       from_page=f"/patients/{a1}")  # fmt: skip
        assert revoked.status_code == 303
        assert items_shown(nurse.get("/work-list").text) == []
        timeline = nurse.get(f"/patients/{a1}/timeline")
        assert timeline.status_code == 200 and "Il piano non può essere trattato" in timeline.text
        assert "Segnalazioni aperte" in timeline.text and "Nessuna segnalazione aperta." in timeline.text
        assert "Registra la chiamata" not in timeline.text
        assert nurse.get(f"/plans/{w.plan_id}/activities/{w.activity_id}/book").status_code == 409
        assert nurse.get(f"/plans/{w.plan_id}/bookings").status_code == 409
        closing = post(nurse, f"/work-items/{w.item_id}/close", {"outcome": "x"}, from_page=f"/patients/{a1}")
        assert "Operazione rifiutata" in flash_of(nurse, closing)
    [item] = rows(web, WorkItem, WorkItem.id == w.item_id)
    assert item.status is not ItemStatus.CLOSED
