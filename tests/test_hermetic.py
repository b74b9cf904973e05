"""The test suite itself: independent of the user's environment, and never silently empty under CI."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import os
from tests.conftest import require

def test_needs_a_folder():
    require(os.path.isdir("/nonexistent/shared/data"), "the superglue data folder /nonexistent/shared/data")

def test_sees_no_user_variables():
    assert "HF_HUB_OFFLINE" not in os.environ and "HARNESS_DATA_DIR" not in os.environ
    assert os.environ.get("HARNESS_CACHE") == "/kept"
"""


def _pytest(tmp_path, ci: str) -> subprocess.CompletedProcess:
    test = tmp_path / "test_probe.py"
    test.write_text(PROBE, encoding="utf-8")
    env = {**os.environ, "CI": ci, "HF_HUB_OFFLINE": "1", "HARNESS_DATA_DIR": "/elsewhere", "HARNESS_CACHE": "/kept"}
    env["PYTHONPATH"] = str(REPO)
    # the project's conftest as a plugin: the probe file lies outside tests/, where it would not apply
    command = [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    return subprocess.run(
        command + ["--rootdir", str(tmp_path), str(test)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_missing_folder_fails_under_ci_and_skips_with_its_reason_outside(tmp_path):
    ci = _pytest(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout
    assert "CI: the superglue data folder /nonexistent/shared/data is missing" in ci.stdout
    assert "1 failed, 1 passed" in ci.stdout  # and the user's HF_*/HARNESS_* variables were cleared

    local = _pytest(tmp_path, "")
    assert local.returncode == 0, local.stdout
    assert "SKIPPED" in local.stdout and "the superglue data folder /nonexistent/shared/data is missing" in local.stdout
    assert "1 passed, 1 skipped" in local.stdout
