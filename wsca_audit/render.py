"""One section model, three renderers: what the summary, the HTML report and the model
card show is built once as a :class:`Document` and rendered as plain text, HTML or
Markdown.

A :class:`Document` is a title and a list of :class:`Section`; a section holds
paragraphs, a bulleted list (``items``), a :class:`Table` and :class:`Figure` s. A piece
of text is one run or a tuple of runs: ``str``, :class:`Code` (a name or a path),
:class:`Strong` (emphasis) and :class:`VerdictMark` (a verdict, in its colour). Each
renderer escapes and marks the runs up in its own way, so no markup of one format leaks
into another and no user text (metadata names, reasons, warnings) is read as markup.

Examples
--------
>>> doc = Document("Audit", [Section("Why", items=[(Code("site"), ": ", Strong("flagged"))])])
>>> print(render_text(doc))
Audit
<BLANKLINE>
why:
  - site: flagged
>>> render_markdown(doc).splitlines()[-1]
'- `site`: **flagged**'
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass, field

from .formatting import html_page, img_tag, text_table
from .verdict import COLOURS, MEANING

__all__ = [
    "Code",
    "Document",
    "Figure",
    "Section",
    "Strong",
    "Table",
    "Text",
    "VerdictMark",
    "plain",
    "render_html",
    "render_markdown",
    "render_text",
]


@dataclass(frozen=True)
class Code:
    """A name or a path: ``code`` in Markdown and HTML, as it is in plain text."""

    text: str


@dataclass(frozen=True)
class Strong:
    """Emphasised text: bold in Markdown and HTML, as it is in plain text."""

    text: str


@dataclass(frozen=True)
class VerdictMark:
    """A verdict's name: bold in Markdown, bold in the verdict's colour in HTML (with its
    meaning as the hover text)."""

    verdict: str

    @property
    def text(self) -> str:
        return self.verdict


Run = str | Code | Strong | VerdictMark
Text = Run | tuple[Run, ...]  # a paragraph, a list item or a table cell


@dataclass(frozen=True)
class Figure:
    """A PNG with its caption; ``path`` is where it lies relative to the document (the
    Markdown links it, the HTML embeds the bytes)."""

    path: str
    caption: str
    png: bytes = field(repr=False)


@dataclass(frozen=True)
class Table:
    """A header row and rows of cells (each cell a :data:`Text`)."""

    head: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]


@dataclass
class Section:
    """One part of a document, rendered in this order: paragraphs, items, table, figures.

    Attributes
    ----------
    title : str
        Its heading ("" for an untitled part, e.g. a report's opening lines).
    key : str
        What other documents pick it by (a card reuses the report's sections).
    accent : str or None
        A verdict: the HTML marks the paragraphs with its colour.
    level : int
        Heading level (2: a section of the document).
    """

    title: str = ""
    paragraphs: list[Text] = field(default_factory=list)
    items: list[Text] = field(default_factory=list)
    table: Table | None = None
    figures: list[Figure] = field(default_factory=list)
    key: str = ""
    accent: str | None = None
    level: int = 2


@dataclass
class Document:
    """A title and its sections."""

    title: str
    sections: list[Section] = field(default_factory=list)

    def get(self, key: str) -> Section | None:
        """The section of that ``key`` (None when the document has none)."""
        return next((s for s in self.sections if s.key == key), None)

    def figures(self) -> Iterator[Figure]:
        """Every figure, in document order."""
        for sec in self.sections:
            yield from sec.figures


def _runs(text: Text) -> tuple[Run, ...]:
    return tuple(text) if isinstance(text, tuple) else (text,)


def plain(text: Text) -> str:
    """The text without markup.

    Examples
    --------
    >>> plain((Code("scanner"), ": ", Strong("moves the score"), " by 0.5 sd"))
    'scanner: moves the score by 0.5 sd'
    """
    return "".join(r if isinstance(r, str) else r.text for r in _runs(text))


# --------------------------------------------------------------------------- plain text
def _heading(title: str) -> str:
    """``Why`` -> ``why:``; a leading acronym (``WSCA``) keeps its case."""
    head = title if title[:2].isupper() else title[:1].lower() + title[1:]
    return f"{head}:"


def render_text(doc: Document) -> str:
    """Plain text: the title, then each section (figures are left out).

    A titled section is headed ``title:`` and indented by two spaces; items are ``- ``
    bullets; tables are fixed-width.
    """
    out = [doc.title]
    for i, sec in enumerate(doc.sections):
        if i or sec.title:
            out.append("")
        pad = "  " if sec.title else ""
        if sec.title:
            out.append(_heading(sec.title))
        out += [pad + plain(p) for p in sec.paragraphs]
        out += [f"  - {plain(x)}" for x in sec.items]
        if sec.table is not None:
            rows = [sec.table.head, *[[plain(c) for c in r] for r in sec.table.rows]]
            out += [pad + line for line in text_table(rows)]
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML
def _html_runs(text: Text) -> str:
    out = []
    for r in _runs(text):
        if isinstance(r, str):
            out.append(html.escape(r))
        elif isinstance(r, Code):
            out.append(f"<code>{html.escape(r.text)}</code>")
        elif isinstance(r, VerdictMark):  # its meaning on hover, for a reader without the legend
            colour = COLOURS.get(r.verdict, "#999")
            hint = f" title='{html.escape(MEANING[r.verdict])}'" if r.verdict in MEANING else ""
            out.append(f"<b style='color:{colour}'{hint}>{html.escape(r.verdict)}</b>")
        else:
            out.append(f"<b>{html.escape(r.text)}</b>")
    return "".join(out)


def _html_section(sec: Section) -> list[str]:
    body = []
    if sec.title:
        body.append(f"<h{sec.level}>{html.escape(sec.title)}</h{sec.level}>")
    style = ""
    if sec.accent is not None:
        colour = COLOURS.get(sec.accent, "#999")
        style = f" style='font-size:1.2em;border-left:6px solid {colour};padding:0.4em 0.8em'"
    body += [f"<p{style}>{_html_runs(p)}</p>" for p in sec.paragraphs]
    if sec.items:
        body.append("<ul>" + "".join(f"<li>{_html_runs(x)}</li>" for x in sec.items) + "</ul>")
    if sec.table is not None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in sec.table.head)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_html_runs(c)}</td>" for c in r) + "</tr>"
            for r in sec.table.rows
        )
        body.append(f"<table><tr>{head}</tr>{rows}</table>")
    for fig in sec.figures:
        body.append(
            f"<figure>{img_tag(fig.png, fig.caption)}"
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
        )
    return body


def render_html(doc: Document) -> str:
    """A self-contained HTML page (figures embedded as data URIs; all text escaped)."""
    body = [f"<h1>{html.escape(doc.title)}</h1>"]
    for sec in doc.sections:
        body += _html_section(sec)
    return html_page(doc.title, "\n".join(body))


# --------------------------------------------------------------------------- Markdown
def _md_code(text: str) -> str:
    """A code span that holds any backticks of ``text``."""
    if "`" not in text:
        return f"`{text}`"
    return f"`` {text} ``"


def _md_text(text: str) -> str:
    """Plain text for Markdown: the characters that would start HTML (which the Hugging
    Face Hub renders in a card) become entities; brackets and intervals stay readable."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_runs(text: Text, cell: bool = False) -> str:
    out = []
    for r in _runs(text):
        if isinstance(r, str):
            out.append(_md_text(r))
        elif isinstance(r, Code):
            out.append(_md_code(r.text))
        else:
            out.append(f"**{_md_text(r.text)}**")
    s = " ".join("".join(out).splitlines())  # one line: a list item or a table cell
    return s.replace("|", "\\|") if cell else s


def render_markdown(doc: Document, front_matter: str | None = None) -> str:
    """Markdown (GitHub / Hugging Face flavour), after YAML ``front_matter`` if given;
    figures are linked by their ``path``."""
    out = ["---", front_matter.rstrip(), "---", ""] if front_matter else []
    out += [f"# {_md_text(doc.title)}", ""]
    for sec in doc.sections:
        if sec.title:
            out += [f"{'#' * sec.level} {_md_text(sec.title)}", ""]
        for p in sec.paragraphs:
            out += [_md_runs(p), ""]
        if sec.items:
            out += [f"- {_md_runs(x)}" for x in sec.items] + [""]
        if sec.table is not None:
            out.append("| " + " | ".join(_md_runs(h, cell=True) for h in sec.table.head) + " |")
            out.append("|" + "---|" * len(sec.table.head))
            out += ["| " + " | ".join(_md_runs(c, cell=True) for c in r) + " |"
                    for r in sec.table.rows]  # fmt: skip
            out.append("")
        for fig in sec.figures:
            out += [f"![{_md_text(fig.caption)}]({fig.path})", ""]
    return "\n".join(out)
