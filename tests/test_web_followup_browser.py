"""The follow-up pages in a real browser (Debian's Chromium driven by Playwright, as tests/test_web_browser.py): a
case manager opens the work list, snoozes one item and closes another, opens the patient's timeline, books an
activity into a slot of a provider's calendar and sees it booked on the timeline; axe-core finds no serious or
critical violation on the work list, the timeline, the booking page and the calendar.

The world is ``tests.webworld`` with ``add_followup`` (A1 in follow-up with COOP1, case manager ``nurse1``).
Screenshots go to ``test-artifacts/web/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from presa.care.store import make_engine, session_factory
from presa.followup.store import Booking, BookingStatus, ItemKind, ItemStatus, WorkItem
from tests.conftest import Databases
from tests.test_web_browser import accessible, new_page, shot, sign_in
from tests.test_web_browser import browser as browser  # the shared Chromium fixture
from tests.webworld import WebWorld, web_server


@pytest.fixture(scope="module")
def site(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    with web_server(databases.new("sqlite"), tmp_path_factory.mktemp("followup-browser"), followup=True) as (
        world,
        _,
    ):
        yield world


def stored_items(site: WebWorld) -> dict[int, WorkItem]:
    engine = make_engine(site.database)
    try:
        with session_factory(engine)() as db:
            return {i.id: i for i in db.scalars(select(WorkItem))}
    finally:
        engine.dispose()


def live_bookings(site: WebWorld, activity_id: str) -> list[Booking]:
    engine = make_engine(site.database)
    try:
        with session_factory(engine)() as db:
            return list(
                db.scalars(
                    select(Booking).where(Booking.activity_id == activity_id, Booking.status == BookingStatus.BOOKED)
                )
            )
    finally:
        engine.dispose()


def test_a_case_manager_works_the_list_and_books_from_the_calendar(browser: Browser, site: WebWorld) -> None:
    w, a1 = site.world, site.patient("A1")
    review = next(i for i in stored_items(site).values() if i.kind is ItemKind.PAI_REVIEW)
    page = new_page(browser, site)
    sign_in(page, "nurse1")

    # The work list, most urgent first: the discharge follow-up leads.
    page.get_by_role("link", name="Lista di lavoro", exact=True).click()
    expect(page.get_by_role("heading", name="Lista di lavoro")).to_be_visible()
    table = page.get_by_role("table", name=re.compile("attività in questa pagina"))
    expect(table.locator("tbody tr").first).to_have_attribute("data-item", str(w.item_id))
    expect(table).to_contain_text("Chiama il paziente dopo la dimissione")
    accessible(page, "worklist")
    shot(page, "10-worklist")

    # Snooze the discharge follow-up with a reason: it leaves the list.
    row = page.locator(f'tr[data-item="{w.item_id}"]')
    row.locator("summary").click()
    row.get_by_label("Motivo del rinvio").fill("Il paziente è ancora dalla figlia, richiamare domani")
    row.get_by_role("button", name="Rinvia").click()
    expect(page.get_by_role("status")).to_contain_text("Attività rinviata al")
    expect(page.locator(f'tr[data-item="{w.item_id}"]')).to_have_count(0)

    # Assign the PAI review: the person is chosen once, above the list; the row's button sends it for that row.
    nu1 = w.practitioners["NU1"]
    page.get_by_label("Assegna a", exact=True).select_option(str(nu1))
    row = page.locator(f'tr[data-item="{review.id}"]')
    row.locator("summary").click()
    row.get_by_role("button", name=re.compile("Assegna alla persona scelta sopra")).click()
    expect(page.get_by_role("status")).to_have_text("Attività assegnata.")
    assert stored_items(site)[review.id].owner_id == nu1

    # Close the PAI review with its outcome.
    row = page.locator(f'tr[data-item="{review.id}"]')
    row.locator("summary").click()
    row.get_by_label("Esito", exact=True).fill("PAI rivisto con il clinical manager")
    row.get_by_role("button", name="Chiudi").click()
    expect(page.get_by_role("status")).to_have_text("Attività chiusa.")
    expect(page.locator(f'tr[data-item="{review.id}"]')).to_have_count(0)
    stored = stored_items(site)
    assert stored[w.item_id].status is ItemStatus.SNOOZED and stored[w.item_id].snooze_reason
    assert stored[review.id].status is ItemStatus.CLOSED
    assert stored[review.id].outcome == "PAI rivisto con il clinical manager"

    # The patient's timeline, from the list.
    page.get_by_role("link", name="A1", exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"/patients/{a1}/timeline$"))
    expect(page.get_by_role("heading", name="Follow-up · A1")).to_be_visible()
    history = page.get_by_role("table", name=re.compile("in ordine di data"))
    expect(history).to_contain_text("Dimissione dall'ospedale")
    expect(history.locator("tr.today")).to_have_count(1)
    accessible(page, "timeline")
    shot(page, "11-timeline")

    # Book the HbA1c: its booking page, then the provider's week, then a free slot in the window.
    page.goto(f"/plans/{w.plan_id}/activities/{w.activity_id}/book")
    expect(page.get_by_role("heading", name=re.compile("^Prenota · "))).to_be_visible()
    accessible(page, "book-activity")
    page.get_by_role("link", name="Poliambulatorio AMB1").click()
    expect(page.get_by_role("heading", name="Agenda · Poliambulatorio AMB1")).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("^Prenotazione di: "))).to_be_visible()
    accessible(page, "calendar")
    shot(page, "12-calendar")
    first = page.locator(".slots form button", has_text="Prenota").first
    slot_id = first.locator("xpath=ancestor::li").get_attribute("data-slot")
    first.click()
    expect(page).to_have_url(re.compile(rf"/patients/{a1}/timeline$"))
    expect(page.get_by_role("status")).to_have_text("Attività prenotata.")
    expect(page.get_by_role("table", name=re.compile("in ordine di data"))).to_contain_text("Prenotazione:")
    [booking] = live_bookings(site, w.activity_id)
    assert str(booking.slot_id) == slot_id
    shot(page, "13-timeline-booked")
    page.context.close()
