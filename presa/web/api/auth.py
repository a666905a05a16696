"""Signing in and out: ``POST /api/auth/token`` (username and password, as an OAuth2 password grant or JSON) gives
a bearer token; ``DELETE /api/auth/token`` revokes the one in use; ``GET /api/me`` says who it belongs to.

The token endpoint locks out like the sign-in page, per username and also per client address
(``presa.auth.sessions.guarded_authenticate``): while locked it answers 429 with ``Retry-After``, the same for a
username that exists and one that does not."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StringConstraints, ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from presa.auth.models import Role
from presa.auth.service import AuthError, issue_token, revoke_token
from presa.auth.sessions import LockedOutError, guarded_authenticate
from presa.care.service.common import now
from presa.care.store.bulk import table_of
from presa.care.store.models import Gestore
from presa.web.access import Actor
from presa.web.deps import ActorDep, SessionDep, client_address, get_session
from presa.web.errors import ApiError, body, field_errors
from presa.web.schemas import Body, clean_text

router = APIRouter(tags=["auth"])

Username = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class Credentials(Body):
    username: Username
    password: Password
    grant_type: Annotated[str, StringConstraints(pattern=r"^password$")] | None = None
    scope: Annotated[str, StringConstraints(max_length=200)] | None = None


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    expires_in: int


class MeOut(BaseModel):
    username: str
    role: Role
    ats_code: str | None
    gestore_id: int | None
    gestore_name: str | None
    practitioner_id: int | None
    patient_id: int | None


TOKEN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": Credentials.model_json_schema()},
            "application/json": {"schema": Credentials.model_json_schema()},
        },
    }
}


async def credentials(request: Request) -> Credentials:
    """The username and password from a form (the OAuth2 password grant) or from a JSON object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: Any
    if kind == "application/x-www-form-urlencoded":
        form = await request.form()
        raw = {k: v for k, v in form.items() if isinstance(v, str)}
        extra = set(raw) - set(Credentials.model_fields)
        if extra:
            raise ApiError(422, f"invalid request: body.{sorted(extra)[0]}: unknown field")
        strict = False
    elif kind == "application/json":
        try:
            raw = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(422, "invalid request: body: the body is not valid JSON") from None
        strict = True
    else:
        raise ApiError(415, "send the credentials as application/x-www-form-urlencoded or application/json")
    try:
        parsed = Credentials.model_validate(raw, strict=strict)
        clean_text(parsed.password)
    except ValidationError as exc:
        errors = field_errors([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        raise ApiError(422, f"invalid request: {summary}") from None
    except ValueError as exc:
        raise ApiError(422, f"invalid request: body.password: {exc}") from None
    return parsed


@router.post(
    "/auth/token",
    openapi_extra=TOKEN_BODY,
    response_model=TokenOut,
    responses={
        401: {"description": "wrong username or password"},
        429: {"description": "too many failed sign-ins for this username or from this address; see Retry-After"},
    },
)
def sign_in(
    request: Request,
    given: Annotated[Credentials, Depends(credentials)],
    session: Annotated[Session, Depends(get_session, scope="function")],
) -> TokenOut | JSONResponse:
    """A bearer token for an account, valid 8 hours."""
    at = now()
    try:
        account = guarded_authenticate(
            session, given.username, given.password, lock_address=client_address(request), at=at
        )
    except LockedOutError as exc:  # answered, not raised: the refusal's audit row is committed
        return locked_out(exc, at)
    except AuthError as exc:  # the same: the failure must count
        return body(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
    issued = issue_token(session, account.id, label="api")
    lifetime = issued.record.expires_at - issued.record.created_at
    return TokenOut(
        access_token=issued.token, expires_at=issued.record.expires_at, expires_in=int(lifetime.total_seconds())
    )


def locked_out(exc: LockedOutError, at: datetime) -> JSONResponse:
    """429 until the lock ends; ``Retry-After`` in whole seconds, rounded up so that a retry on time is not early."""
    wait = max(1, math.ceil((exc.until - at).total_seconds()))
    return body(429, f"{exc} (in {wait} s)", headers={"Retry-After": str(wait)})


@router.delete("/auth/token", status_code=204)
def sign_out(actor: ActorDep, session: SessionDep) -> None:
    """Revoke the token this request was made with."""
    revoke_token(session, actor.token_id, author=actor.username)


@router.get("/me")
def me(actor: ActorDep, session: SessionDep) -> MeOut:
    """The signed-in account: its role and scope."""
    return me_out(session, actor)


_GESTORI = table_of(Gestore)
_GESTORE_NAME = select(_GESTORI.c.name).where(_GESTORI.c.id == bindparam("gestore_id"))
"""The name alone: loading the gestore as an object also loaded its areas (a second query), a third of the request."""


def me_out(session: Session, actor: Actor) -> MeOut:
    gestore_name = None
    if actor.gestore_id is not None:
        gestore_name = session.connection().execute(_GESTORE_NAME, {"gestore_id": actor.gestore_id}).scalar()
    return MeOut(
        username=actor.username,
        role=actor.role,
        ats_code=actor.ats_code,
        gestore_id=actor.gestore_id,
        gestore_name=gestore_name,
        practitioner_id=actor.practitioner_id,
        patient_id=actor.patient_id,
    )
