"""The follow-up's settings, validated from ``data/followup.yaml`` (or another file with the same shape)."""

from __future__ import annotations

from datetime import time
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from presa.followup.rules import DeskHours, QuietHours
from presa.yamlfile import read_yaml

DEFAULT_CONFIG_FILE = Path(__file__).parent / "data" / "followup.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeskSettings(_Strict):
    days: tuple[int, ...] = Field(min_length=1)
    opens: time
    closes: time

    @field_validator("days")
    @classmethod
    def _weekdays(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if any(d not in range(7) for d in days):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return days

    def hours(self) -> DeskHours:
        return DeskHours(frozenset(self.days), self.opens, self.closes)


class QuietSettings(_Strict):
    starts: time
    ends: time

    def hours(self) -> QuietHours:
        return QuietHours(self.starts, self.ends)


class WorklistSettings(_Strict):
    due_soon_days: int = Field(ge=1, le=90)
    booking_horizon_days: int = Field(ge=1, le=365)
    overdue_lookback_days: int = Field(ge=1, le=730)
    invited_no_answer_days: int = Field(ge=1, le=365)
    renewal_lead_days: int = Field(ge=1, le=180)
    pact_valid_days: int = Field(ge=30, le=1100)
    overdue_cap_days: int = Field(ge=1, le=730)


class TransitionSettings(_Strict):
    follow_up_working_days: int = Field(ge=1, le=30)
    review_working_days: int = Field(ge=1, le=60)


class ReminderSettings(_Strict):
    booking_lead_days: tuple[int, ...] = Field(min_length=1)
    todo_lead_days: int = Field(ge=1, le=60)
    send_at: time


class FollowupConfig(_Strict):
    desk: DeskSettings
    quiet_hours: QuietSettings
    worklist: WorklistSettings
    transitions: TransitionSettings
    reminders: ReminderSettings


def load_config(path: Path = DEFAULT_CONFIG_FILE) -> FollowupConfig:
    """Read and validate a settings file; an error names the file and the field."""
    raw = read_yaml(path)
    try:
        return FollowupConfig.model_validate(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


@cache
def default_config() -> FollowupConfig:
    return load_config()
