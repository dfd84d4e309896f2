"""One self-contained HTML page of a :class:`~fitdiff.report.run_dir.RunContents`.

The page needs nothing beside itself: the style sheet is inline, every image is a ``data:`` URI, each
table's CSV is a ``data:text/csv;base64`` download, and no element links or loads anything outside the
page (links and images in the Markdown documents that point elsewhere are reduced to their text). Text
read from the run directory is escaped: raw HTML in a Markdown document is shown as text, not parsed.

Layout: title and run summary, a table of contents, one section per table (its Markdown document,
its plot, the CSV link), the image grid, then the settings files in ``<pre>`` blocks.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from fitdiff.report.run_dir import IMAGE_TYPES, ReportError, RunContents, TableEntry

__all__ = ["render_report", "render_markdown", "data_uri"]

STYLE = """
:root { color-scheme: light; --fg: #1d2330; --muted: #5b6475; --line: #d9dee7; --stripe: #f4f6fa;
        --accent: #2f5fb3; --bg: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.5;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; margin: 0 0 .25rem; }
h2 { font-size: 1.4rem; margin: 2.25rem 0 .75rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
a { color: var(--accent); }
.meta { color: var(--muted); margin: 0 0 1.5rem; }
nav.toc { background: var(--stripe); border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1.25rem; }
nav.toc ol { margin: .25rem 0; padding-left: 1.25rem; }
section.table ul { color: var(--muted); padding-left: 1.25rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
ul code { word-break: break-all; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .75rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: .35rem .7rem; white-space: nowrap; }
th { background: #e9edf5; font-weight: 600; }
tbody tr:nth-child(even) { background: var(--stripe); }
td:first-child, th:first-child { text-align: left; }
td:not(:first-child) { text-align: right; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.grid figure img { width: 100%; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .3rem; }
.download { display: inline-block; padding: .2rem .7rem; border: 1px solid var(--accent); border-radius: 6px;
            text-decoration: none; font-size: .9rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1rem; }
.grid figure { margin: 0; }
pre { background: var(--stripe); border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem;
      overflow-x: auto; font-size: .85rem; line-height: 1.4; }
@media print { nav.toc, .download { display: none; } main { max-width: none; } }
"""


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>``: the bytes inlined as a URI."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _file_uri(path: Path) -> str:
    """A ``data:`` URI of an image file, its MIME type taken from its suffix."""
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ReportError(f"{path}: not an image the report can embed ({', '.join(IMAGE_TYPES)})")
    return data_uri(_read_bytes(path), mime)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReportError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


class _LocalOnly(Treeprocessor):
    """Reduce links and images that point outside the page to their text (in-page ``#`` links stay)."""

    def run(self, root: ET.Element) -> None:
        for element in root.iter():
            if element.tag == "a" and not element.get("href", "").startswith("#"):
                element.tag = "span"
                element.attrib.clear()
            elif element.tag == "img":
                alt = element.get("alt", "")
                element.tag = "span"
                element.attrib.clear()
                element.text = alt


class _Offline(Extension):
    """No raw HTML (it becomes escaped text) and no references outside the page."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 - the library's name
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_LocalOnly(md), "local_only", 5)  # after the inline step (20)


def render_markdown(text: str) -> str:
    """HTML of a Markdown document (GitHub tables; raw HTML escaped; wide tables scroll sideways)."""
    html = markdown.Markdown(extensions=["tables", _Offline()], output_format="html").convert(text)
    return html.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")


def anchor(name: str, taken: set[str]) -> str:
    """A fresh HTML id for ``name`` (letters, digits, ``-`` and ``_``), recorded in ``taken``."""
    base = "table-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x")
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    taken.add(slug)
    return slug


def _table_section(table: TableEntry, slug: str) -> str:
    csv_uri = data_uri(_read_bytes(table.csv), "text/csv")
    body = render_markdown(_read_bytes(table.markdown).decode("utf-8", errors="replace"))
    parts = [f'<section class="table" id="{slug}">', body]
    if table.plot is not None:
        parts.append(f'<figure><img src="{_file_uri(table.plot)}" alt="{escape(table.title)} plot">'
                     f"<figcaption>{escape(table.plot.name)}</figcaption></figure>")
    parts.append(f'<p><a class="download" download="{escape(table.csv.name)}" href="{csv_uri}">CSV</a> '
                 f"<small>{escape(table.csv.name)}</small></p>")
    parts.append("</section>")
    return "\n".join(parts)


def render_report(contents: RunContents, title: str | None = None) -> str:
    """The whole HTML page (a ``str``) of ``contents``; ``title`` overrides ``contents.title``."""
    title = title or contents.title
    taken = {"contents", "images", "settings"}
    slugs = [anchor(t.name, taken) for t in contents.tables]

    meta = [f"run <code>{escape(str(contents.run_dir))}</code>"]
    if contents.created:
        meta.append(f"created {escape(contents.created)}")
    meta.append(f"{len(contents.tables)} table{'s' if len(contents.tables) != 1 else ''}")

    toc = [f'<li><a href="#{slug}">{escape(t.title)}</a></li>' for t, slug in zip(contents.tables, slugs)]
    if contents.images:
        toc.append('<li><a href="#images">Images</a></li>')
    if contents.settings:
        toc.append('<li><a href="#settings">Settings</a></li>')

    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{" · ".join(meta)}</p>',
        '<nav class="toc" id="contents"><strong>Contents</strong><ol>' + "".join(toc) + "</ol></nav>",
        *(_table_section(t, slug) for t, slug in zip(contents.tables, slugs)),
    ]
    if contents.images:
        figures = [
            f'<figure><img src="{_file_uri(image.path)}" alt="{escape(image.caption)}" loading="lazy">'
            f"<figcaption>{escape(image.caption)}</figcaption></figure>"
            for image in contents.images
        ]
        body.append('<section id="images"><h2>Images</h2><div class="grid">' + "\n".join(figures)
                    + "</div></section>")
    if contents.settings:
        blocks = [f"<h3><code>{escape(name)}</code></h3><pre>"
                  f"{escape(_read_bytes(path).decode('utf-8', errors='replace'))}</pre>"
                  for name, path in contents.settings]
        body.append('<section id="settings"><h2>Settings</h2>' + "\n".join(blocks) + "</section>")

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )
