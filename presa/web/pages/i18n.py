"""The pages' words in Italian (the default) and English: one YAML catalogue per language in ``presa/web/locales``,
flat dotted keys, ``{name}`` placeholders; plus the Italian and English ways of writing numbers and dates.

A key missing from a catalogue is a bug that ``tests/test_web_pages.py`` catches (both catalogues hold the same
keys, and every key the templates and pages use exists); at run time it shows as the key itself, never as an error.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from presa.yamlfile import read_yaml

LOCALES = Path(__file__).resolve().parent.parent / "locales"
Lang = Literal["it", "en"]
LANGUAGES: tuple[Lang, ...] = ("it", "en")
DEFAULT: Lang = "it"
ITALY = ZoneInfo("Europe/Rome")
MONTHS = {
    "it": (
        "gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno",
        "luglio", "agosto", "settembre", "ottobre", "novembre", "dicembre",
    ),
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
}  # fmt: skip


def language(value: str | None) -> Lang:
    """The language a cookie or a query names; Italian for anything else."""
    return "en" if value == "en" else "it"


@cache
def catalogue(lang: Lang) -> dict[str, str]:
    raw = read_yaml(LOCALES / f"{lang}.yaml")
    flat: dict[str, str] = {}
    _flatten(raw, "", flat)
    return flat


def _flatten(node: object, prefix: str, into: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}." if not isinstance(value, str) else f"{prefix}{key}", into)
        return
    if isinstance(node, str):
        into[prefix] = node
        return
    raise ValueError(f"{LOCALES}: key {prefix!r} holds {type(node).__name__}, not text")


def translate(lang: Lang, key: str, **values: object) -> str:
    text = catalogue(lang).get(key)
    if text is None:
        return key
    return text.format(**values) if values else text


def number(lang: Lang, value: float | int | None, digits: int = 0) -> str:
    """1.234,5 in Italian, 1,234.5 in English."""
    if value is None:
        return "–"
    text = f"{value:,.{digits}f}"
    return text.replace(",", "\u2009").replace(".", ",").replace("\u2009", ".") if lang == "it" else text


def percent(lang: Lang, fraction: float | None, digits: int = 1) -> str:
    return "–" if fraction is None else number(lang, fraction * 100, digits) + "%"


def day(lang: Lang, value: date | None) -> str:
    """02/03/2026 in Italian, 2026-03-02 in English (unambiguous either way)."""
    if value is None:
        return "–"
    return value.strftime("%d/%m/%Y") if lang == "it" else value.isoformat()


def instant(lang: Lang, value: datetime | None) -> str:
    """A moment in Italian time, to the minute."""
    if value is None:
        return "–"
    local = value.astimezone(ITALY)
    return f"{day(lang, local.date())} {local:%H:%M}"


def month_name(lang: Lang, month: int) -> str:
    return MONTHS[lang][month - 1]
