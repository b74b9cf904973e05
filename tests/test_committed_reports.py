"""Every report committed under reports/ is what `harness report` renders from its own results.db, byte for byte:
the numbers in the repository are the stored results, not hand edits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPORTS = Path(__file__).resolve().parent.parent / "reports"
COMMITTED = sorted(p.parent for p in REPORTS.glob("*/results.db"))
TEXT_OUTPUTS = ("report.md", "summary.csv", "transfer.csv")


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
    # the same figures are drawn (their bytes depend on the matplotlib version, so only their names are compared)
    assert sorted(p.name for p in (copy / "plots").glob("*.png")) == sorted(
        p.name for p in (committed / "plots").glob("*.png")
    )
