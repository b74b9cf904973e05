"""Every report committed under reports/ is what `harness report` renders from its own results.db, byte for byte:
the numbers in the repository are the stored results, not hand edits. report.html too, but for its embedded figures,
whose bytes depend on the matplotlib version (like plots/): those must be the committed plots/ files."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPORTS = Path(__file__).resolve().parent.parent / "reports"
COMMITTED = sorted(p.parent for p in REPORTS.glob("*/results.db"))
TEXT_OUTPUTS = ("report.md", "summary.csv", "transfer.csv")
# Reports rendered before report.html existed have none; once one is committed, every report must have its page.
HTML_COMMITTED = any((p / "report.html").is_file() for p in COMMITTED)
FIGURE = re.compile(rb"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _masked(page: Path) -> bytes:
    return FIGURE.sub(b"data:image/png;base64,(figure)", page.read_bytes())


def check_html(committed: Path, copy: Path) -> None:
    """The re-rendered page equals the committed one once figures are masked, and the committed page's figures are,
    in order, the committed plots/ files its report.md shows."""
    if not (committed / "report.html").is_file():
        message = f"{committed.name} has no report.html: re-render it (harness report {committed})"
        assert not HTML_COMMITTED, message
        warnings.warn(message, stacklevel=2)
        return
    assert _masked(copy / "report.html") == _masked(committed / "report.html"), f"{committed.name}/report.html differs"
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (committed / "report.md").read_text(encoding="utf-8"))
    embedded = [base64.b64decode(data) for data in FIGURE.findall((committed / "report.html").read_bytes())]
    assert embedded == [(committed / path).read_bytes() for path in shown], f"{committed.name}: figures differ"


def test_reports_are_committed():
    assert len(COMMITTED) >= 5, f"expected the committed reports under {REPORTS}"


@pytest.mark.parametrize("committed", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_report_rerenders_byte_identically(committed, tmp_path):
    copy = tmp_path / committed.name
    copy.mkdir()
    shutil.copy(committed / "results.db", copy / "results.db")
    shutil.copy(committed / "about.md", copy / "about.md")  # every committed report says what it supports
    env = {**os.environ, "HARNESS_NO_PROGRESS": "1", "HARNESS_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-m", "harness", "report", str(copy)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    compared = [name for name in TEXT_OUTPUTS if (committed / name).is_file()]
    assert "report.md" in compared
    for name in compared:
        assert (copy / name).read_bytes() == (committed / name).read_bytes(), f"{committed.name}/{name} differs"
    check_html(committed, copy)
    # the same figures are drawn (their bytes depend on the matplotlib version, so only their names are compared)
    assert sorted(p.name for p in (copy / "plots").glob("*.png")) == sorted(
        p.name for p in (committed / "plots").glob("*.png")
    )
