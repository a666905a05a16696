"""Enrolment: moving a patient's episode, the patient's choice of gestore, a gestore taking an invited patient in
charge with the letter's code, and naming the clinical manager."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from sqlalchemy.orm import Session

from presa.care.enrolment import EpisodeState
from presa.care.pseudonyms import invitation_of_code
from presa.care.service.episodes import assign_clinical_manager, choose_gestore, transition
from presa.care.store.models import Episode, Invitation, Patient
from presa.web.access import Permission
from presa.web.api.patients import EpisodeHistoryOut, PatientRef, _history, _names
from presa.web.deps import Ctx, requires
from presa.web.errors import ApiError, not_found
from presa.web.schemas import BirthDay, Body, Day, RowId, Text

router = APIRouter(tags=["enrolment"])


class TransitionIn(Body):
    to_state: EpisodeState
    reason: Text
    effective_on: Day | None = None


class GestoreChoiceIn(Body):
    gestore_id: RowId
    clinical_manager_id: RowId | None = None
    effective_on: Day | None = None


class TakeInChargeIn(Body):
    invitation_code: Text
    birth_date: BirthDay
    clinical_manager_id: RowId | None = None
    effective_on: Day | None = None


class ClinicalManagerIn(Body):
    practitioner_id: RowId


def _open(session: Session, patient: Patient, episode: Episode | None) -> Episode:
    if episode is None or episode.closed_on is not None:
        state = f" (its last episode is '{episode.state}')" if episode else ""
        raise ApiError(409, f"patient {patient.id} has no open enrolment episode{state}")
    return episode


def _episode_out(ctx: Ctx, episode: Episode) -> EpisodeHistoryOut:
    ctx.session.refresh(episode)
    return _history(ctx, episode, _names(ctx, [episode]))


@router.post("/patients/{ref}/transitions")
def move_episode(
    ctx: Annotated[Ctx, requires(Permission.TRANSITION)], ref: PatientRef, body: TransitionIn
) -> EpisodeHistoryOut:
    """Move the patient's open episode (suspend, resume, withdraw, deceased, ended) with a reason and a date."""
    patient, latest = ctx.patient(ref)
    episode = _open(ctx.session, patient, latest)
    transition(
        ctx.session,
        episode.id,
        body.to_state,
        reason=body.reason,
        author=ctx.actor.username,
        effective_on=body.effective_on,
    )
    return _episode_out(ctx, episode)


@router.post("/patients/{ref}/gestore")
def choose_own_gestore(
    ctx: Annotated[Ctx, requires(Permission.CHOOSE_GESTORE)], ref: PatientRef, body: GestoreChoiceIn
) -> EpisodeHistoryOut:
    """The patient's own choice of gestore (and, if they know it, clinical manager)."""
    patient, latest = ctx.patient(ref)
    episode = _open(ctx.session, patient, latest)
    choose_gestore(
        ctx.session,
        episode.id,
        body.gestore_id,
        author=ctx.actor.username,
        reason="the patient's choice, made by the patient",
        clinical_manager_id=body.clinical_manager_id,
        effective_on=body.effective_on,
    )
    return _episode_out(ctx, episode)


@router.post("/enrolments", status_code=201)
def take_in_charge(ctx: Annotated[Ctx, requires(Permission.TAKE_IN_CHARGE)], body: TakeInChargeIn) -> EpisodeHistoryOut:
    """The caller's gestore takes in charge the invited patient whose letter code and birth date are given."""
    refused = not_found("invitation with this code and birth date")
    invitation_id = invitation_of_code(ctx.state.key, body.invitation_code)
    invitation = ctx.session.get(Invitation, invitation_id) if invitation_id is not None else None
    if invitation is None:
        raise refused
    patient = ctx.session.get(Patient, invitation.patient_id)
    episode = ctx.session.get(Episode, invitation.episode_id)
    if patient is None or episode is None or patient.birth_date != body.birth_date:
        raise refused
    if episode.closed_on is not None or episode.state is not EpisodeState.INVITED:
        raise ApiError(409, f"invitation {body.invitation_code} is no longer open: its episode is '{episode.state}'")
    assert ctx.actor.gestore_id is not None  # the policy gives this permission to gestore staff only
    choose_gestore(
        ctx.session,
        episode.id,
        ctx.actor.gestore_id,
        author=ctx.actor.username,
        reason=f"the patient's choice, recorded by the gestore (invitation {invitation.id})",
        clinical_manager_id=body.clinical_manager_id,
        effective_on=body.effective_on,
    )
    return _episode_out(ctx, episode)


@router.post("/patients/{ref}/clinical-manager")
def name_clinical_manager(
    ctx: Annotated[Ctx, requires(Permission.ASSIGN_CLINICAL_MANAGER)], ref: PatientRef, body: ClinicalManagerIn
) -> EpisodeHistoryOut:
    """Name (or change) the clinical manager of the patient's open episode."""
    patient, latest = ctx.patient(ref)
    episode = _open(ctx.session, patient, latest)
    assign_clinical_manager(ctx.session, episode.id, body.practitioner_id, author=ctx.actor.username)
    return _episode_out(ctx, episode)
