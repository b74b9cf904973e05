"""Faults a long run meets on a shared machine: a second run started into the same --out (refused while the first
lives, free once it is gone, even after kill -9) and kill -9 at arbitrary points (each rerun resumes, and the end
result is an uninterrupted run's, byte for byte). SIGINT and SIGTERM are in tests/test_cli.py."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.lock import LOCK_NAME, writer_lock
from tests.test_cli import harness

# Holds OUT's writer lock as a live `harness eval` would, until killed.
HOLDER = """
import sys, time
from harness.lock import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_refused_until_the_first_lets_go(tmp_path):
    out = tmp_path / "run"
    with writer_lock(out) as path:
        assert path == out / LOCK_NAME
        assert path.read_text().split()[0] == str(os.getpid())
        # flock conflicts between two opens of the file, within one process as between two
        with pytest.raises(HarnessError) as refused, writer_lock(out):
            pass
        assert re.fullmatch(
            rf"{re.escape(str(out))} is in use by harness pid {os.getpid()} \(started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\); "
            "wait for it or use another --out",
            str(refused.value),
        ), str(refused.value)
    with writer_lock(out):  # released when the block ends; the file stays, naming its last holder
        assert path.read_text().split()[0] == str(os.getpid())


def _one_thread(env: dict) -> dict:
    """One torch thread per child: on two busy cores, oversubscribed threads make these small runs 3x slower."""
    return {**env, "OMP_NUM_THREADS": "1"}


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return " ".join(lines[0].split())


def test_a_live_run_holds_its_out_and_a_killed_one_does_not(tiny_dir, env, tmp_path):
    env, out = _one_thread(env), tmp_path / "run"
    run = ["eval", "--model", str(tiny_dir), "--tasks", "rte", "--limit", "4", "--shots", "0"]
    run += ["--templates", "lm-eval", "--out", str(out)]
    assert harness(*run, env=env).returncode == 0
    transfer = ["transfer", "--model", str(tiny_dir), "--tasks", "add-1d,sub-1d", "--source-n", "8"]
    transfer += ["--target-n", "4", "--seeds", "1", "--limit", "4", "--out", str(out)]

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        db = (out / "results.db").read_bytes()
        for args in (run, transfer):
            refused = harness(*args, env=env)
            assert refused.returncode == 2, refused.stderr
            assert re.fullmatch(
                rf"error: {re.escape(str(out))} is in use by harness pid {holder.pid} \(started [\d: -]+\); "
                "wait for it or use another --out",
                _one_line(refused),
            ), refused.stderr
        assert (out / "results.db").read_bytes() == db  # the refused runs wrote nothing
        assert not (out / "states").exists()
        report = harness("report", str(out), env=env)  # a reader takes no lock
        assert report.returncode == 0, report.stderr
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == -9
    assert (out / LOCK_NAME).read_text().split()[0] == str(holder.pid)  # the dead holder's pid stays in the file
    resumed = harness(*run, env=env)  # but its lock went with its process
    assert resumed.returncode == 0, resumed.stderr
    assert f"all {len(_units(out / 'results.db'))} units already stored" in resumed.stderr


def test_sigterm_stops_a_transfer_as_ctrl_c_does(tiny_dir, tmp_path, monkeypatch, capsys):
    from harness.cli import main
    from harness.transfer import Runner

    out = tmp_path / "transfer"
    args = ["harness", "transfer", "--model", str(tiny_dir), "--tasks", "add-1d,sub-1d", "--source-n", "8"]
    args += ["--target-n", "4", "--source-steps", "2", "--target-steps", "2", "--source-eval-every", "1"]
    args += ["--seeds", "1", "--limit", "4", "--out", str(out)]
    calls, real_unit = [], Runner.run_unit

    def terminated_in_the_third(self, unit):
        calls.append(unit)
        if len(calls) == 3:  # as Slurm, Kubernetes or `timeout` send it, while a unit runs
            os.kill(os.getpid(), signal.SIGTERM)
        real_unit(self, unit)

    monkeypatch.setattr(Runner, "run_unit", terminated_in_the_third)
    monkeypatch.setattr(sys, "argv", args)
    handler = signal.getsignal(signal.SIGTERM)  # main() installs its own; this process keeps pytest's
    try:
        with pytest.raises(SystemExit) as stopped:
            main()
        err = capsys.readouterr().err
        assert stopped.value.code == 143, err
        assert " ".join(err.split()) == (
            f"terminated: 2 of 8 transfer units of {tiny_dir} are stored in {out / 'results.db'}; "
            "rerun the same command to resume"
        )
        assert len(_units(out / "results.db")) == 2
        with pytest.raises(SystemExit) as resumed:
            main()
        err = capsys.readouterr().err
        assert resumed.value.code == 0, err
        assert "resuming, 2 of 8 units already stored" in " ".join(err.split())
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert len(calls) == 3 + 6 and len(_units(out / "results.db")) == 8


# A prompt method and a trained one, small enough for ten kills and reruns on two busy cores
FAULT_RUN = ["eval", "--tasks", "rte", "--methods", "prompt,bitfit", "--limit", "4", "--shots", "0,1", "--seeds", "1"]
FAULT_RUN += ["--templates", "lm-eval", "--train-sizes", "8", "--set", "bitfit.max_steps=3"]


def _units(db: Path) -> list[tuple[str, str, str, str]]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT model, task, method, unit FROM units ORDER BY 1, 2, 3, 4").fetchall()
    except sqlite3.OperationalError:  # the child is creating the tables
        return []


def _holds(out: Path, pid: int) -> bool:
    """Whether process `pid` has taken OUT's writer lock (it writes its pid there once it holds it)."""
    try:
        return (out / LOCK_NAME).read_text().split()[:1] == [str(pid)]
    except FileNotFoundError:
        return False


def test_kill_9_at_ten_random_points_loses_and_duplicates_nothing(tiny_dir, env, tmp_path):
    env, args = _one_thread(env), [*FAULT_RUN, "--model", str(tiny_dir)]
    reference = tmp_path / "reference"
    assert harness(*args, "--out", str(reference), env=env).returncode == 0
    total = _units(reference / "results.db")
    assert len(total) == 7  # gold k0, k1; random labels k1; two controls; bitfit and its control task

    out = tmp_path / "killed"
    rng = random.Random(19)
    kills = []  # (units stored when killed, exit code)
    for _ in range(10):
        # a random point: once the child holds the lock and has stored 0 or 1 more units (all but the last at most:
        # a finished store still has its report to render), a random 0-0.15 s later (a tiny model's unit takes
        # about that on an idle machine: a longer delay lets several units land and the kills miss depths)
        target = min(len(_units(out / "results.db")) + rng.randint(0, 1), len(total) - 1)
        delay = rng.uniform(0.0, 0.15)
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", *args, "--out", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if _holds(out, proc.pid) and len(_units(out / "results.db")) >= target:
                break
            time.sleep(0.05)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        kills.append((len(_units(out / "results.db")), proc.returncode))
    assert sum(code == -9 for _, code in kills) >= 8, kills  # nearly all points hit a live run
    assert len({n for n, code in kills if code == -9 and 0 < n < len(total)}) >= 3, kills  # at several depths

    final = harness(*args, "--out", str(out), env=env)
    assert final.returncode == 0, final.stderr
    assert (out / "summary.csv").read_bytes() == (reference / "summary.csv").read_bytes()
    assert _units(out / "results.db") == total  # the same units, each once (no lost or doubled unit)
    with sqlite3.connect(out / "results.db") as conn, sqlite3.connect(reference / "results.db") as ref:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count = (
            "SELECT method, variant, template, shots, seed, COUNT(*) FROM records "
            "GROUP BY method, variant, template, shots, seed ORDER BY 1, 2, 3, 4, 5"
        )
        assert conn.execute(count).fetchall() == ref.execute(count).fetchall()
