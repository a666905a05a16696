"""The printable documents are valid PDFs with the expected Italian text (read back with pypdf)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pypdf
import pytest

from presa.care.calendar import draft_care_plan
from presa.care.documents import (
    LETTERS_PER_PART,
    GestoreContact,
    InvitationLetter,
    PactDocument,
    PactSignatureLine,
    PlanDocument,
    invitation_letter_pdf,
    invitation_letters_pdf,
    pact_pdf,
    plan_pdf,
    write_invitation_letters,
)
from presa.care.pdfjoin import PdfJoiner
from presa.care.pseudonyms import invitation_code, invitation_of_code, pseudonym

KEY = b"k" * 32
COOP = GestoreContact("Cooperativa Salute & Territorio", "gp_cooperative", "Via Roma 1, Milano", "02 123", "c@e.it")
ASST = GestoreContact("ASST Santi Paolo e Carlo", "asst", None, "02 456", None)


def text_of(content: bytes) -> tuple[int, str]:
    assert content.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(content))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def letter(code: str, sex: str = "F") -> InvitationLetter:
    return InvitationLetter("321", "ATS della Città Metropolitana di Milano", date(2026, 3, 2), code, sex, "015146", 1,
                            (COOP, ASST))  # fmt: skip


def test_letters_list_the_gestori_with_contacts_one_letter_per_page() -> None:
    pages, text = text_of(invitation_letters_pdf([letter("1-AAAAAAAA"), letter("2-BBBBBBBB", "M")]))
    assert pages == 2
    assert "ATS della Città Metropolitana di Milano" in text and "2 marzo 2026" in text
    assert "Gentile assistita," in text and "Gentile assistito," in text
    assert "Codice di invito: 1-AAAAAAAA" in text and "Codice di invito: 2-BBBBBBBB" in text
    assert "Cooperativa Salute & Territorio" in text and "Via Roma 1, Milano" in text and "c@e.it" in text
    assert "Azienda Socio-Sanitaria Territoriale" in text and "Telefono: 02 456" in text
    assert "livello 1: fragilità clinica" in text


def cross_references(content: bytes) -> dict[int, int]:
    """Object number → offset, from the PDF's last cross-reference table."""
    start = int(content[content.rindex(b"startxref") + 9 :].split()[0])
    lines = content[start:].split(b"\n")
    assert lines[0] == b"xref"
    size = int(lines[1].split()[1])
    return {number: int(lines[2 + number][:10]) for number in range(1, size)}


class Unseekable(io.RawIOBase):
    """A socket-like sink: write only, no tell or seek."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def test_a_batch_is_joined_part_by_part_into_one_valid_pdf() -> None:
    count = 2 * LETTERS_PER_PART + 3  # three parts, the last one short
    letters = [letter(f"{n}-CODE{n:04d}", "F" if n % 2 else "M") for n in range(1, count + 1)]
    sink = Unseekable()
    assert write_invitation_letters(iter(letters), sink, title="Lettere di invito, lotto 7") == count  # type: ignore[arg-type]
    content = bytes(sink.data)
    reader = pypdf.PdfReader(io.BytesIO(content), strict=True)
    assert len(reader.pages) == count
    for number in (1, LETTERS_PER_PART, LETTERS_PER_PART + 1, count):  # in order, across the parts' seams
        assert f"Codice di invito: {number}-CODE{number:04d}" in reader.pages[number - 1].extract_text()
    assert reader.metadata is not None and reader.metadata.title == "Lettere di invito, lotto 7"
    assert reader.trailer["/Root"]["/Lang"] == "it-IT"
    for number, offset in cross_references(content).items():  # every offset is exact
        assert content[offset:].startswith(b"%d 0 obj" % number), number
    assert content.count(b"/Type /Font") == 2  # Helvetica and its bold, once for the whole batch
    assert len(content) < count * 3_000


def test_letters_drawn_one_by_one_join_into_the_same_pages() -> None:
    parts = [invitation_letter_pdf(letter(f"{n}-AAAAAAAA")) for n in (1, 2, 3)]
    assert text_of(parts[0]) == text_of(invitation_letters_pdf([letter("1-AAAAAAAA")]))
    out = io.BytesIO()
    with PdfJoiner(out, title="t") as joiner:
        for part in parts:
            assert joiner.append(part) == 1
    pages, text = text_of(out.getvalue())
    assert pages == 3 and [f"{n}-AAAAAAAA" in text for n in (1, 2, 3)] == [True] * 3
    with pytest.raises(ValueError, match="no letters to print"):
        invitation_letters_pdf([])
    with pytest.raises(ValueError, match="no pages to write"):
        PdfJoiner(io.BytesIO(), title="t").close()


def test_the_pact_shows_consents_signatures_and_revocation() -> None:
    signed = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    pact = PactDocument("R1", "F", date(1950, 5, 4), COOP, "Maria Rossi", 2, "revoked",
                        frozenset({"care", "reminders_sms"}), signed,
                        (PactSignatureLine("patient", "Anna Bianchi", signed),
                         PactSignatureLine("clinical_manager", "Maria Rossi", signed)),
                        revoked_at=signed, revocation_reason="scelta della paziente")  # fmt: skip
    _, text = text_of(pact_pdf(pact))
    assert "Patto di cura — versione 2" in text and "revocato" in text
    assert "4 maggio 1950" in text and "Maria Rossi" in text
    assert "Anna Bianchi, firmato il 2 marzo 2026, ore 10:00" in text  # Rome time
    lines = text.splitlines()
    assert lines[lines.index("Promemoria degli appuntamenti via SMS") + 1] == "Sì"
    assert lines[lines.index("Telemonitoraggio dei parametri clinici") + 1] == "No"
    assert "Motivo: scelta della paziente" in text


def test_the_plan_is_month_by_month_in_italian() -> None:
    plan = draft_care_plan(["hypertension", "diabetes_type2"], level=2, age=70, sex="F", start=date(2026, 3, 9))
    document = PlanDocument(plan, "R1", "active", "Cooperativa", "Maria Rossi", {"hypertension": "Ipertensione"},
                            {"hypertension": "PDTA ipertensione"})  # fmt: skip
    pages, text = text_of(plan_pdf(document))
    assert pages >= 2
    assert "Il Suo Piano di Assistenza Individuale" in text and "dal 9 marzo 2026 al 8 marzo 2027" in text
    assert "Patologie seguite: diabetes_type2, Ipertensione" in text
    for month in ("Maggio 2026", "Giugno 2026", "Dicembre 2026", "Febbraio 2027"):
        assert month in text
    assert "Visita del medico di medicina generale" in text and "PDTA ipertensione" in text


def test_pseudonyms_and_invitation_codes_are_keyed() -> None:
    assert pseudonym(KEY, "R1") == pseudonym(KEY, "R1") != pseudonym(b"x" * 32, "R1")
    assert pseudonym(KEY, "R1").startswith("ps_") and len(pseudonym(KEY, "R1")) == 23
    code = invitation_code(KEY, 42)
    assert invitation_of_code(KEY, code) == 42 and invitation_of_code(KEY, code.lower()) == 42
    assert invitation_of_code(b"x" * 32, code) is None
    assert invitation_of_code(KEY, "43" + code[2:]) is None
    assert invitation_of_code(KEY, "'; DROP TABLE x; --") is None
