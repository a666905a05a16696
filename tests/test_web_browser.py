"""The web application in a real browser: Debian's Chromium driven by Playwright, against the app served by uvicorn
on SQLite and, for the GP's flow, PostgreSQL too.

- a GP signs in, finds a patient, records both signatures of the care pact, previews the PAI, generates it,
  personalises it (move, drop, add, each with a reason), activates it and downloads its calendar;
- a case manager of another gestore cannot open that patient: the 404 page, and nothing of the patient on it;
- the ATS analyst's pages render their charts; the gestore's pages render their tables;
- axe-core (tests/assets/axe.min.js, MPL-2.0) finds no serious or critical violation on the main pages.

Screenshots go to ``test-artifacts/web/``. The browser is ``/usr/bin/chromium`` (``PRESA_CHROMIUM`` to change it),
never one downloaded by Playwright; ``./task test`` installs Debian's ``chromium`` when it is missing. No browser
means failure, never a skip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.apiworld import PASSWORD
from tests.conftest import Databases
from tests.webworld import WebWorld, web_server

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "web"
AXE = (Path(__file__).resolve().parent / "assets" / "axe.min.js").read_text(encoding="utf-8")
CHROMIUM = os.environ.get("PRESA_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-quic",
    "--no-first-run",
    "--mute-audio",
]
SERIOUS = ("serious", "critical")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    args = ARGS + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    playwright: Playwright | None = None
    try:
        playwright = sync_playwright().start()
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True, timeout=60_000)
    except Exception as exc:
        if playwright is not None:
            playwright.stop()
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM} (Debian's 'chromium'; ./task test installs it): {exc}",
            pytrace=False,
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield launched
    finally:
        launched.close()
        playwright.stop()


@pytest.fixture(scope="module")
def sqlite_site(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    with web_server(databases.new("sqlite"), tmp_path_factory.mktemp("browser-runs")) as (world, _):
        yield world


@pytest.fixture(scope="module")
def postgresql_site(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    url = databases.new("postgresql")
    try:
        with web_server(url, tmp_path_factory.mktemp("browser-runs-pg")) as (world, _):
            yield world
    finally:
        databases.drop(url)


def new_page(browser: Browser, site: WebWorld) -> Page:
    context = browser.new_context(base_url=site.url, accept_downloads=True, locale="it-IT")
    context.set_default_timeout(15_000)
    return context.new_page()


def sign_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Nome utente").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Accedi").click()
    expect(page.get_by_role("button", name="Esci")).to_be_visible()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def accessible(page: Page, name: str) -> None:
    """axe-core on the page as shown: no serious or critical violation (WCAG 2.x A and AA rules)."""
    page.evaluate(AXE)
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}, resultTypes: ['violations']})"
    )
    bad = [v for v in result["violations"] if v.get("impact") in SERIOUS]
    described = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}" for v in bad]
    assert not described, f"{name}: " + "; ".join(described)


# --- the GP ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
def test_gp_signs_the_pact_then_previews_personalises_activates_and_downloads_the_plan(
    browser: Browser, request: pytest.FixtureRequest, backend_name: str
) -> None:
    site: WebWorld = request.getfixturevalue(f"{backend_name}_site")
    page = new_page(browser, site)
    a3 = site.patient("A3")
    full = backend_name == "sqlite"  # the accessibility scan and screenshots once

    page.goto("/login")
    if full:
        accessible(page, "login")
        shot(page, "01-login")
    sign_in(page, "gp1")
    expect(page).to_have_url(re.compile(r"/patients$"))
    expect(page.get_by_role("link", name="patti da firmare: 1")).to_be_visible()
    if full:
        accessible(page, "patients")
        shot(page, "02-patients")

    # Find the patient by resident id.
    page.get_by_label("Codice assistito").fill("A3")
    page.get_by_role("button", name="Filtra").click()
    page.get_by_role("link", name="A3", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/patients/{a3}$"))
    expect(page.get_by_role("heading", name="Assistito A3")).to_be_visible()
    expect(page.get_by_text("Il piano non può essere trattato.")).to_be_visible()

    # The pact: the patient's signature, then the clinical manager's.
    page.get_by_label("Chi firma", exact=True).select_option("patient")
    page.get_by_label("Nome e cognome di chi firma").fill("Anna Bianchi")
    page.get_by_role("button", name="Registra la firma").click()
    expect(page.get_by_role("status")).to_have_text("Firma registrata.")
    page.get_by_label("Chi firma", exact=True).select_option("clinical_manager")
    page.get_by_label("Nome e cognome di chi firma").fill("Nome CognomeGP1")
    page.get_by_role("button", name="Registra la firma").click()
    expect(page.get_by_text("Il piano può essere trattato.")).to_be_visible()
    expect(page.get_by_text("Versione 1 · firmato")).to_be_visible()
    pdf = page.request.get(page.get_by_role("link", name="Stampa (PDF)").get_attribute("href") or "")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    if full:
        accessible(page, "patient")
        shot(page, "03-patient-pact-signed")

    # Preview: the merged plan, each activity with the pathway that asks for it.
    page.get_by_role("button", name="Anteprima del PAI").click()
    expect(page.get_by_role("heading", name="Anteprima del PAI · A3")).to_be_visible()
    merged = page.get_by_role("table", name="Ogni attività con il percorso che la richiede")
    expect(merged).to_contain_text("Scompenso cardiaco")
    expect(merged).to_contain_text("Ipertensione")
    if full:
        accessible(page, "preview")
        shot(page, "04-preview")

    # Generate, then personalise: move, drop and add, each with its reason.
    page.get_by_role("button", name="Genera il PAI (bozza)").click()
    expect(page.get_by_role("heading", name=re.compile(r"PAI \d+ · bozza"))).to_be_visible()
    plan_url = page.url
    forms = page.locator("form[data-activity]")
    first = forms.first
    first_id = first.get_attribute("data-activity")
    first.locator("xpath=..").locator("summary").click()
    moved_to = date.fromisoformat(first.get_by_label("Nuova data").input_value()) + timedelta(days=1)
    first.get_by_label("Nuova data").fill(moved_to.isoformat())
    first.get_by_label("Motivo").fill("Il paziente è via quel giorno")
    first.get_by_role("button", name="Salva la modifica").click()
    expect(page.get_by_role("status")).to_have_text("PAI modificato; nuova versione salvata.")
    last = page.locator("form[data-activity]").last
    last.locator("xpath=..").locator("summary").click()
    last.get_by_label("Togli").check()
    last.get_by_label("Motivo").fill("Già eseguito il mese scorso")
    last.get_by_role("button", name="Salva la modifica").click()
    expect(page.get_by_role("status")).to_have_text("PAI modificato; nuova versione salvata.")
    add = page.locator("#add-form")
    add.get_by_label("Data").fill((date.today() + timedelta(days=20)).isoformat())
    add.get_by_label("Motivo").fill("Controllo in più richiesto dallo specialista")
    add.get_by_role("button", name="Aggiungi").click()
    expect(page.get_by_role("status")).to_have_text("PAI modificato; nuova versione salvata.")
    versions = page.get_by_role("table", name="Ogni versione con chi l'ha fatta e perché")
    expect(versions.locator("tbody tr")).to_have_count(4)
    expect(versions).to_contain_text("Il paziente è via quel giorno")
    expect(page.locator(f'form[data-activity="{first_id}"]')).to_have_count(1)

    # Activate, see the 12 months, download the calendar.
    page.get_by_role("button", name="Attiva il PAI").click()
    expect(page.get_by_role("status")).to_have_text("PAI attivato.")
    expect(page.get_by_role("heading", name=re.compile(r"PAI \d+ · attivo"))).to_be_visible()
    expect(page.locator("section.month")).to_have_count(12)
    rows = page.get_by_role("table", name=re.compile(r"attività, in ordine di data")).locator("tbody tr").count()
    with page.expect_download() as download:
        page.get_by_role("link", name="Scarica il calendario (iCalendar)").click()
    calendar = Path(download.value.path()).read_text(encoding="utf-8")
    assert calendar.startswith("BEGIN:VCALENDAR") and calendar.count("BEGIN:VEVENT") == rows
    assert download.value.suggested_filename.endswith(".ics")
    if full:
        accessible(page, "plan")
        shot(page, "05-plan-active")
    page.goto(f"/patients/{a3}")
    expect(page.get_by_text("PAI attivo").first).to_be_visible()
    assert plan_url.rsplit("/", 1)[1].isdigit()
    page.context.close()


# --- scope ----------------------------------------------------------------------------------------------------------


def test_a_case_manager_of_another_gestore_cannot_open_the_patient(browser: Browser, sqlite_site: WebWorld) -> None:
    page = new_page(browser, sqlite_site)
    sign_in(page, "nurse2")
    answer = page.goto(f"/patients/{sqlite_site.patient('A3')}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Non trovato")).to_be_visible()
    text = page.content()
    for leaked in ("A3", "Scompenso", "Ipertensione", "CognomeGP1", "COOP1", sqlite_site.world.resident_ids["A3"]):
        assert leaked not in re.sub(r"<[^>]+>", " ", text), leaked
    accessible(page, "not-found")
    shot(page, "06-other-gestore-404")
    page.goto("/patients")
    expect(page.get_by_role("link", name="A2", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="A3", exact=True)).to_have_count(0)
    page.context.close()


# --- the ATS and the gestore ----------------------------------------------------------------------------------------


def test_the_ats_pages_render_their_charts(browser: Browser, sqlite_site: WebWorld) -> None:
    page = new_page(browser, sqlite_site)
    sign_in(page, "ana")
    expect(page).to_have_url(re.compile(r"/ats$"))
    expect(page.get_by_role("heading", name=re.compile(r"Stratificazione · .*\(321\)"))).to_be_visible()
    images = page.locator("figure.chart img")
    expect(images).to_have_count(5)
    for image in images.all():
        image.scroll_into_view_if_needed()
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("img => img.naturalWidth") > 0, image.get_attribute("src")
    accessible(page, "ats")
    shot(page, "07-ats-stratification")
    page.get_by_role("link", name="Inviti").click()
    expect(page.get_by_role("heading", name=re.compile("Inviti · ATS 321"))).to_be_visible()
    accessible(page, "invitations")
    page.get_by_role("link", name=f"Lotto {sqlite_site.world.batch_321}").click()
    expect(page.get_by_role("table", name="Invitati per livello")).to_be_visible()
    letters = page.request.get(f"/ats/invitations/{sqlite_site.world.batch_321}/letters.pdf")
    assert letters.status == 200 and letters.body().startswith(b"%PDF")
    page.get_by_role("link", name="Gestori", exact=True).click()
    expect(page.get_by_role("table", name="Gestori e quota della popolazione presa in carico")).to_contain_text(
        "Gestore COOP1"
    )
    accessible(page, "gestori")
    shot(page, "08-ats-gestori")
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", name=re.compile("Gestori · ATS 321"))).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("link", name="Stratification")).to_be_visible()
    page.context.close()


def test_the_gestore_pages(browser: Browser, sqlite_site: WebWorld) -> None:
    page = new_page(browser, sqlite_site)
    sign_in(page, "boss1")
    expect(page.get_by_role("heading", name=re.compile("Adesioni · Gestore COOP1"))).to_be_visible()
    expect(page.get_by_role("table", name="Adesioni per medico di medicina generale")).to_contain_text("CognomeGP1")
    accessible(page, "funnel")
    shot(page, "09-gestore-funnel")
    page.get_by_role("link", name="Rete di erogatori").click()
    expect(page.get_by_role("table", name="Erogatori della rete")).to_contain_text("Laboratorio Analisi Uno")
    page.get_by_role("link", name="Case manager", exact=True).click()
    page.get_by_role("link", name="Nome CognomeNU1").click()
    expect(page.get_by_role("heading", name="Pazienti di Nome CognomeNU1")).to_be_visible()
    accessible(page, "case-managers")
    page.context.close()
