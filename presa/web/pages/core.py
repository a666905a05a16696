"""What every page shares: the signed-in browser, the CSRF check, rendering in the user's language, flash messages,
the error pages, and the security headers.

A page request is like an API request (``presa.web.deps``): one session and transaction (:data:`SessionDep`),
committed when the page returns and rolled back when it raises; the account comes from the session cookie instead
of a bearer token, and becomes the same :class:`~presa.web.access.Actor`, so every page decides who sees what through
``presa.web.access`` (403 for a role that may never do it, 404 for a patient outside the scope) and audits through
the same :class:`~presa.web.deps.Ctx`.

Cookies: ``presa_session`` (the session, HttpOnly, SameSite=Lax, Secure unless the page is served over plain HTTP
on the loopback; ``PRESA_COOKIE_SECURE=always`` forces it), ``presa_login`` (the sign-in form's CSRF secret),
``presa_flash`` (the message shown after a redirect, signed), ``presa_lang`` (it or en).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from presa.auth.models import Account, Role, WebSession
from presa.auth.sessions import check_csrf, csrf_token, session_of
from presa.care.pdta import default_templates
from presa.care.store.audit import set_origin
from presa.stratify.catalog import CatalogError, load_catalog
from presa.web.access import Actor, Permission, check
from presa.web.deps import AppState, Ctx, SessionDep, actor_of, client_address, state_of
from presa.web.errors import ApiError
from presa.web.pages import i18n
from presa.web.pages.i18n import Lang

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SESSION_COOKIE = "presa_session"
LOGIN_COOKIE = "presa_login"
FLASH_COOKIE = "presa_flash"
LANG_COOKIE = "presa_lang"
SECURE_VARIABLE = "PRESA_COOKIE_SECURE"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
NAV: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.CLINICIAN: (
        ("/patients", "nav.patients"),
        ("/patients?action=any", "nav.todo"),
        ("/work-list", "nav.worklist"),
    ),
    Role.CASE_MANAGER: (
        ("/patients", "nav.patients"),
        ("/patients?mine=true", "nav.mine"),
        ("/work-list", "nav.worklist"),
        ("/work-list?owner=mine", "nav.my_items"),
        ("/calendar", "nav.calendar"),
    ),
    Role.OPERATOR: (("/patients", "nav.patients"), ("/work-list", "nav.worklist"), ("/calendar", "nav.calendar")),
    Role.GESTORE_ADMIN: (
        ("/gestore", "nav.funnel"),
        ("/patients", "nav.patients"),
        ("/work-list", "nav.worklist"),
        ("/gestore/network", "nav.network"),
        ("/calendar", "nav.calendar"),
        ("/gestore/case-managers", "nav.case_managers"),
    ),
    Role.ATS_ANALYST: (
        ("/ats", "nav.stratification"),
        ("/ats/invitations", "nav.invitations"),
        ("/ats/gestori", "nav.gestori"),
    ),
    Role.PATIENT: (("/me", "nav.me"),),
}
"""The menu of each role: (path, catalogue key)."""
HOME: dict[Role, str] = {
    Role.CLINICIAN: "/patients",
    Role.CASE_MANAGER: "/patients",
    Role.OPERATOR: "/patients",
    Role.GESTORE_ADMIN: "/gestore",
    Role.ATS_ANALYST: "/ats",
    Role.PATIENT: "/me",
}


class SignInRequiredError(Exception):
    """No live session: the browser goes to the sign-in page and comes back to ``next``."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path
        super().__init__(next_path)


# --- rendering ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=len(i18n.LANGUAGES))
def environment(lang: Lang) -> jinja2.Environment:
    """The templates of one language: ``t`` and the formatters are globals, so macros need no render context."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals.update(helpers(lang))
    return env


@lru_cache(maxsize=1)
def pathology_names() -> dict[str, tuple[str, str]]:
    """Italian and English names of the shipped catalog's pathologies, by id (read once)."""
    try:
        return {p.id: (p.name_it, p.name_en) for p in load_catalog().pathologies}
    except CatalogError:
        return {}


@lru_cache(maxsize=1)
def pathway_names() -> dict[str, tuple[str, str]]:
    return {t.id: (t.header.name_it, t.header.name_en) for t in default_templates().templates}


def cookie_secure(request: Request) -> bool:
    if os.environ.get(SECURE_VARIABLE, "auto").strip().lower() == "always":
        return True
    return request.url.scheme == "https" or (request.url.hostname or "") not in LOOPBACK


def sign(key: bytes, purpose: str, value: str) -> str:
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def safe_next(path: str | None, default: str = "/") -> str:
    """A local path to go back to; anything else (another host, a scheme, backslashes) is the default."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 500:
        return default
    parts = urlsplit(path)
    return default if parts.scheme or parts.netloc else path


@dataclass
class Page:
    """One page request: its session and language, and (once signed in) the account, its actor and the context the
    API's helpers take."""

    request: Request
    db: Session
    state: AppState
    lang: Lang
    web: WebSession | None = None
    account: Account | None = None
    actor: Actor | None = None
    flash: dict[str, str] | None = None
    set_cookies: list[tuple[str, str, int | None]] = field(default_factory=list)
    delete_cookies: list[str] = field(default_factory=list)

    @property
    def ctx(self) -> Ctx:
        assert self.actor is not None
        return Ctx(self.db, self.actor, self.state)

    @property
    def me(self) -> Actor:
        assert self.actor is not None
        return self.actor

    def t(self, key: str, **values: object) -> str:
        return i18n.translate(self.lang, key, **values)

    def may(self, permission: Permission | str) -> bool:
        """Whether the role holds the permission (templates name it by its text, e.g. 'sign care pacts')."""
        if self.actor is None:
            return False
        try:
            check(self.actor, Permission(permission))
        except ApiError:
            return False
        return True

    @property
    def csrf(self) -> str:
        assert self.web is not None
        return csrf_token(self.state.key, self.web)

    def pathology(self, pathology_id: str) -> str:
        names = pathology_names().get(pathology_id)
        return names[0 if self.lang == "it" else 1] if names else pathology_id

    def pathway(self, template_id: str) -> str:
        names = pathway_names().get(template_id)
        return names[0 if self.lang == "it" else 1] if names else template_id

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = environment(self.lang).get_template(template).render(page=self, **values)
        response = HTMLResponse(html, status_code=status)
        self.finish(response)
        return response

    def redirect(self, url: str, message: str | None = None, *, kind: str = "ok") -> RedirectResponse:
        response = RedirectResponse(url, status_code=303)
        if message is not None:
            self.set_flash(kind, message)
        self.finish(response)
        return response

    def set_flash(self, kind: str, text: str) -> None:
        payload = json.dumps({"kind": kind, "text": text[:600]}, ensure_ascii=False)
        value = base64.urlsafe_b64encode(payload.encode()).decode()
        self.set_cookies.append((FLASH_COOKIE, value + "." + sign(self.state.key, "flash", value), 120))

    def finish(self, response: Response) -> None:
        secure = cookie_secure(self.request)
        for name in self.delete_cookies:
            response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=secure)
        for name, value, max_age in self.set_cookies:
            response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=secure)


def helpers(lang: Lang) -> dict[str, Any]:
    """What templates call: ``t`` and the formatters, in the page's language."""
    return {
        "t": lambda key, **values: i18n.translate(lang, key, **values),
        "num": lambda value, digits=0: i18n.number(lang, value, digits),
        "pct": lambda fraction, digits=1: i18n.percent(lang, fraction, digits),
        "day": lambda value: i18n.day(lang, value),
        "instant": lambda value: i18n.instant(lang, value),
        "month_name": lambda month: i18n.month_name(lang, month),
        "lang": lang,
        "quote": quote,
        "nav_links": lambda role: NAV.get(role, ()),
    }


def read_flash(request: Request, key: bytes) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or "." not in raw:
        return None
    value, signature = raw.rsplit(".", 1)
    if not hmac.compare_digest(sign(key, "flash", value), signature):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return None
    return {"kind": str(data.get("kind", "ok")), "text": data["text"]}


# --- dependencies ------------------------------------------------------------------------------------------------


def any_page(request: Request, db: SessionDep) -> Page:
    """A page anyone may see (the sign-in form): the session if there is one, the language, the flash message."""
    state = state_of(request)
    set_origin(db, client_address(request))
    if db.get_bind().dialect.name == "postgresql":
        # A page runs a few small queries: PostgreSQL's JIT, which pays off on scans of millions of rows, would
        # spend more compiling them (tens of ms) than running them.
        db.execute(text("SET LOCAL jit = off"))
    page = Page(request, db, state, i18n.language(request.cookies.get(LANG_COOKIE)))
    found = session_of(db, request.cookies.get(SESSION_COOKIE))
    if found is not None:
        page.web, page.account = found
        page.actor = actor_of(db, page.account, page.web.id, client_address(request))
    page.flash = read_flash(request, state.key)
    if page.flash is not None:
        page.delete_cookies.append(FLASH_COOKIE)
    return page


AnyPage = Annotated[Page, Depends(any_page)]


def signed_in(request: Request, page: AnyPage) -> Page:
    if page.actor is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequiredError(target)
    return page


SignedIn = Annotated[Page, Depends(signed_in)]


async def _posted(request: Request, page: SignedIn) -> Page:
    """A signed-in form post: same origin, and the session's CSRF token in the form (else 403)."""
    same_origin(request)
    form = await request.form()
    given = form.get("csrf_token")
    assert page.web is not None
    if not check_csrf(page.state.key, page.web, given if isinstance(given, str) else None):
        raise ApiError(403, "the form has expired or did not come from this site: reload the page and try again")
    return page


Posted = Annotated[Page, Depends(_posted)]


async def _posted_form(request: Request) -> FormData:
    """The posted form, read on the event loop (Starlette keeps it for the request), so that the handlers using it
    are plain functions, run in the thread pool: their database work and password checks never hold up the other
    requests, as they did while the handlers were coroutines."""
    return await request.form()


PostedForm = Annotated[FormData, Depends(_posted_form)]


def same_origin(request: Request) -> None:
    """Refuse a post whose Origin header names another site (browsers send it on every cross-site post)."""
    origin = request.headers.get("origin")
    if origin is None or (origin == "null" and request.url.path == "/login"):
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise ApiError(403, "the form did not come from this site")


def allowed(permission: Permission) -> Any:
    """A signed-in page for the roles that hold ``permission`` (403 page otherwise)."""

    def dependency(page: SignedIn) -> Page:
        check(page.me, permission)
        return page

    return Depends(dependency)


def allowed_post(permission: Permission) -> Any:
    def dependency(page: Posted) -> Page:
        check(page.me, permission)
        return page

    return Depends(dependency)


def form_text(form: Any, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def form_date(form: Any, name: str) -> date | None:
    try:
        return date.fromisoformat(form_text(form, name, 10))
    except ValueError:
        return None


def form_int(form: Any, name: str) -> int | None:
    text = form_text(form, name, 10)
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 2**31 else None


def parse_instant(value: str) -> datetime | None:
    """A ``datetime-local`` value (Italian time) as an aware instant."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=i18n.ITALY) if parsed.tzinfo is None else parsed


# --- error pages and headers ------------------------------------------------------------------------------------


def is_page(request: Request) -> bool:
    path = request.url.path
    return not (path == "/api" or path.startswith("/api/"))


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    """A refusal as a page that says what happened and nothing about any patient."""
    lang = i18n.language(request.cookies.get(LANG_COOKIE))
    key = {401: "401", 403: "403", 404: "404", 409: "409", 413: "413", 422: "422"}.get(status, "500")
    html = (
        environment(lang)
        .get_template("error.html")
        .render(page=None, status=status, kind=key, detail=detail if status in (409, 422) else "")
    )
    return HTMLResponse(html, status_code=status)


def install_error_pages(app: Any) -> None:
    """Keep the API's JSON refusals under /api and answer every other path with a page."""
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = dict(app.exception_handlers)
    for key, json_handler in handlers.items():
        app.exception_handlers[key] = _dispatch(json_handler)

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequiredError)
        return RedirectResponse("/login?next=" + quote(safe_next(exc.next_path), safe="/"), status_code=303)

    app.exception_handlers[SignInRequiredError] = sign_in_first


def _dispatch(
    json_handler: Callable[[Request, Exception], Awaitable[Response]],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        response = await json_handler(request, exc)
        if not is_page(request):
            return response
        detail = ""
        try:
            detail = json.loads(bytes(response.body)).get("detail", "")
        except (ValueError, AttributeError):
            detail = ""
        return error_page(request, response.status_code, str(detail))

    return handler


class PageHeaders:
    """Security headers on every page (not on /api, whose answers are JSON), and the server time it took."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/api" or path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        static = path.startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = {
                    b"content-security-policy": CSP.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"x-frame-options": b"DENY",
                    b"referrer-policy": b"same-origin",
                    b"server-timing": f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode(),
                }
                if not static:
                    extra[b"cache-control"] = b"no-store"
                headers += [(name, value) for name, value in extra.items() if name not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
