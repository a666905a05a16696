"""Care pacts: draft a version, record signatures, revoke, read, print.

Staff of the patient's gestore draft, sign (recording the paper signature) and revoke; a patient may sign their own
pact on the patient's side and revoke it. Revoking stops every processing of the patient's plan until a new version
is signed: the plan endpoints then answer 409 with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from presa.auth.models import Role
from presa.care.pact import PATIENT_SIDE, ConsentScope, PactStatus, SignerRole
from presa.care.service.letters import pact_document
from presa.care.service.pacts import can_process, draft_pact, pacts_of, revoke_pact, sign_pact
from presa.care.store.models import CarePact
from presa.web.access import Permission
from presa.web.api.invitations import PDF, _pdf
from presa.web.api.patients import PatientRef, ProcessingOut
from presa.web.deps import Ctx, requires
from presa.web.errors import ApiError, not_found
from presa.web.schemas import Body, Instant, Name, RowId, Text

router = APIRouter(tags=["care pacts"])
PactId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class DraftIn(Body):
    scopes: Annotated[list[ConsentScope], Field(min_length=1, max_length=5)]
    clinical_manager_id: RowId | None = None


class SignatureIn(Body):
    role: SignerRole
    signer: Name
    signed_at: Instant


class RevocationIn(Body):
    reason: Text


class SignatureOut(BaseModel):
    role: SignerRole
    signer: str
    signed_at: datetime
    recorded_at: datetime
    recorded_by: str


class PactOut(BaseModel):
    id: int
    patient_id: int
    episode_id: int
    gestore_id: int
    clinical_manager_id: int
    version: int
    status: PactStatus
    scopes: list[ConsentScope]
    drafted_at: datetime
    drafted_by: str
    signed_at: datetime | None
    signatures: list[SignatureOut]
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None


class PactsOut(BaseModel):
    processing: ProcessingOut
    pacts: list[PactOut]


def pact_out(pact: CarePact) -> PactOut:
    return PactOut(
        id=pact.id,
        patient_id=pact.patient_id,
        episode_id=pact.episode_id,
        gestore_id=pact.gestore_id,
        clinical_manager_id=pact.clinical_manager_id,
        version=pact.version,
        status=pact.status,
        scopes=sorted(pact.scopes),
        drafted_at=pact.drafted_at,
        drafted_by=pact.drafted_by,
        signed_at=pact.signed_at,
        signatures=[
            SignatureOut(
                role=s.signer_role,
                signer=s.signer_name,
                signed_at=s.signed_at,
                recorded_at=s.recorded_at,
                recorded_by=s.recorded_by,
            )
            for s in pact.signatures
        ],
        revoked_at=pact.revoked_at,
        revoked_by=pact.revoked_by,
        revocation_reason=pact.revocation_reason,
    )


def visible_pact(ctx: Ctx, pact_id: int) -> CarePact:
    """The pact if its patient is within the caller's scope; 404 otherwise, as for a pact that does not exist."""
    pact = ctx.session.get(CarePact, pact_id)
    if pact is None:
        raise not_found(f"care pact {pact_id}")
    ctx.patient_by_id(pact.patient_id, what=f"care pact {pact_id}")
    return pact


@router.post("/patients/{ref}/pacts", status_code=201)
def draft(ctx: Annotated[Ctx, requires(Permission.DRAFT_PACTS)], ref: PatientRef, body: DraftIn) -> PactOut:
    """A new draft version of the pact of the patient's open episode, with the consent scopes given."""
    patient, episode = ctx.patient(ref)
    if episode is None or episode.closed_on is not None:
        raise ApiError(409, f"patient {patient.id} has no open enrolment episode")
    pact = draft_pact(
        ctx.session,
        episode.id,
        scopes=[s.value for s in body.scopes],
        author=ctx.actor.username,
        clinical_manager_id=body.clinical_manager_id,
    )
    return pact_out(pact)


@router.get("/patients/{ref}/pacts")
def list_pacts(ctx: Annotated[Ctx, requires(Permission.READ_PACTS)], ref: PatientRef) -> PactsOut:
    """Every version of the pact of the patient's latest episode, and whether the plan may be processed."""
    patient, episode = ctx.patient(ref)
    pacts = pacts_of(ctx.session, episode.id) if episode is not None else []
    decision = can_process(ctx.session, patient.id)
    ctx.audit("read", "care_pact", None, patient_id=patient.id)
    return PactsOut(
        processing=ProcessingOut(allowed=decision.allowed, reason=decision.reason), pacts=[pact_out(p) for p in pacts]
    )


@router.get("/pacts/{pact_id}")
def get_pact(ctx: Annotated[Ctx, requires(Permission.READ_PACTS)], pact_id: PactId) -> PactOut:
    pact = visible_pact(ctx, pact_id)
    ctx.audit("read", "care_pact", pact.id, patient_id=pact.patient_id)
    return pact_out(pact)


@router.post("/pacts/{pact_id}/signatures")
def sign(ctx: Annotated[Ctx, requires(Permission.SIGN_PACTS)], pact_id: PactId, body: SignatureIn) -> PactOut:
    """Record one signature; the last one needed puts the version in force."""
    pact = visible_pact(ctx, pact_id)
    if ctx.actor.role is Role.PATIENT and body.role not in PATIENT_SIDE:
        raise ApiError(403, f"a patient account signs on the patient's side, not as {body.role}")
    signed = sign_pact(
        ctx.session, pact.id, role=body.role, signer=body.signer, signed_at=body.signed_at, author=ctx.actor.username
    )
    return pact_out(signed)


@router.post("/pacts/{pact_id}/revoke")
def revoke(ctx: Annotated[Ctx, requires(Permission.REVOKE_PACTS)], pact_id: PactId, body: RevocationIn) -> PactOut:
    """Revoke the pact in force: from now on nothing processes the patient's plan until a new version is signed."""
    pact = visible_pact(ctx, pact_id)
    return pact_out(revoke_pact(ctx.session, pact.id, reason=body.reason, author=ctx.actor.username))


@router.get("/pacts/{pact_id}/pdf", response_class=Response, responses=PDF)
def pact_pdf(ctx: Annotated[Ctx, requires(Permission.READ_PACTS)], pact_id: PactId) -> Response:
    """The printable pact, in Italian."""
    pact = visible_pact(ctx, pact_id)
    ctx.audit("print", "care_pact", pact.id, patient_id=pact.patient_id)
    return _pdf(pact_document(ctx.session, pact), f"patto-di-cura-v{pact.version}.pdf")
