"""A patient's own page: what the web application offers patients today (their record is in the API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from presa.care.service.plans import plans_of
from presa.web.access import Permission
from presa.web.pages.core import Page, allowed

router = APIRouter(include_in_schema=False)


@router.get("/me")
def own_page(page: Annotated[Page, allowed(Permission.READ_PATIENTS)]) -> Response:
    if page.me.patient_id is None:
        return page.redirect("/")
    patient, episode = page.ctx.patient(str(page.me.patient_id))
    plans = list(plans_of(page.db, patient.id))
    page.ctx.audit("read", "patient", patient.id, patient_id=patient.id)
    return page.render("me.html", patient=patient, episode=episode, plans=plans)
