"""The REST API under ``/api``: one router per domain folder, each with its request and response models."""

from fastapi import APIRouter

from presa.web.api.audit import router as audit
from presa.web.api.auth import router as auth
from presa.web.api.enrolment import router as enrolment
from presa.web.api.followup import router as followup
from presa.web.api.invitations import router as invitations
from presa.web.api.organisations import router as organisations
from presa.web.api.pacts import router as pacts
from presa.web.api.patients import router as patients
from presa.web.api.plans import router as plans

router = APIRouter()
for part in (auth, patients, enrolment, invitations, pacts, plans, followup, organisations, audit):
    router.include_router(part)

__all__ = ["router"]
