"""iCalendar (RFC 5545) export of a care plan, written here so that presa needs no calendar library.

One ``VEVENT`` per planned activity, as an all-day event (``DTSTART;VALUE=DATE``): the plan fixes the day, the
booking fixes the hour later. ``UID`` is the activity id qualified by a calendar id the caller chooses (a
pseudonymous patient id, for instance), so a newer version of the plan updates the same events instead of
adding copies; ``SEQUENCE`` is the plan version counted from 0. Text is escaped (RFC 5545 3.3.11), lines end with CRLF
and are folded at 75 octets without splitting a UTF-8 character (3.1). The RFC:
https://www.rfc-editor.org/rfc/rfc5545 - 3.1 content lines and folding, 3.3.11 TEXT, 3.6.1 VEVENT, 3.7.3 PRODID,
3.8.4.7 UID, 3.8.7.2 DTSTAMP, 3.8.7.4 SEQUENCE.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from presa.care.pdta import default_templates
from presa.care.plan import CarePlan, PlanActivity, PlannedActivity

PRODID = "-//presa//Piano Assistenziale Individuale//IT"
MAX_LINE_OCTETS = 75
CRLF = "\r\n"

KIND_IT = {
    "gp_visit": "Visita del medico di medicina generale",
    "specialist_visit": "Visita specialistica",
    "lab": "Esame di laboratorio",
    "instrumental": "Esame strumentale",
    "education": "Educazione terapeutica",
}
PROVIDER_IT = {
    "gp": "medico di medicina generale",
    "specialist": "ambulatorio specialistico",
    "laboratory": "laboratorio analisi",
    "imaging": "diagnostica per immagini",
    "nurse": "infermiere",
    "psychologist": "psicologo",
    "rehabilitation": "riabilitazione",
}


def to_ical(
    plan: CarePlan, *, calendar_id: str, stamp: datetime, pathway_names: Mapping[str, str] | None = None
) -> str:
    """The plan as an iCalendar text; ``stamp`` (timezone-aware) is when the export is made."""
    if stamp.tzinfo is None:
        raise ValueError("stamp must be timezone-aware (DTSTAMP is written in UTC)")
    if not calendar_id.strip():
        raise ValueError("calendar_id must name the calendar, so that event UIDs are unique")
    names = pathway_names if pathway_names is not None else default_templates().names_it()
    dtstamp = stamp.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text('Piano assistenziale individuale')}",
    ]
    for planned in plan.activities:
        lines.extend(_event(planned, plan.version, calendar_id, dtstamp, names))
    lines.append("END:VCALENDAR")
    return "".join(fold_line(line) + CRLF for line in lines)


def escape_text(value: str) -> str:
    """A TEXT value with backslash, semicolon, comma and line breaks escaped (RFC 5545 3.3.11)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def fold_line(line: str) -> str:
    """A content line folded so that no physical line exceeds 75 octets, never inside a UTF-8 character."""
    if len(line.encode("utf-8")) <= MAX_LINE_OCTETS:
        return line
    pieces: list[str] = []
    current: list[str] = []
    size, limit = 0, MAX_LINE_OCTETS
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            pieces.append("".join(current))
            # A continuation line starts with one space, which counts towards its 75 octets.
            current, size, limit = [], 0, MAX_LINE_OCTETS - 1
        current.append(char)
        size += width
    pieces.append("".join(current))
    return (CRLF + " ").join(pieces)


def _event(
    planned: PlannedActivity, version: int, calendar_id: str, dtstamp: str, names: Mapping[str, str]
) -> list[str]:
    activity = planned.activity
    return [
        "BEGIN:VEVENT",
        f"UID:{planned.id}.{calendar_id}@presa",
        f"DTSTAMP:{dtstamp}",
        f"DTSTART;VALUE=DATE:{planned.day.strftime('%Y%m%d')}",
        f"SEQUENCE:{version - 1}",
        f"SUMMARY:{escape_text(activity.description_it)}",
        f"DESCRIPTION:{escape_text(_description_it(activity, planned, names))}",
        f"CATEGORIES:{escape_text(KIND_IT[activity.kind])}",
        "TRANSP:TRANSPARENT",
        "END:VEVENT",
    ]


def _description_it(activity: PlanActivity, planned: PlannedActivity, names: Mapping[str, str]) -> str:
    pathways = ", ".join(names.get(p, p) for p in activity.pathways)
    lines = [f"Percorsi (PDTA): {pathways}"]
    if activity.code:
        lines.append(f"Codice prestazione (nomenclatore DPCM 12/01/2017): {activity.code}")
    lines.append(f"Erogatore: {PROVIDER_IT[activity.provider]}")
    if activity.every_years > 1:
        lines.append(f"Da ripetere ogni {activity.every_years} anni: verificare la data dell'ultimo esame.")
    if activity.precedes_visit:
        lines.append("Da eseguire prima della visita di controllo a cui serve il risultato.")
    if planned.origin == "personalised":
        lines.append("Aggiunta dal clinico al piano.")
    return "\n".join(lines)
