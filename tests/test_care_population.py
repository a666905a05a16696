"""Loading stratification runs into the care store: eligibility, levels and pathologies, history kept."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from presa.care.enrolment import EpisodeState
from presa.care.service import CareError, choose_gestore, history, invite, load_run, open_episode
from presa.care.service.episodes import episodes_of
from presa.care.store.audit import trail
from presa.care.store.models import Episode, Patient, PatientStratum, StratificationRun
from presa.stratify.catalog import load_catalog
from presa.stratify.pipeline import run_stratification
from presa.stratify.runview import open_run
from presa.synth.config import SynthConfig
from presa.synth.generate import generate
from tests.carebuilder import AT, REF, TODAY, CareRuns, gestore

S = EpisodeState
LATER = AT + timedelta(days=90)
LATER_REF = date(2026, 3, 31)


@pytest.fixture
def runs(tmp_path: Path) -> CareRuns:
    return CareRuns(tmp_path)


def patients(db: Session) -> dict[str, Patient]:
    return {p.resident_id: p for p in db.scalars(select(Patient))}


def state_of(db: Session, resident_id: str) -> tuple[S, bool]:
    """The state of the patient's latest episode and whether it is open."""
    patient = patients(db)[resident_id]
    latest = episodes_of(db, patient.id)[-1]
    return latest.state, latest.closed_on is None


def test_a_run_makes_its_chronic_residents_eligible_patients(db: Session, runs: CareRuns) -> None:
    run_dir = runs.write(
        {
            "FRAIL": ["hypertension", "copd", "diabetes_type2", "heart_failure"],
            "POLY": ["hypertension", "copd"],
            "ONE": ["hypertension"],
            "USER": [],
            "NONUSER": [],
        },
        options={"USER": {"uses_services": True}, "POLY": {"ats": "325", "gp_id": "GP77", "sex": "M", "age": 64}},
    )
    load = load_run(db, run_dir, author="loader", at=AT, today=TODAY)

    assert (load.population, load.strata, load.eligible, load.new_patients) == (5, 3, 3, 3)
    assert (load.episodes_opened, load.episodes_ended, load.level_changes, load.no_longer_eligible) == (3, 0, 0, 0)
    found = patients(db)
    assert sorted(found) == ["FRAIL", "ONE", "POLY"]
    poly = found["POLY"]
    assert (poly.level, poly.pathologies, poly.ats_code, poly.gp_id, poly.sex, poly.eligible) == (
        2,
        ["copd", "hypertension"],  # main pathology first (catalog priority)
        "325",
        "GP77",
        "M",
        True,
    )
    assert poly.age_on(REF) == 64 and poly.municipality == "015146" and poly.run_id == load.run_id
    assert found["FRAIL"].level == 1 and found["FRAIL"].pathologies[0] == "heart_failure"

    for resident_id in found:
        episode = open_episode(db, found[resident_id].id)
        assert episode is not None and (episode.state, episode.state_since) == (S.ELIGIBLE, TODAY)
        assert episode.level_at_opening == found[resident_id].level and episode.opened_run_id == load.run_id
        [opening] = history(db, episode.id)
        assert (opening.seq, opening.from_state, opening.to_state, opening.author) == (1, None, S.ELIGIBLE, "loader")

    run = db.get(StratificationRun, load.run_id)
    assert run is not None
    assert (run.reference_date, run.population, run.eligible, run.loaded_by) == (REF, 5, 3, "loader")
    assert run.source == str(run_dir.resolve()) and len(run.run_digest) == 64
    [audit] = trail(db, actor="loader")
    assert (audit.action, audit.entity, audit.entity_id) == ("load_run", "stratification_run", str(load.run_id))
    assert (
        audit.detail is not None
        and audit.detail["new_patients"] == 3
        and audit.detail["reference_date"] == "2025-12-31"
    )


def test_a_new_run_updates_eligibility_and_levels_and_keeps_the_history(db: Session, runs: CareRuns) -> None:
    first = {
        "STABLE": ["hypertension"],
        "WORSE": ["hypertension"],
        "RECOVERED": ["copd"],  # level 4 next time, not yet invited
        "GONE": ["copd"],  # invited, then absent from the next run (moved away)
        "IN_CARE": ["copd"],  # has a gestore, then level 4: stays in care
    }
    load_run(db, runs.write(first), author="loader", at=AT, today=TODAY)
    gestore(db)
    invite(db, "321", author="ats", at=AT, today=TODAY)  # everybody is invited
    in_care = open_episode(db, patients(db)["IN_CARE"].id)
    assert in_care is not None
    coop = gestore(db, "COOP2")
    choose_gestore(db, in_care.id, coop.id, author="op", at=AT, today=TODAY)

    second = {
        "STABLE": ["hypertension"],
        "WORSE": ["hypertension", "diabetes_type2", "heart_failure"],
        "RECOVERED": [],
        "IN_CARE": [],
        "NEW": ["heart_failure", "copd"],
    }
    run_dir = runs.write(second, reference=LATER_REF, options={n: {"uses_services": True} for n in second})
    load = load_run(db, run_dir, author="loader", at=LATER)

    assert (load.population, load.eligible, load.new_patients, load.level_changes) == (5, 3, 1, 3)
    assert (load.no_longer_eligible, load.episodes_opened, load.episodes_ended) == (3, 1, 2)
    found = patients(db)
    assert {k: (p.level, p.eligible) for k, p in found.items()} == {
        "STABLE": (3, True),
        "WORSE": (2, True),
        "RECOVERED": (4, False),
        "GONE": (3, False),  # not in the run at all: the last known level stays
        "IN_CARE": (4, False),
        "NEW": (2, True),
    }
    assert found["WORSE"].pathologies == ["heart_failure", "diabetes_type2", "hypertension"]
    assert found["GONE"].run_id != load.run_id and found["RECOVERED"].run_id == load.run_id

    # The history of levels: every run's word on every patient it saw.
    strata = db.execute(
        select(
            PatientStratum.resident_id, PatientStratum.run_id, PatientStratum.level, PatientStratum.eligible
        ).order_by(PatientStratum.resident_id, PatientStratum.run_id)
    ).all()
    first_run = load.run_id - 1
    assert [tuple(r) for r in strata if r[0] in ("WORSE", "RECOVERED", "GONE")] == [
        ("GONE", first_run, 3, True),
        ("RECOVERED", first_run, 3, True),
        ("RECOVERED", load.run_id, 4, False),
        ("WORSE", first_run, 3, True),
        ("WORSE", load.run_id, 2, True),
    ]

    # Episodes: those nobody took in charge end; the patient in care stays in care; the new patient is eligible.
    assert state_of(db, "RECOVERED") == (S.ENDED, False)
    assert state_of(db, "GONE") == (S.ENDED, False)
    assert state_of(db, "IN_CARE") == (S.GESTORE_CHOSEN, True)
    assert state_of(db, "STABLE") == (S.INVITED, True)
    assert state_of(db, "NEW") == (S.ELIGIBLE, True)
    gone = episodes_of(db, found["GONE"].id)[-1]
    assert [(e.seq, e.from_state, e.to_state) for e in history(db, gone.id)] == [
        (1, None, S.ELIGIBLE),
        (2, S.ELIGIBLE, S.INVITED),
        (3, S.INVITED, S.ENDED),
    ]
    ended = history(db, gone.id)[-1]
    assert ended.reason == f"no longer eligible in stratification run {load.run_id} (reference date 2026-03-31)"
    assert (ended.effective_on, ended.author, gone.closed_on) == (LATER.date(), "loader", LATER.date())


def test_a_run_is_loaded_once_and_runs_come_in_date_order(db: Session, runs: CareRuns) -> None:
    newer = runs.write({"A": ["copd"]}, reference=LATER_REF)
    load_run(db, newer, author="loader", at=AT, today=TODAY)
    with pytest.raises(CareError, match="is already loaded"):
        load_run(db, newer, author="loader", at=AT, today=TODAY)
    older = runs.write({"A": ["copd"]}, reference=REF)
    with pytest.raises(CareError, match=r"reference date 2025-12-31, before the latest loaded run .* in date order"):
        load_run(db, older, author="loader", at=AT, today=TODAY)


def test_a_directory_that_is_not_a_run_is_refused(db: Session, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a stratification run"):
        load_run(db, tmp_path, author="loader", at=AT, today=TODAY)


# --- a whole synthetic population, through the real generator and engine ------------------------------------


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("synthetic")
    generate(SynthConfig(residents=3000, seed=11), root / "flows")
    run_stratification(root / "flows", root / "run", load_catalog(), REF)
    yield root / "run"
    shutil.rmtree(root, ignore_errors=True)


def test_a_synthetic_population_loads_whole(db: Session, synthetic_run: Path) -> None:
    load = load_run(db, synthetic_run, author="loader", at=AT, today=TODAY)
    duck = open_run(synthetic_run)
    try:
        expected = {
            row[0]: (row[1], list(row[2]), row[3], row[4])
            for row in duck.execute(
                "SELECT resident_id, level, pathologies, ats, gp_id FROM residents WHERE level <= 3"
            ).fetchall()
        }
        [(population,)] = duck.execute("SELECT count(*) FROM residents").fetchall()
    finally:
        duck.close()
    assert load.population == population > 2500  # some of the 3,000 died or moved out before the reference date
    assert load.eligible == load.new_patients == load.episodes_opened == len(expected) > 500
    stored = {p.resident_id: (p.level, p.pathologies, p.ats_code, p.gp_id) for p in db.scalars(select(Patient))}
    assert stored == expected
    open_states = db.scalars(select(Episode.state).where(Episode.closed_on.is_(None))).all()
    assert len(open_states) == len(expected) and set(open_states) == {S.ELIGIBLE}
