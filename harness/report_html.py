"""report.html: report.md as one self-contained page, its plots embedded and its tables sortable.

The markdown is converted by markdown-it-py (CommonMark and tables; raw HTML in the markdown is escaped, not passed
through). The page needs no network: the figures are data URIs, the style and the table sorting are inline. Like
report.md it is byte-identical on a re-render of the same store (same figures): no timestamps, nothing ordered by
chance.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path, PurePosixPath

from markdown_it import MarkdownIt
from markdown_it.token import Token

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2, h3, h4 { line-height: 1.2; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
img { max-width: 100%; }
pre { background: #f4f4f4; padding: .6em; overflow-x: auto; }
code { font-size: 90%; }
table { border-collapse: collapse; display: block; overflow-x: auto; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25em .5em; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
"""

# Click a column header to sort its table by that column; click again to reverse. A cell sorts by the number it
# starts with ("20.0 [8.1, 41.6]" by 20.0, "1,234" by 1234), else by its text; empty cells and "–" sort last.
SORT_SCRIPT = """
function sortKey(cell) {
  const text = cell.textContent.trim();
  if (text === "" || text === "\\u2013") return null;
  const number = text.match(/^[+-]?\\d[\\d,]*(\\.\\d+)?/);
  return number ? parseFloat(number[0].replace(/,/g, "")) : text;
}
function compareKeys(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "number") return -1;
  if (typeof b === "number") return 1;
  return a.localeCompare(b);
}
function sortTable(table, header, column) {
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  for (const other of header.parentNode.cells) other.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows, (row, i) => [sortKey(row.cells[column]), i, row]);
  rows.sort(([a, i], [b, j]) => {
    if (a === null || b === null) return (a === null) - (b === null) || i - j;
    return (ascending ? compareKeys(a, b) : compareKeys(b, a)) || i - j;
  });
  for (const [, , row] of rows) body.appendChild(row);
}
for (const table of document.querySelectorAll("table")) {
  if (!table.tHead || !table.tBodies.length) continue;
  Array.from(table.tHead.rows[0].cells).forEach((header, column) => {
    header.title = "sort by this column";
    header.addEventListener("click", () => sortTable(table, header, column));
  });
}
"""


def _converter() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _is_local(target: str) -> bool:
    return bool(target) and ":" not in target and not target.startswith(("/", "#"))


def _data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _localise(tokens: list[Token], base: Path) -> None:
    """Embed each local image that exists as a data URI (one left as a path shows as missing, which the browser
    test catches); point links to another report's report.md at its report.html, written beside it."""
    for token in tokens:
        for child in token.children or []:
            if child.type == "image" and _is_local(src := str(child.attrGet("src"))) and (base / src).is_file():
                child.attrSet("src", _data_uri(base / src))
            elif child.type == "link_open" and _is_local(href := str(child.attrGet("href"))):
                path = PurePosixPath(href)
                if path.name == "report.md":
                    child.attrSet("href", path.with_suffix(".html").as_posix())


def to_html(markdown: str, base: Path) -> str:
    """The page for `markdown` (a report.md's text); local images are read relative to `base`."""
    md = _converter()
    tokens = md.parse(markdown)
    _localise(tokens, base)
    h1 = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h1"]
    title = h1[0] if h1 else "harness report"
    body = md.renderer.render(tokens, md.options, {})
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"{body}<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_report(out: Path, lines: list[str]) -> Path:
    """Write <out>/report.md from its lines and <out>/report.html from that markdown; return report.md's path."""
    text = "\n".join(lines).rstrip() + "\n"
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    (out / "report.html").write_text(to_html(text, out), encoding="utf-8")
    return path
