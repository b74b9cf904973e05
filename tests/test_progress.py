"""Progress where stderr is not a terminal: plain lines at a fixed interval and at the end, never a silent bar."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from harness.progress import PlainProgress, progress
from tests.test_cli import harness

LINE = re.compile(r"^\[progress\] (.+): (\d+)/(\d+) (\w+), elapsed \d+:\d\d:\d\d, eta (\d+:\d\d:\d\d|–)$")


def test_plain_lines_come_at_the_interval_and_at_the_end():
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    assert not console.is_terminal
    bar = progress(console, "steps")
    assert isinstance(bar, PlainProgress)
    bar.interval = 0.2
    with bar:
        job = bar.add_task("tiny · rte", total=10)
        bar.advance(job, 4)
        time.sleep(0.5)  # two ticks
        bar.update(job, description="tiny · cb")
        bar.advance(job, 6)
    lines = buffer.getvalue().splitlines()
    assert len(lines) >= 3
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert parsed[0].group(1, 2, 3, 4) == ("tiny · rte", "4", "10", "steps") and parsed[0].group(5) != "–"
    assert parsed[-1].group(1, 2, 3) == ("tiny · cb", "10", "10") and parsed[-1].group(5) == "0:00:00"


def test_no_progress_variable_silences_it():
    import os

    os.environ["HARNESS_NO_PROGRESS"] = "1"  # the autouse fixture clears it after the test
    assert not isinstance(progress(Console(file=io.StringIO()), "steps"), PlainProgress)


def test_a_run_into_a_log_file_prints_progress_lines(tiny_dir, env, tmp_path):
    env = {k: v for k, v in env.items() if k != "HARNESS_NO_PROGRESS"}
    args = ["eval", "--model", str(tiny_dir), "--tasks", "rte", "--limit", "4", "--shots", "0", "--templates"]
    result = harness(*args, "lm-eval", "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 0, result.stderr
    lines = [m for m in map(LINE.match, result.stderr.splitlines()) if m]
    assert lines, result.stderr
    done, total = lines[-1].group(2, 3)
    assert done == total and int(total) > 0 and lines[-1].group(4) == "steps"
