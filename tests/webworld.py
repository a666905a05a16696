"""The web pages' test world: ``tests.apiworld``'s store, plus accounts that sign in with a password and a patient
whose care pact waits for its signatures; a live server on it; a signed-in httpx client.

Extra accounts (password :data:`PASSWORD`): ``gp1`` (clinician, GP1 of COOP1), ``nurse1`` (case manager of COOP1),
``nurse2`` (case manager of COOP2), ``boss1`` (gestore admin of COOP1), ``ana`` (analyst of ATS 321), ``oper9``
(operator of COOP2).
Patient ``A3`` (ATS 321, GP1's list) is taken in charge by COOP1 with GP1 as clinical manager, and a draft pact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine

from presa.auth.service import create_account
from presa.care.service import choose_gestore, draft_pact, open_episode
from presa.care.service.organisations import add_provider, add_to_network
from presa.care.store import make_engine, session_factory, upgrade
from tests.apiworld import PASSWORD, World, add_followup, build_world
from tests.carebuilder import ALL_SCOPES
from tests.liveserver import LiveServer

ACCOUNTS = ("gp1", "nurse1", "nurse2", "boss1", "ana", "oper9")


@dataclass
class WebWorld:
    world: World
    url: str
    a3_pact: int
    database: str = ""

    def patient(self, resident: str) -> int:
        return self.world.patients[resident]


def build_web_world(engine: Engine, runs_dir: Path) -> WebWorld:
    world = build_world(engine, runs_dir)
    with session_factory(engine)() as db, db.begin():
        coop1, coop2 = world.gestori["COOP1"], world.gestori["COOP2"]
        pr = world.practitioners
        scopes: dict[str, dict[str, object]] = {
            "gp1": {"role": "clinician", "gestore_id": coop1, "practitioner_id": pr["GP1"]},
            "nurse1": {"role": "case_manager", "gestore_id": coop1, "practitioner_id": pr["NU1"]},
            "nurse2": {"role": "case_manager", "gestore_id": coop2, "practitioner_id": pr["NU2"]},
            "boss1": {"role": "gestore_admin", "gestore_id": coop1},
            "ana": {"role": "ats_analyst", "ats_code": "321"},
            "oper9": {"role": "operator", "gestore_id": coop2},
        }
        for username, scope in scopes.items():
            create_account(
                db,
                username=username,
                display_name=username,
                password=PASSWORD,
                author="setup",
                **scope,  # type: ignore[arg-type]
            )
        episode = open_episode(db, world.patients["A3"])
        assert episode is not None
        choose_gestore(db, episode.id, coop1, clinical_manager_id=pr["GP1"], author="setup")
        pact = draft_pact(db, episode.id, scopes=ALL_SCOPES, author="setup")
        lab = add_provider(
            db, code="LAB1", name="Laboratorio Analisi Uno", kind="laboratory", author="setup", ats_code="321"
        )
        add_to_network(db, coop1, lab.id, joined_on=date.today() - timedelta(days=30), author="setup")
        return WebWorld(world, "", pact.id)


@contextmanager
def web_server(url: str, runs_dir: Path, *, followup: bool = False) -> Iterator[tuple[WebWorld, LiveServer]]:
    """The web world served; with ``followup``, A1 in follow-up too (``tests.apiworld.add_followup``)."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        web = build_web_world(engine, runs_dir)
        if followup:
            add_followup(engine, web.world)
    finally:
        engine.dispose()
    web.database = url
    with LiveServer(url) as server:
        web.url = server.url
        yield web, server


def login_token(html: str) -> str:
    found = re.search(r'name="login_token" value="([0-9a-f]+)"', html)
    assert found, html[:500]
    return found.group(1)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, html[:500]
    return found.group(1)


@contextmanager
def signed_in(base_url: str, username: str, password: str = PASSWORD) -> Iterator[httpx.Client]:
    """An httpx client with a live session of ``username`` (cookies kept by the client)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        form = client.get("/login")
        answer = client.post(
            "/login", data={"username": username, "password": password, "login_token": login_token(form.text)}
        )
        assert answer.status_code == 303, answer.text[:500]
        yield client
