"""The care commands, run as the real ``presa`` in a subprocess on SQLite and PostgreSQL: load a run, invite an
ATS (PDFs and the mail-merge index), generate the plans, serve the API over HTTP; one-line errors on bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pypdf
import pytest
from sqlalchemy import select

from presa.care.service import choose_gestore, draft_pact, open_episode, sign_pact
from presa.care.store import make_engine, session_factory
from presa.care.store.models import Patient
from tests.apiworld import KEY
from tests.carebuilder import ALL_SCOPES, CareRuns, clinical_manager, gestore
from tests.pgserver import free_port

PRESA = [sys.executable, "-m", "presa.cli"]
ENV = {**os.environ, "PRESA_SECRET_KEY": KEY.decode()}


def presa(*args: str | Path, check: bool = True, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = ENV if key is None else {**ENV, "PRESA_SECRET_KEY": key}
    result = subprocess.run(
        [*PRESA, *map(str, args)], capture_output=True, text=True, check=False, timeout=600, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"presa {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def fails(*args: str | Path) -> str:
    result = presa(*args, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    return line


def test_every_care_command_has_help() -> None:
    for command in ("load", "pseudonyms", "invite", "serve", "plan"):
        assert "Usage" in presa(command, "--help").stdout


def test_load_invite_plan(tmp_path: Path, empty_database: str) -> None:
    runs = CareRuns(tmp_path)
    run = runs.write(
        {"ZQ01": ["hypertension", "diabetes_type2"], "ZQ02": ["copd"], "ZQ03": ["heart_failure"], "ZQ04": []},
        options={"ZQ03": {"ats": "322"}},
    )
    db = ("--database", empty_database)
    assert "4 residents, 3 eligible, 3 new patients" in presa("load", run, *db, "--author", "loader").stdout
    assert "is already loaded" in fails("load", run, *db)
    assert "0 pseudonyms indexed" in presa("pseudonyms", *db).stdout  # the load indexed them
    assert "3 pseudonyms indexed" in presa("pseudonyms", *db, key="another-key-" + "x" * 32).stdout  # all anew
    assert "no accredited gestore serves ATS 321" in fails("invite", "--ats", "321", "--out", tmp_path / "l0", *db)

    engine = make_engine(empty_database)
    try:
        with session_factory(engine)() as session, session.begin():
            coop = gestore(session, accredited_from=datetime.now(UTC).date() - timedelta(days=30))
            clinical_manager(session, coop, since=datetime.now(UTC).date() - timedelta(days=30))
        out = tmp_path / "letters"
        done = presa("invite", "--ats", "321", "--out", out, *db, "--author", "ats-office").stdout
        assert "2 patients of ATS 321 invited" in done and "Cooperativa COOP1" in done
        with (out / "letters.csv").open(encoding="utf-8") as index:
            rows = list(csv.DictReader(index))
        assert sorted(r["resident_id"] for r in rows) == ["ZQ01", "ZQ02"]
        for row in rows:
            text = pypdf.PdfReader(out / row["file"]).pages[0].extract_text()
            assert f"Codice di invito: {row['invitation_code']}" in text and row["resident_id"] not in text
            assert "Cooperativa COOP1" in text and "coop1@example.org" in text
        [merged] = out.glob("lettere-lotto-*.pdf")
        assert len(pypdf.PdfReader(merged).pages) >= 2
        assert "no eligible patient of ATS 321 is left" in fails(
            "invite", "--ats", "321", "--out", tmp_path / "l2", *db
        )
        assert "not an empty directory" in fails("invite", "--ats", "321", "--out", out, *db)
        assert "--letter-date" in fails("invite", "--ats", "321", "--out", tmp_path / "l3", "--letter-date", "x", *db)

        # One patient signs a pact; `presa plan` generates that patient's plan only.
        with session_factory(engine)() as session, session.begin():
            patient = session.scalars(select(Patient).where(Patient.resident_id == "ZQ01")).one()
            episode = open_episode(session, patient.id)
            assert episode is not None
            choose_gestore(session, episode.id, coop.id, clinical_manager_id=1, author="operator")
            signed = datetime.now(UTC)  # after the gestore was chosen, even across midnight in Italy
            pact = draft_pact(session, episode.id, scopes=ALL_SCOPES, author="operator", at=signed)
            sign_pact(session, pact.id, role="patient", signer="P", signed_at=signed, author="operator")
            sign_pact(session, pact.id, role="clinical_manager", signer="M", signed_at=signed, author="operator")
    finally:
        engine.dispose()
    planned = presa("plan", *db, "--author", "bulk").stdout
    assert "1 plans with" in planned and "0 patients skipped" in planned
    assert "0 plans" in presa("plan", *db).stdout


def test_serve_answers_over_http(tmp_path: Path, empty_database: str) -> None:
    port = free_port()
    server = subprocess.Popen(
        [*PRESA, "serve", "--port", str(port), "--database", empty_database],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"presa serve did not answer: {server.stderr.read() if server.stderr else ''}")
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["info"]["title"] == "presa"
        assert httpx.get(f"http://127.0.0.1:{port}/api/me").status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bad_database_urls_are_one_line_errors(tmp_path: Path) -> None:
    assert "SQLite or PostgreSQL" in fails("load", tmp_path, "--database", "mysql://x/y")
    assert "unreachable" in fails("load", tmp_path, "--database", f"postgresql://nobody@127.0.0.1:{free_port()}/x")
