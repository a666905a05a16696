"""What every care service shares: the clock, the errors, fetching a row or failing with its name."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from presa.care.store.models import Base

ITALY = ZoneInfo("Europe/Rome")
M = TypeVar("M", bound=Base)


class CareError(ValueError):
    """A request the care domain refuses, with a message fit for the user."""


class NotFoundError(CareError):
    """No row with that id."""


def now() -> datetime:
    return datetime.now(UTC)


def today_in_italy(at: datetime | None = None) -> date:
    """The calendar day in Italy at ``at`` (now by default): effective dates are Italian days."""
    return (at or now()).astimezone(ITALY).date()


def get(session: Session, model: type[M], key: object, what: str) -> M:
    row = session.get(model, key)
    if row is None:
        raise NotFoundError(f"no {what} {key}")
    return row


def require_text(value: str, what: str) -> str:
    if not value.strip():
        raise CareError(f"{what} must not be empty")
    return value.strip()
