"""Invitation batches, by ATS analysts of that ATS: prepare a batch, list batches, print a batch's letters (one
PDF); and one patient's own letter (for the patient, or for an analyst by pseudonym).

A batch's PDF is drawn into an anonymous temporary file within the request's transaction (so the letters and
their audit rows agree, and a 200 means committed), then streamed from it: memory stays the same for 100 letters
or 100,000, and the disk holds the file only while it is sent."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from typing import IO, Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, Strict
from sqlalchemy import select

from presa.care.service.invitations import invite
from presa.care.service.letters import batch_letters, latest_invitation, letters_pdf, write_batch_letters
from presa.care.service.organisations import gestori_serving
from presa.care.store.models import Gestore, Invitation, InvitationBatch, Patient
from presa.web.access import Permission
from presa.web.api.patients import PatientRef
from presa.web.deps import Ctx, requires
from presa.web.errors import ApiError, not_found
from presa.web.schemas import AtsCode, Body, Day

router = APIRouter(tags=["invitations"])
BatchId = Annotated[int, Path(ge=1, le=2**31 - 1)]
PDF: dict[int | str, dict[str, Any]] = {200: {"content": {"application/pdf": {}}, "description": "a PDF"}}
CHUNK = 64 * 1024


class BatchIn(Body):
    ats_code: AtsCode
    letter_date: Day | None = None
    limit: Annotated[int, Strict(), Field(ge=1, le=1_000_000)] | None = None


class GestoreListed(BaseModel):
    id: int
    code: str
    name: str
    phone: str | None
    email: str | None


class BatchOut(BaseModel):
    id: int
    ats_code: str
    letter_date: date
    size: int
    created_at: datetime
    created_by: str


class InvitedOut(BaseModel):
    pseudonym: str
    level: int


class BatchDetailOut(BatchOut):
    gestori: list[GestoreListed]
    invited: list[InvitedOut]


def _batch_out(batch: InvitationBatch) -> BatchOut:
    return BatchOut(
        id=batch.id,
        ats_code=batch.ats_code,
        letter_date=batch.letter_date,
        size=batch.size,
        created_at=batch.created_at,
        created_by=batch.created_by,
    )


def _own_batch(ctx: Ctx, batch_id: int) -> InvitationBatch:
    batch = ctx.session.get(InvitationBatch, batch_id)
    if batch is None or batch.ats_code != ctx.actor.ats_code:
        raise not_found(f"invitation batch {batch_id}")
    return batch


@router.post("/invitations", status_code=201)
def create_batch(ctx: Annotated[Ctx, requires(Permission.INVITE)], body: BatchIn) -> BatchDetailOut:
    """Invite the eligible, not yet invited patients of the ATS (level 1 first), at most ``limit``."""
    if body.ats_code != ctx.actor.ats_code:
        raise ApiError(403, f"your account prepares letters for ATS {ctx.actor.ats_code}, not {body.ats_code}")
    done = invite(ctx.session, body.ats_code, author=ctx.actor.username, letter_date=body.letter_date, limit=body.limit)
    return _detail(ctx, done.batch, audit=False)


@router.get("/invitations")
def list_batches(
    ctx: Annotated[Ctx, requires(Permission.INVITE)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[BatchOut]:
    """The batches of the caller's ATS, newest first."""
    batches = ctx.session.scalars(
        select(InvitationBatch)
        .where(InvitationBatch.ats_code == ctx.actor.ats_code)
        .order_by(InvitationBatch.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_batch_out(b) for b in batches]


@router.get("/invitations/{batch_id}")
def get_batch(ctx: Annotated[Ctx, requires(Permission.INVITE)], batch_id: BatchId) -> BatchDetailOut:
    """A batch: the gestori its letters list and the patients invited (pseudonymised)."""
    return _detail(ctx, _own_batch(ctx, batch_id), audit=True)


@router.get("/invitations/{batch_id}/letters.pdf", response_class=Response, responses=PDF)
def batch_pdf(ctx: Annotated[Ctx, requires(Permission.INVITE)], batch_id: BatchId) -> Response:
    """Every letter of the batch in one PDF, in Italian, each on its own page."""
    return batch_letters_response(ctx, _own_batch(ctx, batch_id).id)


def batch_letters_response(ctx: Ctx, batch_id: int) -> StreamingResponse:
    """A batch's letters as one PDF, drawn into a temporary file in bounded memory and streamed from it (the API's
    and the pages' download); the patients printed are audited."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the response once sent, or below)
    try:
        patients = write_batch_letters(ctx.session, batch_id, ctx.state.key, spool)
    except BaseException:
        spool.close()
        raise
    ctx.audit_patients("print_letter", "invitation", patients)
    return _streamed_pdf(spool, f"lettere-invito-lotto-{batch_id}.pdf")


@router.get("/patients/{ref}/invitation-letter.pdf", response_class=Response, responses=PDF)
def patient_letter(ctx: Annotated[Ctx, requires(Permission.READ_OWN_LETTER)], ref: PatientRef) -> Response:
    """The patient's latest invitation letter."""
    patient, _ = ctx.patient(ref)
    invitation = latest_invitation(ctx.session, patient.id)
    if invitation is None:
        raise not_found(f"invitation letter for patient {ref}")
    letters = batch_letters(ctx.session, invitation.batch_id, ctx.state.key, patient_id=patient.id)
    ctx.audit("print_letter", "invitation", invitation.id, patient_id=patient.id)
    return _pdf(letters_pdf(letters, batch_id=invitation.batch_id), "lettera-invito.pdf")


def _detail(ctx: Ctx, batch: InvitationBatch, *, audit: bool) -> BatchDetailOut:
    gestori: list[Gestore] = list(gestori_serving(ctx.session, batch.ats_code, batch.letter_date))
    patients = ctx.session.scalars(
        select(Patient)
        .join(Invitation, Invitation.patient_id == Patient.id)
        .where(Invitation.batch_id == batch.id)
        .order_by(Invitation.id)
    ).all()
    if audit:
        ctx.audit_patients("list", "invitation", [p.id for p in patients])
    return BatchDetailOut(
        **_batch_out(batch).model_dump(),
        gestori=[GestoreListed(id=g.id, code=g.code, name=g.name, phone=g.phone, email=g.email) for g in gestori],
        invited=[InvitedOut(pseudonym=ctx.pseudonym(p), level=p.level) for p in patients],
    )


def _streamed_pdf(spool: IO[bytes], filename: str) -> StreamingResponse:
    size = spool.tell()
    spool.seek(0)
    return StreamingResponse(
        _chunks(spool),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{filename}"',
            "Cache-Control": "no-store",
            "Content-Length": str(size),
        },
    )


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(CHUNK):
            yield chunk


def _pdf(content: bytes, filename: str) -> Response:
    return Response(
        content,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{filename}"', "Cache-Control": "no-store"},
    )
