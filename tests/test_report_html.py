"""report.html: written beside report.md by the same render, self-contained (figures as data URIs, no network),
byte-identical on a re-render, and working in a real headless browser (Chromium): the text shows, every figure
loads, a click on a column header sorts its table."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import render
from harness.report_html import to_html
from tests.test_decompose import _store

ABOUT = "**Pipeline demo**: supports no claim; see [the validity run](../validity/report.md).\n"
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


def _rendered(tmp_path: Path) -> Path:
    """A hand-made store (two tasks, prompted and trained) with an about.md, rendered."""
    _store(tmp_path).close()
    (tmp_path / "about.md").write_text(ABOUT, encoding="utf-8")
    render(tmp_path)
    return tmp_path / "report.html"


def test_html_embeds_every_figure_and_rerenders_byte_identically(tmp_path):
    page = _rendered(tmp_path)
    first = page.read_bytes()
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    figures = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", markdown)
    assert len(figures) >= 2, markdown  # the template spread and the probe's layers at least
    text = first.decode("utf-8")
    embedded = DATA_URI.findall(text)
    # each figure of report.md, in order, is its PNG file's bytes inside the page
    assert [alt for _, alt in embedded] == [alt for alt, _ in figures]
    assert [base64.b64decode(data) for data, _ in embedded] == [(tmp_path / src).read_bytes() for _, src in figures]
    assert "http" not in text and "<link" not in text and 'src="plots/' not in text  # nothing fetched
    assert text.count("<table>") == markdown.count("\n|---") and text.count("<table>") >= 3
    assert 'href="../validity/report.html"' in text  # another report's link points at its page
    assert "<title>harness report</title>" in text
    render(tmp_path)
    assert page.read_bytes() == first


def test_raw_html_in_markdown_is_shown_not_run(tmp_path):
    page = to_html("# t\n\nA <script>alert(1)</script> note.\n\n![gone](plots/missing.png)\n", tmp_path)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<img src="plots/missing.png" alt="gone"' in page  # a missing figure stays a path (and fails to load)


# ---------------------------------------------------------------------------------------------- in a browser
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Appended to a copy of the page: on load, note what a reader would see, then sort the first table by each of the
# columns listed (one click, then a second), reading its first column after each click. The first table whose
# first column is "task" (a report's first screen is a table by model, one row here), else the first table.
CHECK = """<script>
window.addEventListener("load", () => {
  const tables = Array.from(document.querySelectorAll("table"));
  const table = tables.find((t) => t.tHead.rows[0].cells[0].textContent === "task") || tables[0];
  const column = (i) => Array.from(table.tBodies[0].rows, (row) => row.cells[i].textContent);
  const sorts = {};
  for (const i of %s) {
    const header = table.tHead.rows[0].cells[i];
    header.click();
    const first = [column(0), column(i), header.getAttribute("aria-sort")];
    header.click();
    sorts[i] = [first, [column(0), column(i), header.getAttribute("aria-sort")]];
  }
  const check = document.createElement("pre");
  check.id = "check";
  check.textContent = JSON.stringify({
    text: document.body.innerText,
    images: Array.from(document.images, (img) => img.complete && img.naturalWidth > 0),
    sorts: sorts,
  });
  document.body.appendChild(check);
});
</script>
"""


def _browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        reason = f"no headless browser installed (looked for {', '.join(BROWSERS)}; apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return found


def _open(page: Path, columns: list[int], tmp_path: Path) -> dict:
    """Open a copy of `page` in headless Chromium with CHECK appended; what CHECK noted."""
    browser = _browser()
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK % columns + "</body>"), "utf-8")
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="check">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page's check did not run (exit {run.returncode}): {run.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_report_in_a_browser_shows_its_text_and_figures_and_sorts(tmp_path):
    page = _rendered(tmp_path / "report")
    seen = _open(page, [0], tmp_path)
    assert "Pipeline demo: supports no claim; see the validity run." in seen["text"]
    assert "The answer" in seen["text"] and "tiny: a verdict on 1 of 2 tasks" in seen["text"]
    assert len(seen["images"]) >= 2 and all(seen["images"]), seen["images"]
    (tasks, _, first), (reversed_tasks, _, second) = seen["sorts"]["0"]
    assert (tasks, first) == (["rte", "wic"], "ascending")
    assert (reversed_tasks, second) == (["wic", "rte"], "descending")


def test_a_column_sorts_by_the_number_each_cell_starts_with(tmp_path):
    rows = [("a", "20.0 [8.1, 41.6]"), ("b", "–"), ("c", "1,234"), ("d", "-2.5 [-3.0, 1.0]"), ("e", "3.5"), ("f", "x")]
    markdown = "| row | score |\n|---|---|\n" + "".join(f"| {r} | {v} |\n" for r, v in rows)
    page = tmp_path / "report.html"
    page.write_text(to_html(markdown, tmp_path), encoding="utf-8")
    (up, _, _), (down, _, _) = _open(page, [1], tmp_path)["sorts"]["1"]
    # numbers by value, then text; the second click reverses that; the empty mark is last either way
    assert up == ["d", "e", "a", "c", "f", "b"]
    assert down == ["f", "c", "a", "e", "d", "b"]
