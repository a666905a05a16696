"""Enrolment: the pure state machine, then episodes, gestore choice and invitation batches in the store."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from presa.care.enrolment import (
    FINAL_STATES,
    MAX_BACKDATE_DAYS,
    OPEN_STATES,
    TRANSITIONS,
    EpisodeState,
    TransitionError,
    allowed_from,
    check_transition,
)
from presa.care.service import CareError, choose_gestore, history, invite, load_run, open_episode, transition
from presa.care.service.episodes import episodes_of
from presa.care.store.audit import trail
from presa.care.store.models import Episode, EpisodeEvent, Invitation, InvitationBatch, Patient
from tests.carebuilder import AT, TODAY, CareRuns, clinical_manager, gestore

S = EpisodeState
DAY = date(2026, 3, 2)


def check(current: S, target: str, *, since: date = DAY - timedelta(days=40), on: date = DAY) -> S:
    return check_transition(current, since, target, effective_on=on, today=DAY, reason="r", author="a").to_state


# --- the pure state machine ----------------------------------------------------------------------------------


def test_the_whole_path_of_a_patient_taken_in_charge_is_allowed() -> None:
    path = [S.ELIGIBLE, S.INVITED, S.GESTORE_CHOSEN, S.PACT_SIGNED, S.PAI_ACTIVE, S.SUSPENDED, S.PAI_ACTIVE, S.ENDED]
    for current, target in itertools.pairwise(path):
        assert check(current, target) is target


def test_a_refused_transition_names_the_current_state_and_the_allowed_ones() -> None:
    with pytest.raises(TransitionError) as refused:
        check(S.INVITED, "pai_active")
    assert str(refused.value) == (
        "cannot go from 'invited' to 'pai_active': from 'invited' the allowed states are: "
        "gestore_chosen, withdrawn, deceased, ended"
    )
    assert refused.value.current is S.INVITED
    assert refused.value.allowed == (S.GESTORE_CHOSEN, S.WITHDRAWN, S.DECEASED, S.ENDED)


def test_final_states_admit_no_transition() -> None:
    for final in FINAL_STATES:
        assert allowed_from(final) == ()
        with pytest.raises(TransitionError, match=f"'{final}' is a final state: no transition is allowed"):
            check(final, "eligible")


def test_an_unknown_state_is_refused_with_the_known_ones() -> None:
    with pytest.raises(TransitionError, match=r"unknown state 'enrolled' .*from 'eligible' the allowed states are"):
        check(S.ELIGIBLE, "enrolled")


def test_every_open_state_can_end_and_nothing_goes_back_to_eligible() -> None:
    for state in OPEN_STATES:
        assert {S.DECEASED, S.ENDED} <= TRANSITIONS[state]
        assert S.ELIGIBLE not in TRANSITIONS[state]
    assert S.WITHDRAWN not in TRANSITIONS[S.ELIGIBLE]  # nothing was offered yet, so nothing to decline


def test_effective_dates_may_go_back_a_month_but_not_further_and_never_ahead() -> None:
    earliest = DAY - timedelta(days=MAX_BACKDATE_DAYS)
    assert check(S.PAI_ACTIVE, "suspended", on=earliest) is S.SUSPENDED
    with pytest.raises(TransitionError) as too_old:
        check(S.PAI_ACTIVE, "suspended", on=earliest - timedelta(days=1))
    assert str(too_old.value) == (
        "effective date 2026-01-30 is more than 30 days back: the earliest allowed today is 2026-01-31"
    )
    with pytest.raises(TransitionError, match=r"2026-03-03 is in the future \(today is 2026-03-02\)"):
        check(S.PAI_ACTIVE, "suspended", on=DAY + timedelta(days=1))


def test_the_history_stays_in_order() -> None:
    with pytest.raises(TransitionError, match="before the current state 'pai_active' took effect on 2026-02-20"):
        check(S.PAI_ACTIVE, "suspended", since=date(2026, 2, 20), on=date(2026, 2, 19))
    assert check(S.PAI_ACTIVE, "suspended", since=date(2026, 2, 20), on=date(2026, 2, 20)) is S.SUSPENDED


def test_reason_and_author_are_required() -> None:
    with pytest.raises(TransitionError, match="needs a reason"):
        check_transition(S.ELIGIBLE, DAY, "invited", effective_on=DAY, today=DAY, reason="  ", author="a")
    with pytest.raises(TransitionError, match="needs an author"):
        check_transition(S.ELIGIBLE, DAY, "invited", effective_on=DAY, today=DAY, reason="r", author="")


# --- episodes in the store -----------------------------------------------------------------------------------


@pytest.fixture
def runs(tmp_path: Path) -> CareRuns:
    return CareRuns(tmp_path)


def eligible_patient(
    db: Session, runs: CareRuns, resident_id: str = "R1", *, days_ago: int = 0
) -> tuple[Patient, Episode]:
    at = AT - timedelta(days=days_ago)
    load_run(db, runs.write({resident_id: ["hypertension"]}), author="loader", at=at, today=at.date())
    patient = db.scalars(select(Patient).where(Patient.resident_id == resident_id)).one()
    episode = open_episode(db, patient.id)
    assert episode is not None
    return patient, episode


def test_a_transition_is_recorded_with_reason_author_and_dates(db: Session, runs: CareRuns) -> None:
    patient, episode = eligible_patient(db, runs, days_ago=10)
    transition(
        db,
        episode.id,
        "deceased",
        reason="death reported by the GP",
        author="operator7",
        effective_on=TODAY - timedelta(days=3),
        at=AT,
        today=TODAY + timedelta(days=2),  # recorded two days later, back-dated five
    )
    db.expire_all()
    assert (episode.state, episode.state_since, episode.closed_on) == (S.DECEASED, date(2026, 2, 27), date(2026, 2, 27))
    assert [(e.seq, e.from_state, e.to_state, e.effective_on, e.author, e.reason) for e in history(db, episode.id)] == [
        (
            1,
            None,
            S.ELIGIBLE,
            date(2026, 2, 20),
            "loader",
            f"eligible in stratification run {patient.run_id} (reference date 2025-12-31)",
        ),
        (2, S.ELIGIBLE, S.DECEASED, date(2026, 2, 27), "operator7", "death reported by the GP"),
    ]
    assert history(db, episode.id)[1].recorded_at == AT
    [audit] = [a for a in trail(db, patient_id=patient.id) if a.action == "transition"]
    assert (audit.actor, audit.entity, audit.detail) == (
        "operator7",
        "episode",
        {"from": "eligible", "to": "deceased", "effective_on": "2026-02-27"},
    )


def test_a_refused_transition_changes_nothing(db: Session, runs: CareRuns) -> None:
    _, episode = eligible_patient(db, runs)
    with pytest.raises(TransitionError, match="cannot go from 'eligible' to 'suspended'"):
        transition(db, episode.id, "suspended", reason="r", author="a", at=AT, today=TODAY)
    with pytest.raises(TransitionError, match="more than 30 days back"):
        transition(db, episode.id, "ended", reason="r", author="a", effective_on=date(2025, 12, 1), at=AT, today=TODAY)
    db.expire_all()
    assert episode.state is S.ELIGIBLE and len(history(db, episode.id)) == 1


def test_transitions_with_their_own_operation_are_not_plain_transitions(db: Session, runs: CareRuns) -> None:
    _, episode = eligible_patient(db, runs)
    transition(db, episode.id, "invited", reason="letter handed over", author="a", at=AT, today=TODAY)
    with pytest.raises(CareError, match="'gestore_chosen' is reached through choose_gestore"):
        transition(db, episode.id, "gestore_chosen", reason="r", author="a", at=AT, today=TODAY)
    with pytest.raises(CareError, match="no enrolment episode 999999"):
        transition(db, 999_999, "ended", reason="r", author="a", at=AT, today=TODAY)


def test_choosing_a_gestore_checks_area_accreditation_capacity_and_clinical_manager(
    db: Session, runs: CareRuns
) -> None:
    patient, episode = eligible_patient(db, runs)
    transition(db, episode.id, "invited", reason="letter", author="a", at=AT, today=TODAY)
    elsewhere = gestore(db, "BERGAMO", ats=("325",))
    lapsed = gestore(db, "OLD", accredited_from=date(2020, 1, 1), accredited_until=date(2025, 12, 31))
    full = gestore(db, "FULL", capacity=0)
    chosen = gestore(db, "COOP1")
    other = gestore(db, "COOP2")
    manager = clinical_manager(db, other, "GP9")

    def choose(gestore_id: int, manager_id: int | None = None) -> None:
        choose_gestore(db, episode.id, gestore_id, clinical_manager_id=manager_id, author="op", at=AT, today=TODAY)

    with pytest.raises(CareError, match="gestore BERGAMO does not take patients of ATS 321 in charge"):
        choose(elsewhere.id)
    with pytest.raises(CareError, match="gestore OLD is not accredited on 2026-03-02"):
        choose(lapsed.id)
    with pytest.raises(CareError, match="gestore FULL is full: 0 patients taken in charge, capacity 0"):
        choose(full.id)
    with pytest.raises(CareError, match="is not a clinical manager of gestore COOP1"):
        choose(chosen.id, manager.id)
    db.expire_all()
    assert episode.state is S.INVITED

    choose(chosen.id)
    db.expire_all()
    assert (episode.state, episode.gestore_id, episode.clinical_manager_id) == (S.GESTORE_CHOSEN, chosen.id, None)
    assert history(db, episode.id)[-1].reason == "the patient's choice"
    assert patient.id == episode.patient_id


def test_a_gestore_at_capacity_takes_no_one_more(db: Session, runs: CareRuns) -> None:
    load_run(db, runs.write({"A": ["copd"], "B": ["copd"]}), author="loader", at=AT, today=TODAY)
    small = gestore(db, "SMALL", capacity=1)
    first, second = (open_episode(db, p.id) for p in db.scalars(select(Patient).order_by(Patient.resident_id)))
    assert first is not None and second is not None
    invite(db, "321", author="op", at=AT, today=TODAY)
    choose_gestore(db, first.id, small.id, author="op", at=AT, today=TODAY)
    with pytest.raises(CareError, match="gestore SMALL is full: 1 patients taken in charge, capacity 1"):
        choose_gestore(db, second.id, small.id, author="op", at=AT, today=TODAY)
    transition(db, first.id, "withdrawn", reason="moved to Switzerland", author="op", at=AT, today=TODAY)
    choose_gestore(db, second.id, small.id, author="op", at=AT, today=TODAY)  # the place freed up


def test_a_closed_episode_is_never_reopened_a_new_one_starts(db: Session, runs: CareRuns) -> None:
    patient, episode = eligible_patient(db, runs)
    transition(db, episode.id, "invited", reason="letter", author="a", at=AT, today=TODAY)
    transition(db, episode.id, "withdrawn", reason="declined by phone", author="a", at=AT, today=TODAY)
    assert open_episode(db, patient.id) is None
    later = AT + timedelta(days=200)
    load_run(db, runs.write({"R1": ["hypertension"]}, reference=date(2026, 6, 30)), author="loader", at=later)
    episodes = episodes_of(db, patient.id)
    assert [(e.state, e.closed_on is None) for e in episodes] == [(S.WITHDRAWN, False), (S.ELIGIBLE, True)]
    assert [e.to_state for e in history(db, episodes[0].id)] == [S.ELIGIBLE, S.INVITED, S.WITHDRAWN]


# --- invitation batches --------------------------------------------------------------------------------------


def test_an_invitation_batch_invites_the_eligible_patients_of_one_ats_most_fragile_first(
    db: Session, runs: CareRuns
) -> None:
    people = {
        "L3": ["copd"],
        "L1": ["copd", "hypertension", "diabetes_type2", "heart_failure"],
        "L2": ["copd", "hypertension"],
        "BG": ["copd"],  # another ATS
        "L4": [],  # not chronic: not eligible
    }
    load_run(db, runs.write(people, options={"BG": {"ats": "325"}, "L4": {"uses_services": True}}), author="l", at=AT)
    gestore(db, "COOP1")
    gestore(db, "ASST-NORD", kind="asst", ats=("321", "324"))
    gestore(db, "CLOSED", accredited_until=date(2026, 1, 31))

    first = invite(db, "321", author="ats-operator", limit=2, at=AT, today=TODAY)
    resident = {p.id: p.resident_id for p in db.scalars(select(Patient))}
    assert [resident[p] for p in first.patient_ids] == ["L1", "L2"]
    assert [g.code for g in first.gestori] == ["ASST-NORD", "COOP1"]  # by name; the lapsed one is left out
    assert (first.batch.ats_code, first.batch.size, first.batch.letter_date) == ("321", 2, TODAY)

    second = invite(db, "321", author="ats-operator", at=AT, today=TODAY)
    assert [resident[p] for p in second.patient_ids] == ["L3"]
    with pytest.raises(CareError, match="no eligible patient of ATS 321 is left to invite"):
        invite(db, "321", author="ats-operator", at=AT, today=TODAY)

    states = {resident[e.patient_id]: e.state for e in db.scalars(select(Episode))}
    assert states == {"L1": S.INVITED, "L2": S.INVITED, "L3": S.INVITED, "BG": S.ELIGIBLE}
    invited_events = db.scalars(select(EpisodeEvent).where(EpisodeEvent.to_state == S.INVITED)).all()
    assert (
        sorted((e.seq, e.from_state, e.effective_on, e.author) for e in invited_events)
        == [(2, S.ELIGIBLE, TODAY, "ats-operator")] * 3
    )
    assert {e.reason for e in invited_events} == {
        f"invitation letter, batch {first.batch.id}",
        f"invitation letter, batch {second.batch.id}",
    }
    audited = [a.patient_id for a in trail(db, actor="ats-operator") if a.action == "invite"]
    assert sorted(audited) == sorted(first.patient_ids + second.patient_ids)


def test_nobody_is_invited_twice_in_the_same_episode(db: Session, runs: CareRuns) -> None:
    _, episode = eligible_patient(db, runs)
    gestore(db)
    batch = invite(db, "321", author="op", at=AT, today=TODAY).batch
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(Invitation(batch_id=batch.id, episode_id=episode.id, patient_id=episode.patient_id))
        db.flush()
    assert db.scalar(select(func.count()).select_from(Invitation)) == 1
    assert db.scalar(select(func.count()).select_from(InvitationBatch)) == 1


def test_an_invitation_needs_a_gestore_to_list_and_a_sensible_letter_date(db: Session, runs: CareRuns) -> None:
    eligible_patient(db, runs)
    with pytest.raises(CareError, match="no accredited gestore serves ATS 321 on 2026-03-02"):
        invite(db, "321", author="op", at=AT, today=TODAY)
    gestore(db)
    with pytest.raises(TransitionError, match="is in the future"):
        invite(db, "321", author="op", letter_date=TODAY + timedelta(days=7), at=AT, today=TODAY)
    with pytest.raises(CareError, match="limit must be at least 1"):
        invite(db, "321", author="op", limit=0, at=AT, today=TODAY)
