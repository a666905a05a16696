"""The printable documents of the presa in carico, in Italian: invitation letters, the care pact, the patient's plan.

Each function takes plain values (no database) and returns the bytes of a PDF drawn with reportlab's standard
fonts, which cover the accented letters of Italian. The letters of a batch are one PDF, each letter starting on
a new page; :func:`invitation_letters_pdf` with one letter is that patient's own PDF. A batch of any size is
written by :func:`write_invitation_letters`: drawn :data:`LETTERS_PER_PART` letters at a time and joined into the
output as it goes (``presa.care.pdfjoin``), so memory does not grow with the batch.

What goes into each document follows presa's data: the store keeps no names or addresses of patients (only the
pseudonymous ``resident_id``), so a letter is addressed by its invitation code, which the patient shows to the
gestore they choose, and the envelope is addressed by whoever joins the code to the regional registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from io import BytesIO
from itertools import groupby, islice
from typing import BinaryIO
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from presa.care.ical import KIND_IT, PROVIDER_IT
from presa.care.pdfjoin import PdfJoiner
from presa.care.plan import CarePlan, by_day

ITALY = ZoneInfo("Europe/Rome")
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
WEEKDAYS_IT = ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica")
LEVELS_IT = {
    1: "fragilità clinica (quattro o più patologie croniche)",
    2: "cronicità polipatologica (due o tre patologie croniche)",
    3: "cronicità in fase iniziale (una patologia cronica)",
    4: "utente occasionale dei servizi, senza patologie croniche",
    5: "non utente dei servizi, senza patologie croniche",
}
GESTORE_KINDS_IT = {
    "gp_cooperative": "Cooperativa di medici di medicina generale",
    "asst": "Azienda Socio-Sanitaria Territoriale (ASST)",
    "private_accredited": "Struttura sanitaria privata accreditata",
}
SCOPES_IT = {
    "care": "Presa in carico e cura secondo il Piano di Assistenza Individuale (PAI)",
    "data_sharing": "Condivisione dei dati sanitari con gli erogatori della rete del gestore",
    "reminders_sms": "Promemoria degli appuntamenti via SMS",
    "reminders_email": "Promemoria degli appuntamenti via e-mail",
    "telemonitoring": "Telemonitoraggio dei parametri clinici",
    "caregiver_reminders": "Promemoria degli appuntamenti anche al familiare o caregiver indicato",
}
SIGNERS_IT = {
    "patient": "L'assistito/a",
    "legal_representative": "Il/la rappresentante legale",
    "clinical_manager": "Il clinical manager",
}
PACT_STATUS_IT = {
    "draft": "bozza, non ancora firmata",
    "signed": "firmato, in vigore",
    "superseded": "sostituito da una versione successiva",
    "revoked": "revocato",
}
PLAN_STATUS_IT = {"draft": "bozza", "active": "attivo", "completed": "concluso"}
LETTERS_PER_PART = 50
"""Letters drawn as one reportlab document before joining: enough to spread reportlab's fixed cost per document,
few enough that a part weighs a few MB."""
LETTERS_TITLE = "Lettere di invito"


@dataclass(frozen=True, slots=True)
class GestoreContact:
    name: str
    kind: str
    address: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class InvitationLetter:
    """One patient's letter: who sends it, the code to show the gestore, and the gestori of the patient's area."""

    ats_code: str
    ats_name: str
    letter_date: date
    invitation_code: str
    sex: str
    municipality: str | None
    level: int
    gestori: tuple[GestoreContact, ...]


@dataclass(frozen=True, slots=True)
class PactSignatureLine:
    role: str
    name: str
    signed_at: datetime


@dataclass(frozen=True, slots=True)
class PactDocument:
    resident_id: str
    sex: str
    birth_date: date
    gestore: GestoreContact
    clinical_manager: str
    version: int
    status: str
    scopes: frozenset[str]
    drafted_at: datetime
    signatures: tuple[PactSignatureLine, ...]
    revoked_at: datetime | None = None
    revocation_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PlanDocument:
    plan: CarePlan
    resident_id: str
    status: str
    gestore: str | None
    clinical_manager: str | None
    pathology_names: Mapping[str, str]
    pathway_names: Mapping[str, str]


def it_date(day: date) -> str:
    """``3 marzo 2026``."""
    return f"{day.day} {MONTHS_IT[day.month - 1]} {day.year}"


def it_datetime(at: datetime) -> str:
    local = at.astimezone(ITALY)
    return f"{it_date(local.date())}, ore {local:%H:%M}"


# --- invitation letters ----------------------------------------------------------------------------------------


def invitation_letters_pdf(letters: Sequence[InvitationLetter], *, title: str = LETTERS_TITLE) -> bytes:
    """All the letters in one PDF, each on its own pages (for a few letters: a batch goes to a file or a response
    with :func:`write_invitation_letters`)."""
    buffer = BytesIO()
    write_invitation_letters(letters, buffer, title=title)
    return buffer.getvalue()


def write_invitation_letters(letters: Iterable[InvitationLetter], out: BinaryIO, *, title: str = LETTERS_TITLE) -> int:
    """All the letters in one PDF written to ``out``, each on its own pages, in memory bounded by
    :data:`LETTERS_PER_PART` letters whatever their number; how many letters."""
    joiner = PdfJoiner(out, title=title, author="presa", lang="it-IT")
    count = 0
    for part in _parts(letters, LETTERS_PER_PART):
        joiner.append(_letters_part(part, title=title))
        count += len(part)
    if not count:
        raise ValueError("no letters to print")
    joiner.close()
    return count


def invitation_letter_pdf(letter: InvitationLetter, *, title: str = LETTERS_TITLE) -> bytes:
    """One letter as its own PDF (a patient's file; :class:`PdfJoiner` joins such files into the batch's PDF
    without drawing them twice)."""
    return _letters_part((letter,), title=title)


def _parts(letters: Iterable[InvitationLetter], size: int) -> Iterator[tuple[InvitationLetter, ...]]:
    items = iter(letters)
    while part := tuple(islice(items, size)):
        yield part


def _letters_part(letters: Sequence[InvitationLetter], *, title: str) -> bytes:
    story: list[Flowable] = []
    for number, letter in enumerate(letters):
        if number:
            story.append(PageBreak())
        story.extend(_letter(letter))
    return _build(story, title=title)


def _letter(letter: InvitationLetter) -> list[Flowable]:
    s = _styles()
    greeting = "Gentile assistita," if letter.sex == "F" else "Gentile assistito,"
    where = f" del Comune ISTAT {letter.municipality}" if letter.municipality else ""
    level = LEVELS_IT.get(letter.level, f"livello {letter.level}")
    story: list[Flowable] = [
        Paragraph(_e(f"{letter.ats_name} (ATS {letter.ats_code})"), s["heading"]),
        Paragraph(_e(f"Data: {it_date(letter.letter_date)}"), s["right"]),
        Spacer(1, 6 * mm),
        Paragraph("<b>Oggetto: invito alla presa in carico delle persone con patologie croniche</b>", s["body"]),
        Spacer(1, 4 * mm),
        Paragraph(greeting, s["body"]),
        Paragraph(
            _e(
                f"Regione Lombardia offre alle persone con malattie croniche{where} un percorso di cura "
                "organizzato: un unico gestore si prende cura di Lei, prepara ogni anno il Suo Piano di "
                "Assistenza Individuale (PAI) con le visite e gli esami che Le servono, li prenota e La segue "
                "nel tempo. Un medico, il clinical manager, è il Suo riferimento per il piano."
            ),
            s["body"],
        ),
        Paragraph(
            _e(
                f"Dai dati sanitari in possesso dell'ATS Lei rientra nel livello {letter.level}: {level}. "
                "Aderire è gratuito e volontario; il Suo medico di medicina generale resta il Suo medico."
            ),
            s["body"],
        ),
        Paragraph(
            _e(
                "Per aderire scelga uno dei gestori elencati qui sotto e lo contatti: Le fisserà un colloquio in "
                "cui firmerà il Patto di cura. Porti con sé questa lettera, un documento d'identità e la tessera "
                "sanitaria. Al gestore comunichi il codice di invito:"
            ),
            s["body"],
        ),
        Paragraph(f"<b>Codice di invito: {_e(letter.invitation_code)}</b>", s["code"]),
        Paragraph(_e("I gestori della Sua zona"), s["subheading"]),
    ]
    story.append(_gestori_table(letter.gestori))
    story.extend(
        [
            Spacer(1, 4 * mm),
            Paragraph(
                _e(
                    "Se non desidera aderire non deve fare nulla. Per informazioni può rivolgersi al Suo medico di "
                    "medicina generale o agli uffici dell'ATS."
                ),
                s["body"],
            ),
            Spacer(1, 6 * mm),
            Paragraph(_e(f"Cordiali saluti,\n{letter.ats_name}").replace("\n", "<br/>"), s["body"]),
        ]
    )
    return story


def _gestori_table(gestori: Sequence[GestoreContact]) -> Flowable:
    s = _styles()
    rows: list[list[Flowable]] = [
        [Paragraph("<b>Gestore</b>", s["cell"]), Paragraph("<b>Recapiti</b>", s["cell"])],
    ]
    for g in gestori:
        contacts = [
            line
            for line in (
                g.address,
                f"Telefono: {g.phone}" if g.phone else None,
                f"E-mail: {g.email}" if g.email else None,
            )
            if line
        ] or ["Recapiti disponibili presso l'ATS"]
        rows.append(
            [
                Paragraph(f"<b>{_e(g.name)}</b><br/>{_e(GESTORE_KINDS_IT.get(g.kind, g.kind))}", s["cell"]),
                Paragraph("<br/>".join(_e(c) for c in contacts), s["cell"]),
            ]
        )
    table = Table(rows, colWidths=[85 * mm, 85 * mm], repeatRows=1)
    table.setStyle(_grid())
    return table


# --- care pact -------------------------------------------------------------------------------------------------


def pact_pdf(pact: PactDocument) -> bytes:
    """The printable care pact (Patto di cura), with the consent given and the signatures recorded."""
    s = _styles()
    patient = "L'assistita" if pact.sex == "F" else "L'assistito"
    story: list[Flowable] = [
        Paragraph(_e(f"Patto di cura — versione {pact.version}"), s["heading"]),
        Paragraph(_e(f"Stato: {PACT_STATUS_IT.get(pact.status, pact.status)}"), s["body"]),
        Paragraph(_e(f"Redatto il {it_datetime(pact.drafted_at)}"), s["body"]),
        Spacer(1, 4 * mm),
        Paragraph(_e("Le parti"), s["subheading"]),
        Paragraph(
            _e(
                f"{patient} con codice {pact.resident_id}, nato/a il {it_date(pact.birth_date)}, e il gestore "
                f"{pact.gestore.name} ({GESTORE_KINDS_IT.get(pact.gestore.kind, pact.gestore.kind)}), nella "
                f"persona del clinical manager {pact.clinical_manager}."
            ),
            s["body"],
        ),
        Paragraph(
            _e(
                "Con questo patto il gestore si impegna a prendersi cura dell'assistito/a secondo il Piano di "
                "Assistenza Individuale (PAI), a prenotare le prestazioni previste e a seguirne l'andamento; "
                "l'assistito/a si impegna a seguire il piano e a comunicare al gestore ogni cambiamento. Il patto "
                "può essere revocato in ogni momento: dalla revoca nessun trattamento del piano prosegue."
            ),
            s["body"],
        ),
        Paragraph(_e("Consensi espressi"), s["subheading"]),
    ]
    rows = [[Paragraph("<b>Ambito</b>", s["cell"]), Paragraph("<b>Consenso</b>", s["cell"])]]
    for scope, text in SCOPES_IT.items():
        rows.append([Paragraph(_e(text), s["cell"]), Paragraph("Sì" if scope in pact.scopes else "No", s["cell"])])
    consents = Table(rows, colWidths=[140 * mm, 30 * mm])
    consents.setStyle(_grid())
    story.append(consents)
    story.append(Paragraph(_e("Firme"), s["subheading"]))
    if pact.signatures:
        for signature in pact.signatures:
            who = SIGNERS_IT.get(signature.role, signature.role)
            story.append(
                Paragraph(_e(f"{who}: {signature.name}, firmato il {it_datetime(signature.signed_at)}"), s["body"])
            )
    else:
        for role in ("patient", "clinical_manager"):
            story.append(Paragraph(_e(f"{SIGNERS_IT[role]}: ______________________________"), s["body"]))
    if pact.revoked_at is not None:
        story.append(Paragraph(_e("Revoca"), s["subheading"]))
        story.append(
            Paragraph(
                _e(f"Patto revocato il {it_datetime(pact.revoked_at)}. Motivo: {pact.revocation_reason or '-'}."),
                s["body"],
            )
        )
    return _build(story, title=f"Patto di cura v{pact.version}")


# --- the patient's plan ----------------------------------------------------------------------------------------


def plan_pdf(document: PlanDocument) -> bytes:
    """The plan for the patient: what is planned each month, in plain Italian."""
    s = _styles()
    plan = document.plan
    pathologies = ", ".join(document.pathology_names.get(p, p) for p in plan.merged.pathologies)
    story: list[Flowable] = [
        Paragraph("Il Suo Piano di Assistenza Individuale (PAI)", s["heading"]),
        Paragraph(
            _e(
                f"Codice assistito: {document.resident_id} — piano dal {it_date(plan.start)} al "
                f"{it_date(_last_day(plan))}, versione {plan.version} "
                f"({PLAN_STATUS_IT.get(document.status, document.status)})"
            ),
            s["body"],
        ),
    ]
    if document.gestore:
        manager = f", clinical manager {document.clinical_manager}" if document.clinical_manager else ""
        story.append(Paragraph(_e(f"Gestore: {document.gestore}{manager}"), s["body"]))
    story.append(Paragraph(_e(f"Patologie seguite: {pathologies}"), s["body"]))
    story.append(
        Paragraph(
            _e(
                "Qui sotto trova, mese per mese, le visite e gli esami previsti per Lei. Le date sono indicative: "
                "il gestore Le comunicherà giorno, ora e luogo di ogni appuntamento. Gli esami indicati come "
                "preparatori vanno fatti prima della visita a cui serve il risultato."
            ),
            s["body"],
        )
    )
    if plan.merged.generic_follow_up:
        story.append(
            Paragraph(
                _e(
                    "Per alcune patologie il piano segue il controllo generico delle malattie croniche: il Suo "
                    "clinical manager lo completerà."
                ),
                s["body"],
            )
        )
    activities = by_day(plan.activities)
    for (year, month), group in groupby(activities, key=lambda p: (p.day.year, p.day.month)):
        items = list(group)
        block: list[Flowable] = [Paragraph(_e(f"{MONTHS_IT[month - 1].capitalize()} {year}"), s["subheading"])]
        rows = [
            [Paragraph("<b>Giorno</b>", s["cell"]), Paragraph("<b>Che cosa</b>", s["cell"])],
        ]
        for planned in items:
            a = planned.activity
            notes = [KIND_IT[a.kind], f"presso: {PROVIDER_IT[a.provider]}"]
            if a.precedes_visit:
                notes.append("esame preparatorio alla visita")
            if a.every_years > 1:
                notes.append(f"ogni {a.every_years} anni")
            pathways = ", ".join(document.pathway_names.get(p, p) for p in a.pathways)
            rows.append(
                [
                    Paragraph(_e(f"{WEEKDAYS_IT[planned.day.weekday()]} {planned.day.day}"), s["cell"]),
                    Paragraph(
                        f"<b>{_e(a.description_it)}</b><br/>{_e('; '.join(notes))}<br/>"
                        f"<font size=8>{_e('Per: ' + pathways)}</font>",
                        s["cell"],
                    ),
                ]
            )
        table = Table(rows, colWidths=[30 * mm, 140 * mm], repeatRows=1)
        table.setStyle(_grid())
        block.append(table)
        if len(items) <= 8:
            story.append(KeepTogether(block))
        else:
            story.extend(block)
    if not activities:
        story.append(Paragraph("Il piano non contiene attività.", s["body"]))
    return _build(story, title="Piano di Assistenza Individuale")


def _last_day(plan: CarePlan) -> date:
    return date.fromordinal(plan.end.toordinal() - 1)


# --- shared drawing ---------------------------------------------------------------------------------------------


def _e(text: str) -> str:
    """Text made safe for reportlab's paragraph markup."""
    return escape(text)


@cache  # the same styles for every paragraph of every document; the sample sheet costs ~1 ms to build
def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("presa-body", parent=base["BodyText"], fontName="Helvetica", fontSize=10, leading=14)
    return {
        "heading": ParagraphStyle("presa-heading", parent=base["Heading1"], fontName="Helvetica-Bold", fontSize=15),
        "subheading": ParagraphStyle(
            "presa-subheading", parent=base["Heading2"], fontName="Helvetica-Bold", fontSize=12, spaceBefore=8
        ),
        "body": body,
        "right": ParagraphStyle("presa-right", parent=body, alignment=TA_RIGHT),
        "code": ParagraphStyle("presa-code", parent=body, fontSize=13, leading=18, spaceBefore=4, spaceAfter=8),
        "cell": ParagraphStyle("presa-cell", parent=body, fontSize=9, leading=12),
    }


def _grid() -> TableStyle:
    return TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.9, 0.9)),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )


def _build(story: list[Flowable], *, title: str) -> bytes:
    buffer = BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=20 * mm,
        bottomMargin=20 * mm,
        title=title,
        author="presa",
        lang="it-IT",
    )
    document.build(story)
    return buffer.getvalue()
