"""The text of a document, page by page: plain text and Markdown as they are, HTML without its
markup, scripts and styles, PDF through pypdf. Form feeds split a text into pages."""

from __future__ import annotations

import html.parser
import io
import re
from pathlib import PurePath

from retrieval._errors import invalid

TEXT = {".txt", ".text", ".md", ".markdown", ".rst", ".csv", ".json", ".log"}
HTML = {".html", ".htm", ".xhtml"}
PDF = {".pdf"}
SUPPORTED = TEXT | HTML | PDF
_SKIPPED = {"script", "style", "noscript", "template", "svg", "head"}
_BLOCKS = {
    "p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
    "section", "article", "table", "ul", "ol", "pre", "blockquote", "title", "dd", "dt",
}  # fmt: skip


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "title":  # the page's title is worth keeping, the rest of <head> is not
            self._skipping = [t for t in self._skipping if t != "head"]
        elif tag in _SKIPPED:
            self._skipping.append(tag)
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._skipping and self._skipping[-1] == tag:
            self._skipping.pop()
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html(data: bytes) -> list[str]:
    parser = _Text()
    parser.feed(_decode(data))
    parser.close()
    return [re.sub(r"[ \t]*\n\s*", "\n", "".join(parser.parts)).strip()]


def _pdf(data: bytes) -> list[str]:
    import pypdf  # imported when a PDF comes: it is not needed on the request path

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        return [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf's errors are many; any of them means "not a PDF we read"
        raise invalid(f"The PDF could not be read: {type(exc).__name__}.", "file") from None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise invalid("The file is not UTF-8 text.", "file") from None


def extract(filename: str, data: bytes) -> list[str]:
    """The pages of a document, by its file name's extension. Raises 400 for another type or
    a file that does not read as one."""
    suffix = PurePath(filename).suffix.lower()
    if suffix in HTML:
        pages = _html(data)
    elif suffix in PDF:
        pages = _pdf(data)
    elif suffix in TEXT:
        pages = _decode(data).split("\f")
    else:
        known = ", ".join(sorted(SUPPORTED))
        raise invalid(f"Files of type {suffix or '(none)'!r} cannot be searched (known: {known}).")
    return [page.strip() for page in pages]
