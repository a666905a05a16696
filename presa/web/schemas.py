"""Constrained request types: every string bounded and free of control characters, every date in a sane range.

Bodies are strict pydantic models that refuse unknown fields, so a typo in a field name is an error that names
the field, never a silently ignored value.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
)

FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2099, 12, 31)


def clean_text(value: str) -> str:
    """Refuse control characters (NUL included) and text that is not valid Unicode (lone surrogates)."""
    if any((ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("control characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode") from None
    return value


Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(clean_text)
]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(clean_text)
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300), AfterValidator(clean_text)
]
Code = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
AtsCode = Annotated[str, StringConstraints(pattern=r"^32[1-8]$")]
Municipality = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
ServiceCode = Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9.]+$")]
PathologyId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
Phone = Annotated[str, StringConstraints(min_length=3, max_length=40, pattern=r"^[0-9+()/ .-]+$")]
Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=200, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$"),
]


def iso_text(value: object) -> object:
    """Dates and instants come as ISO 8601 text, not as numbers (which pydantic would read as Unix time)."""
    if not isinstance(value, str | date):
        raise ValueError("give a date as text, YYYY-MM-DD (an instant as YYYY-MM-DDTHH:MM:SS+01:00)")
    return value


Day = Annotated[date, BeforeValidator(iso_text), Field(ge=FIRST_DAY, le=LAST_DAY)]
BirthDay = Annotated[date, BeforeValidator(iso_text), Field(ge=date(1880, 1, 1), le=LAST_DAY)]
Instant = Annotated[AwareDatetime, BeforeValidator(iso_text)]
RowId = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
QueryId = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""An id in a query string, which is text by nature."""
Count = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]


class Body(BaseModel):
    """A request body: unknown fields refused; numbers are strict (``"5"`` is not a number), dates are text."""

    model_config = ConfigDict(extra="forbid")


class Message(BaseModel):
    detail: str
