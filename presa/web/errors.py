"""Every refusal answers ``{"detail": "<one sentence>", "errors": [{"field": ..., "reason": ...}]}`` with a 4xx.

- a request that does not validate: 422, one entry per field (``body.reason``, ``query.limit``, ``path.plan_id``),
  never echoing the value sent;
- a body over :data:`MAX_BODY_BYTES`: 413; no or a bad bearer token: 401; a role that may never call the
  endpoint: 403; a patient (or a pact, plan, batch) that does not exist *or* is outside the caller's scope: 404,
  the same answer for both;
- what the care domain refuses (a transition that makes no sense, a pact already signed, processing after the pact
  was revoked, a full gestore): 409 with the domain's own message, which names the current state and what is
  allowed; a write that collides with stored data (a code already taken): 409.

Anything else is a bug: 500 with a generic message, and the traceback in the server log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import OperationalError as DriverOperationalError
from psycopg_pool import PoolTimeout as ReadPoolTimeout
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolExhausted
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from presa.auth.service import AuthError
from presa.care.enrolment import TransitionError
from presa.care.pact import PactError
from presa.care.plan import PlanChangeError
from presa.care.service.common import CareError, NotFoundError

log = logging.getLogger("presa.web")
RETRY = {"Retry-After": "5"}
MAX_BODY_BYTES = 256 * 1024
MAX_REASON = 200


class ApiError(HTTPException):
    """A refusal with its status and message (and, for 401, the WWW-Authenticate header)."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}")


def body(
    status: int, detail: str, errors: Sequence[dict[str, str]] = (), headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "errors": list(errors)}, status_code=status, headers=dict(headers or {}) or None
    )


def field_errors(raw: Sequence[Any]) -> list[dict[str, str]]:
    errors = []
    for error in raw:
        location = ".".join(str(part) for part in error.get("loc", ())) or "request"
        kind = error.get("type", "")
        if kind == "json_invalid":
            reason = "the body is not valid JSON" + (
                f" ({error['ctx']['error']})" if isinstance(error.get("ctx"), dict) and "error" in error["ctx"] else ""
            )
        elif kind == "extra_forbidden":
            reason = "unknown field"
        elif kind == "model_attributes_type" or (kind == "dict_type" and location == "body"):
            reason = "the body must be a JSON object (Content-Type: application/json)"
        elif kind == "union_tag_invalid" and isinstance(error.get("ctx"), dict):
            reason = f"must be one of {error['ctx'].get('expected_tags', '?')}"
        else:
            reason = str(error.get("msg", "invalid value"))
        if len(reason) > MAX_REASON:  # messages may quote the input: never echo a huge value
            reason = reason[:MAX_REASON] + "…"
        errors.append({"field": location, "reason": reason})
    return errors


def install(app: FastAPI) -> None:
    """The exception handlers and the body-size limit."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc.errors())
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        return body(422, f"invalid request: {summary}", errors)

    @app.exception_handler(HTTPException)
    async def refused(_: Request, exc: HTTPException) -> JSONResponse:
        return body(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(AuthError)
    async def unauthenticated(_: Request, exc: AuthError) -> JSONResponse:
        return body(401, str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotFoundError)
    async def missing(_: Request, exc: NotFoundError) -> JSONResponse:
        return body(404, str(exc))

    for domain in (CareError, TransitionError, PactError, PlanChangeError):

        @app.exception_handler(domain)
        async def conflict(_: Request, exc: Exception) -> JSONResponse:
            return body(409, str(exc))

    @app.exception_handler(IntegrityError)
    async def collision(_: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc.orig)
        return body(409, "the change conflicts with data already stored (a code or an entry that already exists)")

    for unavailable in (OperationalError, PoolExhausted, ReadPoolTimeout, DriverOperationalError):

        @app.exception_handler(unavailable)
        async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
            # the server down or restarting, a connection lost, no connection free in time, a deadlock or a
            # cancelled statement: nothing was carried out, and the same request may succeed in a moment
            log.warning("database unavailable: %s", exc)
            return body(503, "the database is unavailable: nothing was done, try again shortly", headers=RETRY)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return body(500, "internal error: the request was not carried out")

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    response = body(
                        413 if declared > 0 else 400, self._too_large() if declared > 0 else "bad Content-Length"
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, self._too_large())
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes // 1024} KiB"
