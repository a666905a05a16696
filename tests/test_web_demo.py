"""``presa demo --no-serve`` runs to the end on a small population: the care store holds patients at every stage,
the accounts it prints sign in, and each role lands on its own pages with data on them."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import func, select

from presa.care.enrolment import EpisodeState
from presa.care.store import make_engine, session_factory
from presa.care.store.models import CarePact, CarePlanRecord, Episode, PlanStatus
from tests.liveserver import LiveServer
from tests.webworld import login_token


def test_the_demo_prepares_a_store_and_accounts_that_sign_in(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "presa.cli", "demo", "--residents", "2000", "--seed", "5", "--out", str(out),
         "--no-serve"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Demo accounts" in done.stdout and "medico" in done.stdout
    with (out / "accounts.tsv").open(encoding="utf-8") as file:
        accounts = {row["username"]: row for row in csv.DictReader(file, delimiter="\t")}
    assert set(accounts) == {"medico", "casemanager", "casemanager2", "operatore", "gestore", "analista"}
    assert all(row["password"] in done.stdout for row in accounts.values())

    url = f"sqlite:///{out / 'presa.sqlite3'}"
    engine = make_engine(url)
    try:
        with session_factory(engine)() as db:
            states = dict(db.execute(select(Episode.state, func.count()).group_by(Episode.state)).all())
            assert states.get(EpisodeState.INVITED, 0) > 0 and states.get(EpisodeState.PAI_ACTIVE, 0) > 0
            assert db.scalar(select(func.count()).select_from(CarePact)) > 0
            statuses = set(db.scalars(select(CarePlanRecord.status).distinct()))
            assert PlanStatus.ACTIVE in statuses
    finally:
        engine.dispose()

    key = (out / "presa.key").read_bytes()
    with LiveServer(url, key=key) as server:
        for username, home, expected in (
            ("medico", "/patients", "patti da firmare"),
            ("gestore", "/gestore", "Hanno scelto noi"),
            ("analista", "/ats", "Piramide dei livelli"),
        ):
            with httpx.Client(base_url=server.url, timeout=60) as client:
                token = login_token(client.get("/login").text)
                answer = client.post(
                    "/login",
                    data={"username": username, "password": accounts[username]["password"], "login_token": token},
                )
                assert answer.status_code == 303 and answer.headers["location"] == home, username
                page = client.get(home)
                assert page.status_code == 200 and expected in page.text, (username, page.text[:2000])
                if username == "medico":  # a patient's page shows the criteria that placed them, from the run
                    first = re.search(r'href="(/patients/\d+)"', page.text)
                    assert first is not None
                    record = client.get(first.group(1)).text
                    assert "Criteri soddisfatti nei flussi" in record and "Assegnata" in record
