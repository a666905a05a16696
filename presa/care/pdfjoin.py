"""Many small PDFs joined into one, written as they come, in memory that does not grow with the pages.

reportlab and pypdf's own writer both keep every page of a document in memory until they write it, so a batch of
10,000 letters drawn as one document held them all (about 50 KB each). :class:`PdfJoiner` instead takes each small
PDF as soon as it is drawn, copies the objects its pages need into the output with new numbers, and forgets it;
what it keeps per page is 8 bytes of offset per object and 4 bytes of page number. The catalog, the page tree, the
document information and the cross-reference table are written at the end (the catalog and page tree have fixed
numbers, so pages can point to their parent before it is written).

Fonts are shared: reportlab's standard-font dictionaries are identical in every letter, so each is written once.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from io import BytesIO
from typing import BinaryIO

from pypdf import PdfReader
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    IndirectObject,
    NameObject,
    PdfObject,
    StreamObject,
    create_string_object,
)

CATALOG, PAGES, INFO = 1, 2, 3
HEADER = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
KIDS_PER_WRITE = 1_000
"""Page references and cross-reference lines are written this many at a time, never as one string."""


class PdfJoiner:
    """Append whole PDFs to ``out`` (any binary stream, seekable or not); :meth:`close` writes the trailer."""

    def __init__(self, out: BinaryIO, *, title: str, author: str = "presa", lang: str | None = None) -> None:
        self._out = out
        self._title, self._author, self._lang = title, author, lang
        self._written = 0
        self._offsets = array("Q", [0, 0, 0, 0])  # by object number; 1-3 reserved, filled by close()
        self._pages = array("L")
        self._shared: dict[bytes, int] = {}
        self._closed = False
        self._write(HEADER)

    @property
    def page_count(self) -> int:
        return len(self._pages)

    def append(self, pdf: bytes) -> int:
        """Copy every page of ``pdf`` to the end of the document; how many pages."""
        if self._closed:
            raise ValueError("the joined PDF is already closed")
        reader = PdfReader(BytesIO(pdf))
        numbers: dict[int, int] = {}
        for page in reader.pages:
            if page.indirect_reference is None:
                raise ValueError("a page without an object number cannot be copied")
            self._pages.append(self._copy(page.indirect_reference, numbers, page=True))
        return len(reader.pages)

    def close(self) -> None:
        """Write the page tree, catalog, information, cross-reference table and trailer."""
        if self._closed:
            return
        if not self._pages:
            raise ValueError("no pages to write")
        self._closed = True
        self._object(PAGES, self._page_tree)
        catalog = DictionaryObject(
            {NameObject("/Type"): NameObject("/Catalog"), NameObject("/Pages"): IndirectObject(PAGES, 0, None)}
        )
        if self._lang:
            catalog[NameObject("/Lang")] = create_string_object(self._lang)
        self._object(CATALOG, catalog.write_to_stream)
        self._object(INFO, self._info().write_to_stream)
        self._cross_references()

    def __enter__(self) -> PdfJoiner:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.close()

    # --- copying ---------------------------------------------------------------------------------------------

    def _copy(self, reference: IndirectObject, numbers: dict[int, int], *, page: bool = False) -> int:
        """The new number of ``reference``'s object, copied (with what it refers to) on first sight."""
        if reference.idnum in numbers:
            return numbers[reference.idnum]
        target = reference.get_object()
        if target is None:
            raise ValueError(f"object {reference.idnum} is missing")
        if isinstance(target, StreamObject) and "/Length" in target:
            del target["/Length"]  # rewritten from the data; an indirect length would be copied for nothing
        if page and isinstance(target, DictionaryObject) and "/Parent" in target:
            del target["/Parent"]  # the part's own page tree stays behind; the parent is set after renumbering
        shareable = _shareable(target)
        if shareable is not None and shareable in self._shared:
            numbers[reference.idnum] = self._shared[shareable]
            return numbers[reference.idnum]
        number = self._reserve()
        numbers[reference.idnum] = number
        self._renumber(target, numbers)
        if page and isinstance(target, DictionaryObject):
            target[NameObject("/Parent")] = IndirectObject(PAGES, 0, None)
        self._object(number, target.write_to_stream)
        if shareable is not None:
            self._shared[shareable] = number
        return number

    def _renumber(self, value: PdfObject, numbers: dict[int, int]) -> None:
        """Point every reference inside ``value`` at the copied objects' new numbers (copying them first)."""
        if isinstance(value, DictionaryObject):
            for key, item in list(dict.items(value)):
                value[key] = self._swap(item, numbers)
        elif isinstance(value, ArrayObject):
            for index, item in enumerate(list(value)):
                value[index] = self._swap(item, numbers)

    def _swap(self, item: PdfObject, numbers: dict[int, int]) -> PdfObject:
        if isinstance(item, IndirectObject):
            if item.idnum in numbers:  # a cycle back to an object being copied (e.g. an annotation's /P)
                return IndirectObject(numbers[item.idnum], 0, None)
            return IndirectObject(self._copy(item, numbers), 0, None)
        self._renumber(item, numbers)
        return item

    # --- writing ---------------------------------------------------------------------------------------------

    def _reserve(self) -> int:
        self._offsets.append(0)
        return len(self._offsets) - 1

    def _object(self, number: int, body: Callable[[BytesIO], None]) -> None:
        self._offsets[number] = self._written
        buffer = BytesIO()
        buffer.write(b"%d 0 obj\n" % number)
        body(buffer)
        buffer.write(b"\nendobj\n")
        self._write(buffer.getvalue())

    def _page_tree(self, stream: BytesIO) -> None:
        stream.write(b"<< /Type /Pages /Count %d /Kids [" % len(self._pages))
        for start in range(0, len(self._pages), KIDS_PER_WRITE):
            chunk = self._pages[start : start + KIDS_PER_WRITE]
            stream.write(b"".join(b" %d 0 R" % number for number in chunk))
        stream.write(b" ] >>")

    def _info(self) -> DictionaryObject:
        stamp = datetime.now(UTC).strftime("D:%Y%m%d%H%M%SZ")
        return DictionaryObject(
            {
                NameObject("/Title"): create_string_object(self._title),
                NameObject("/Author"): create_string_object(self._author),
                NameObject("/Producer"): create_string_object("presa (reportlab, pypdf)"),
                NameObject("/CreationDate"): create_string_object(stamp),
            }
        )

    def _cross_references(self) -> None:
        start = self._written
        size = len(self._offsets)
        self._write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
        for first in range(1, size, KIDS_PER_WRITE):
            chunk = self._offsets[first : first + KIDS_PER_WRITE]
            self._write(b"".join(b"%010d 00000 n \n" % offset for offset in chunk))
        identity = hashlib.md5(
            b"%s|%d|%d" % (self._title.encode("utf-8"), len(self._pages), start), usedforsecurity=False
        ).hexdigest()
        self._write(
            b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n"
            % (size, CATALOG, INFO, identity.encode(), identity.encode(), start)
        )

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)


def join_pdfs(parts: Iterable[bytes], out: BinaryIO, *, title: str, lang: str | None = None) -> int:
    """Every page of ``parts``, in order, as one PDF written to ``out``; how many pages."""
    with PdfJoiner(out, title=title, lang=lang) as joiner:
        for part in parts:
            joiner.append(part)
        return joiner.page_count


def _shareable(target: PdfObject) -> bytes | None:
    """The bytes of a font dictionary that refers to nothing else (the same in every part), else None."""
    if not isinstance(target, DictionaryObject) or isinstance(target, StreamObject):
        return None
    if target.get("/Type") != "/Font" or any(isinstance(v, IndirectObject) for v in dict.values(target)):
        return None
    buffer = BytesIO()
    target.write_to_stream(buffer)
    return buffer.getvalue()
