"""Signing in and out, changing the password, choosing the language.

The sign-in form has its own CSRF secret (``presa_login`` cookie, checked against an HMAC in the form) since there
is no session yet; a refused or locked-out sign-in is answered, not raised, so that its failure count and audit row
are committed (``presa.auth.sessions``). A new session replaces the browser's old one.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from presa.auth.service import AccountError, AuthError
from presa.auth.sessions import LIFETIME, LockedOutError, change_password_and_reopen, close_session, sign_in
from presa.web.deps import client_address
from presa.web.pages import i18n
from presa.web.pages.core import (
    HOME,
    LANG_COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AnyPage,
    Page,
    Posted,
    PostedForm,
    SignedIn,
    form_text,
    safe_next,
    same_origin,
    sign,
)

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(page: AnyPage) -> Response:
    if page.actor is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(HOME[page.actor.role], status_code=303)


@router.get("/login")
def login_form(page: AnyPage, next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None) -> Response:
    if page.actor is not None:
        return page.redirect(safe_next(next_path, HOME[page.actor.role]))
    return _login(page, next_path)


def _login(page: Page, next_path: str | None, *, error: str | None = None, username: str = "") -> Response:
    secret = page.request.cookies.get(LOGIN_COOKIE) or ""
    if len(secret) < 20:
        secret = secrets.token_urlsafe(24)
        page.set_cookies.append((LOGIN_COOKIE, secret, 3600))
    return page.render(
        "login.html",
        status=401 if error else 200,
        login_token=sign(page.state.key, "login", secret),
        next_path=safe_next(next_path, ""),
        error=error,
        username=username,
    )


@router.post("/login")
def login(request: Request, form: PostedForm, page: AnyPage) -> Response:
    same_origin(request)
    next_path = form_text(form, "next", 500)
    username = form_text(form, "username", 64)
    password = form.get("password")
    secret = request.cookies.get(LOGIN_COOKIE, "")
    given = form_text(form, "login_token", 100)
    if not secret or not hmac.compare_digest(sign(page.state.key, "login", secret), given):
        return _login(page, next_path, error=page.t("login.expired"), username=username)
    if not username or not isinstance(password, str) or not password or len(password) > 1024:
        return _login(page, next_path, error=page.t("login.refused"), username=username)
    try:
        opened = sign_in(
            page.db,
            username,
            password,
            remote_addr=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    except LockedOutError as exc:
        return _login(page, next_path, error=page.t("login.locked", until=i18n.instant(page.lang, exc.until)))
    except AuthError:
        return _login(page, next_path, error=page.t("login.refused"), username=username)
    if page.web is not None and page.actor is not None:  # a new sign-in replaces the browser's old session
        close_session(page.db, page.web, author=page.actor.username)
    page.set_cookies.append((SESSION_COOKIE, opened.cookie, int(LIFETIME.total_seconds())))
    page.delete_cookies.append(LOGIN_COOKIE)
    return page.redirect(safe_next(next_path, HOME[opened.account.role]))


@router.post("/logout")
def logout(page: Posted) -> Response:
    assert page.web is not None
    close_session(page.db, page.web, author=page.me.username)
    page.delete_cookies.append(SESSION_COOKIE)
    return page.redirect("/login", page.t("login.signed_out"))


@router.get("/account/password")
def password_form(page: SignedIn) -> Response:
    return page.render("password.html", error=None)


@router.post("/account/password")
def change_password(request: Request, form: PostedForm, page: Posted) -> Response:
    old, new, again = (form.get(name) for name in ("old", "new", "again"))
    if not all(isinstance(v, str) and 0 < len(v) <= 1024 for v in (old, new, again)):
        return page.render("password.html", status=422, error=page.t("password.missing"))
    assert isinstance(old, str) and isinstance(new, str) and page.web is not None
    if new != again:
        return page.render("password.html", status=422, error=page.t("password.mismatch"))
    try:
        opened = change_password_and_reopen(
            page.db,
            page.web,
            old=old,
            new=new,
            remote_addr=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    except LockedOutError as exc:
        return page.render(
            "password.html", status=401, error=page.t("login.locked", until=i18n.instant(page.lang, exc.until))
        )
    except AuthError:
        return page.render("password.html", status=401, error=page.t("password.wrong"))
    except AccountError as exc:
        return page.render("password.html", status=422, error=page.t("password.weak", reason=str(exc)))
    page.set_cookies.append((SESSION_COOKIE, opened.cookie, int(LIFETIME.total_seconds())))
    return page.redirect(HOME[page.me.role], page.t("password.changed"))


@router.get("/lang/{code}")
def choose_language(
    page: AnyPage, code: str, next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None
) -> Response:
    page.set_cookies.append((LANG_COOKIE, i18n.language(code), 365 * 24 * 3600))
    return page.redirect(safe_next(next_path))
