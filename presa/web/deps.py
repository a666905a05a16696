"""What every endpoint depends on: one transaction per request, the bearer token's account, the client's address.

:func:`get_session` opens the request's session and transaction; it commits when the endpoint returns and rolls
back when it raises, *before* the response is sent (``scope="function"``), so a 2xx always means committed. The
client's address is set on the session, so every audit row the request writes - its own and the services' -
says where it came from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from presa.auth.models import Account
from presa.auth.service import AuthError, Bearer, authenticate_bearer
from presa.care.store.audit import origin, record, set_origin
from presa.care.store.bulk import bulk_insert, table_of
from presa.care.store.models import AuditEvent, Episode, Patient, Practitioner
from presa.web.access import Actor, Permission, Pseudonyms, check, visible_patient, visible_patient_id
from presa.web.errors import ApiError

if TYPE_CHECKING:
    from presa.web.reads import ReadPool

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)
SMALL_AUDIT = 1_000
_AUDIT_PAGE = text(
    "INSERT INTO audit_events (at, actor, action, entity, patient_id, remote_addr) "
    "SELECT :at, :actor, :action, :entity, patient_id, :addr FROM unnest(CAST(:ids AS integer[])) AS patient_id"
)


@dataclass
class AppState:
    engine: Engine
    sessions: sessionmaker[Session]
    key: bytes
    pseudonyms: Pseudonyms
    reads: ReadPool | None = None
    """PostgreSQL's connections for the reads answered on the event loop (``presa.web.reads``); None on SQLite."""


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.presa
    return state


def client_address(request: Request) -> str | None:
    return request.client.host[:64] if request.client else None


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session, in its transaction. Opening them does no I/O (the connection is taken by the first
    statement, in the thread that runs it), so they are opened on the event loop rather than by one more hop
    through the thread pool; the commit or the rollback, and the connection's return to the pool, run in the
    thread pool, shielded from the request's cancellation so that the connection always goes back."""
    session = request_session(request)
    session.begin()
    try:
        yield session
    except BaseException:
        await _in_thread(_roll_back, session)
        raise
    await _in_thread(_commit, session)


def request_session(request: Request) -> Session:
    """A session for the request, its audit rows from the client's address (no I/O yet)."""
    session = state_of(request).sessions()
    set_origin(session, client_address(request))
    return session


def _commit(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()


def _roll_back(session: Session) -> None:
    session.close()  # rolls the transaction back


async def _in_thread(end: Callable[[Session], None], session: Session) -> None:
    # As FastAPI ends a sync dependency: shielded, and with a limiter of its own, so that ending a request never
    # waits for a free worker thread (which might all be waiting for a connection this one would give back).
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(end, session, limiter=anyio.CapacityLimiter(1))


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def unauthenticated(message: str = "sign in first: send 'Authorization: Bearer <token>'") -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def current_actor(request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2)]) -> Actor:
    if not token:
        raise unauthenticated()
    try:
        bearer = authenticate_bearer(session, token)
    except AuthError as exc:
        raise unauthenticated(str(exc)) from None
    return bearer_actor(bearer, client_address(request))


def bearer_actor(bearer: Bearer, remote_addr: str | None) -> Actor:
    """The actor of a valid bearer token, calling from ``remote_addr``."""
    return Actor(
        account_id=bearer.account_id,
        username=bearer.username,
        role=bearer.role,
        ats_code=bearer.ats_code,
        gestore_id=bearer.gestore_id,
        practitioner_id=bearer.practitioner_id,
        practitioner_code=bearer.practitioner_code,
        patient_id=bearer.patient_id,
        token_id=bearer.token_id,
        remote_addr=remote_addr,
    )


def actor_of(session: Session, account: Account, token_id: int, remote_addr: str | None) -> Actor:
    """The actor of an account loaded as an object (a browser session's)."""
    code = None
    if account.practitioner_id is not None:
        practitioner = session.get(Practitioner, account.practitioner_id)
        code = practitioner.code if practitioner else None
    return Actor(
        account_id=account.id,
        username=account.username,
        role=account.role,
        ats_code=account.ats_code,
        gestore_id=account.gestore_id,
        practitioner_id=account.practitioner_id,
        practitioner_code=code,
        patient_id=account.patient_id,
        token_id=token_id,
        remote_addr=remote_addr,
    )


ActorDep = Annotated[Actor, Depends(current_actor)]


@dataclass
class Ctx:
    """One request: its session, the signed-in actor and the app's state, with the audit and scope helpers."""

    session: Session
    actor: Actor
    state: AppState

    def audit(
        self,
        action: str,
        entity: str,
        entity_id: object | None = None,
        *,
        patient_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        record(
            self.session,
            actor=self.actor.username,
            action=action,
            entity=entity,
            entity_id=entity_id,
            patient_id=patient_id,
            detail=detail,
        )

    def audit_patients(self, action: str, entity: str, patient_ids: Iterable[int]) -> None:
        """One audit row per patient read (a list, a batch of letters). On PostgreSQL a page's few dozen rows are
        one statement over an array of ids (one round trip, one execution, not one per row); a batch's thousands,
        and everything on SQLite, go by the database's bulk load."""
        at, where = datetime.now(UTC), origin(self.session)
        ids = list(patient_ids)
        if not ids:
            return
        connection = self.session.connection()
        if len(ids) <= SMALL_AUDIT and connection.dialect.name == "postgresql":
            connection.execute(_AUDIT_PAGE, {"at": at, "actor": self.actor.username, "action": action,
                                             "entity": entity, "ids": ids, "addr": where})  # fmt: skip
            return
        columns = ("at", "actor", "action", "entity", "patient_id", "remote_addr")
        rows = ((at, self.actor.username, action, entity, pid, where) for pid in ids)
        bulk_insert(connection, table_of(AuditEvent), columns, rows)

    def patient(self, ref: str) -> tuple[Patient, Episode | None]:
        return visible_patient(self.session, self.actor, ref, self.state.pseudonyms)

    def patient_by_id(self, patient_id: int, what: str) -> tuple[Patient, Episode | None]:
        """The patient behind a pact, plan or batch: 404 naming ``what`` when out of scope."""
        return visible_patient_id(self.session, self.actor, patient_id, shown=what)

    def pseudonym(self, patient: Patient) -> str:
        return self.state.pseudonyms.of(patient)


def requires(permission: Permission) -> Any:
    """A dependency giving the request's :class:`Ctx` once the actor's role holds ``permission`` (else 403)."""

    async def dependency(request: Request, session: SessionDep, actor: ActorDep) -> Ctx:
        # no I/O here: run on the event loop, not as one more hop through the thread pool
        check(actor, permission)
        return Ctx(session, actor, state_of(request))

    return Depends(dependency)
