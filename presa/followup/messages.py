"""Reminder texts in Italian, pure: the templates of ``data/templates_it.yaml`` filled for one recipient.

Each template has an e-mail subject and body and an SMS text. Values are substituted with
:class:`string.Template` (``${name}``); a missing value is an error, never an empty hole in a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from string import Template

from presa.followup.rules import ITALY
from presa.yamlfile import read_yaml

TEMPLATES_FILE = Path(__file__).parent / "data" / "templates_it.yaml"
SMS_MAX_CHARS = 160
WEEKDAYS_IT = ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica")
MONTHS_IT = (
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
)


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    name: str
    subject: Template
    email: Template
    sms: Template


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    email: str
    sms: str


@cache
def templates(path: Path = TEMPLATES_FILE) -> dict[str, MessageTemplate]:
    raw = read_yaml(path)
    out = {}
    for name, parts in raw.items():
        missing = {"subject", "email", "sms"} - set(parts)
        if missing:
            raise ValueError(f"{path.name}: template '{name}' lacks {', '.join(sorted(missing))}")
        out[name] = MessageTemplate(name, Template(parts["subject"]), Template(parts["email"]), Template(parts["sms"]))
    return out


def italian_date(day: date) -> str:
    """The date in words, for an e-mail.

    >>> italian_date(date(2026, 3, 9))
    'lunedì 9 marzo 2026'
    """
    return f"{WEEKDAYS_IT[day.weekday()]} {day.day} {MONTHS_IT[day.month - 1]} {day.year}"


def short_date(day: date) -> str:
    """The date for an SMS: ``09/03/2026``."""
    return day.strftime("%d/%m/%Y")


def greeting(name: str | None) -> str:
    return f"Gentile {name.strip()}" if name and name.strip() else "Gentile assistita/o"


def render(
    template: str,
    *,
    name: str | None,
    service: str,
    day: date,
    at: datetime | None,
    place: str,
    gestore: str,
    phone: str,
) -> Rendered:
    """Fill one template; the SMS gets the short date and is cut to 160 characters if a long value overflows."""
    chosen = templates()[template]
    local_time = at.astimezone(ITALY).strftime("%H:%M") if at else ""
    values = {
        "greeting": greeting(name),
        "service": service,
        "time": local_time,
        "place": place,
        "gestore": gestore,
        "phone": phone,
    }
    sms = chosen.sms.substitute(values, day=short_date(day))
    if len(sms) > SMS_MAX_CHARS:
        sms = sms[: SMS_MAX_CHARS - 1] + "…"
    return Rendered(
        subject=chosen.subject.substitute(values, day=italian_date(day)),
        email=chosen.email.substitute(values, day=italian_date(day)),
        sms=sms,
    )
