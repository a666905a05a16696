"""The web application: server-rendered pages (Jinja2, no front-end build) for GPs, case managers, operators, the
gestore's administrator and the ATS analyst, on the same app, services and access rules as the REST API.

:func:`install` mounts them on the app made by ``presa.web.app.create_app``: the static files under ``/static``,
the pages, the HTML error pages (``/api`` keeps its JSON) and the security headers. See docs/WEB.md.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from presa.web.pages import account, ats, booking, gestore, me, patients, plans, timeline, worklist
from presa.web.pages.core import STATIC, PageHeaders, install_error_pages

router = APIRouter(include_in_schema=False)
for part in (account, patients, plans, gestore, ats, me, worklist, timeline, booking):
    router.include_router(part.router)


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)
    install_error_pages(app)
    app.add_middleware(PageHeaders)


__all__ = ["install", "router"]
