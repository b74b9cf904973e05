"""One run as several processes (harness/parallel.py, harness/merge.py), on the tiny random model: shards of a
scheduler's array job merged into one store, and the ranks of a torchrun (or `accelerate launch`) job, each store
equal to one process's run of the same command; mismatched shards and bad --shard values refused in one line."""

from __future__ import annotations

import io
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil  # a dependency of peft
import pytest
import torch
from rich.console import Console

from harness.config import EvalConfig
from harness.evaluate import run_eval
from harness.parallel import RANKS_DIR, Part, assign, parse_shard, share
from harness.store import Store
from tests.test_misuse import assert_one_line, run_cli

# One command, as the CLI takes it and as a config: 2 tasks, 46 prompt units of unequal cost (controls and
# random-label units have no calibrated twin or train scores)
ARGS = ["--tasks", "rte,cb", "--limit", "4", "--shots", "0,1", "--seeds", "1"]
TABLES = ("models", "tasks", "units", "records")


def _fields(model: Path, data: Path, out: Path) -> dict:
    return dict(
        models=[str(model)], tasks=["rte", "cb"], limit=4, shots=[0, 1], seeds=1, data_dir=str(data), out=str(out)
    )


def _rows(out: Path) -> dict[str, list[tuple]]:
    """Every row of the store's tables but meta, sorted: what two stores must share to report the same."""
    with sqlite3.connect(out / "results.db") as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}")) for table in TABLES}


def _meta(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "results.db") as conn:
        return sorted(conn.execute("SELECT * FROM meta"))


def _units(out: Path) -> set[tuple]:
    with sqlite3.connect(f"file:{out / 'results.db'}?mode=ro", uri=True) as conn:
        return set(conn.execute("SELECT model, task, method, unit FROM units"))


@contextmanager
def _one_thread():
    """Run in-process at one thread, as torchrun starts each rank (OMP_NUM_THREADS=1): a matmul split over
    another number of threads sums in another order, and the stores are compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single(tiny_dir, superglue_dir, tmp_path_factory) -> Path:
    """The command run by one process: the reference."""
    out = tmp_path_factory.mktemp("single")
    cfg = EvalConfig(**_fields(tiny_dir, superglue_dir, out))
    with _one_thread():
        assert run_eval(cfg, Console(file=io.StringIO()), "one") is not None
    return out


@pytest.fixture(scope="module")
def shards(tiny_dir, superglue_dir, tmp_path_factory) -> list[Path]:
    """The same command as two shards, each into its own folder."""
    folders = []
    for i in (1, 2):
        out = tmp_path_factory.mktemp(f"shard{i}")
        cfg = EvalConfig(**_fields(tiny_dir, superglue_dir, out), shard=Part(i - 1, 2))
        with _one_thread():
            assert run_eval(cfg, Console(file=io.StringIO()), f"shard {i}") is None  # a shard renders no report
        assert not (out / "report.md").exists()
        folders.append(out)
    return folders


def test_assign_is_longest_processing_time_first():
    costs = [5, 3, 3, 2, 2, 1]
    # by decreasing cost, each to the least loaded part: 5->0, 3->1, 3->1 (3 < 5), 2->0 (5 < 6), 2->1, 1->0 (7 < 8)
    assert assign(costs, 2) == [0, 1, 1, 0, 1, 0]
    assert assign(costs, 1) == [0] * 6
    assert assign(costs, 8) == [0, 1, 2, 3, 4, 5]  # more parts than units: some get none
    assert share("abcdef", costs, Part(1, 2)) == ["b", "c", "e"]
    # equal costs in plan order, round robin; every part within the largest cost of the others
    assert assign([1] * 5, 2) == [0, 1, 0, 1, 0]
    uneven = [7, 1, 1, 9, 4, 4, 2, 8, 3, 3, 5, 1]
    loads = [sum(c for c, p in zip(uneven, assign(uneven, 3)) if p == part) for part in range(3)]
    assert sum(loads) == sum(uneven) and max(loads) - min(loads) <= max(uneven), loads


@pytest.mark.parametrize("value", ["0/2", "3/2", "x", "2", "1/0", "-1/2"])
def test_bad_shard_values_are_one_line_errors(value, capsys, monkeypatch, tmp_path):
    with pytest.raises(ValueError):
        parse_shard(value)
    code, _, err = run_cli(["eval", "--shard", value, "--out", str(tmp_path / "run")], capsys, monkeypatch)
    assert_one_line(
        code, err, "--shard", f"expects I/N, shard I of N shards with 1 <= I <= N (e.g. 2/8), not '{value}'"
    )
    assert not (tmp_path / "run").exists()


def test_two_shards_merged_equal_one_run(single, shards, tmp_path, capsys, monkeypatch):
    first, second = (_units(s) for s in shards)
    assert first and second and not first & second and first | second == _units(single)
    merged = tmp_path / "merged"
    code, _, err = run_cli(["merge", str(merged), *map(str, shards)], capsys, monkeypatch)
    assert code == 0, err
    lines = " ".join(err.split())
    assert f"{shards[0]} (shard 1/2): {len(first)} units added" in lines
    assert f"{shards[1]} (shard 2/2): {len(second)} units added" in lines
    assert _rows(merged) == _rows(single)

    code, _, err = run_cli(["report", str(merged)], capsys, monkeypatch)
    assert code == 0, err
    assert (merged / "summary.csv").read_bytes() == (single / "summary.csv").read_bytes()
    report = (merged / "report.md").read_text()
    assert "```\nshard 1\nshard 2\n```" in report  # the commands that produced it (the fixture's names for them)

    # merging again (and a shard twice) changes nothing, metadata included
    meta = _meta(merged)
    code, _, err = run_cli(["merge", str(merged), *map(str, shards), str(shards[0])], capsys, monkeypatch)
    assert code == 0, err
    assert "0 units added" in err and f"{len(first)} units added" not in err
    assert _rows(merged) == _rows(single)
    assert _meta(merged) == meta


def _set_meta(folder: Path, key: str, value) -> None:
    store = Store(folder, create=False)
    store.set_meta(key, value)
    store.close()


def _edit(folder: Path, sql: str, *params) -> None:
    with sqlite3.connect(folder / "results.db") as conn:
        conn.execute(sql, params)


def _other_train_source(folder: Path) -> None:
    _edit(folder, "UPDATE tasks SET info = json_set(info, '$.train_source', 'somewhere else') WHERE task = 'cb'")


def _uncalibrated(folder: Path) -> None:
    """Every gold unit of the shard without its calibrated variant, as if run with --variants gold,control."""
    _edit(folder, "UPDATE units SET info = json_set(info, '$.variants', json('[\"gold\"]')) WHERE unit LIKE 'gold/%'")


FAULTS = {
    "preset": (
        lambda f: _set_meta(f, "presets", {"bitfit": {"max_steps": 5}}),
        "holds bitfit results made with another preset (max_steps differ)",
    ),
    "train source": (_other_train_source, "results with demos from"),
    "calibration": (_uncalibrated, "with their calibrated variant"),
    "design": (lambda f: _set_meta(f, "design", {"design": "sampled", "template_share": 0.5}), "another prompt design"),
    "schema": (lambda f: _set_meta(f, "schema_version", 99), "was written by a newer harness"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_mismatched_shard_is_refused_and_out_left_as_it_was(fault, shards, tmp_path, capsys, monkeypatch):
    merged, bad = tmp_path / "merged", tmp_path / "bad"
    shutil.copytree(shards[1], bad)
    code, _, err = run_cli(["merge", str(merged), str(shards[0])], capsys, monkeypatch)
    assert code == 0, err
    _set_meta(merged, "presets", {"bitfit": {"max_steps": 10}})  # as if shard 1 had run bitfit too
    spoil, words = FAULTS[fault]
    spoil(bad)
    before = (_rows(merged), _meta(merged))
    code, _, err = run_cli(["merge", str(merged), str(bad)], capsys, monkeypatch)
    assert_one_line(code, err, str(bad) if fault != "calibration" else str(merged), words)
    assert (_rows(merged), _meta(merged)) == before


def test_a_shard_of_another_limit_is_refused(shards, tiny_dir, superglue_dir, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    cfg = EvalConfig(**{**_fields(tiny_dir, superglue_dir, other), "limit": 3, "tasks": ["cb"], "shots": [0]})
    run_eval(EvalConfig(**{**cfg.__dict__, "shard": Part(0, 2)}), Console(file=io.StringIO()), "other")
    code, _, err = run_cli(["merge", str(tmp_path / "merged"), str(shards[0]), str(other)], capsys, monkeypatch)
    line = assert_one_line(code, err, str(other), "holds results for another eval set")
    assert "'limit': 4" in line and "'limit': 3" in line and "merge only the shards of one command" in line
    assert _units(tmp_path / "merged") == set()  # refused before anything was added, the good shard too


def test_merge_needs_stores_and_not_itself(shards, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["merge", str(tmp_path / "out"), str(tmp_path / "nothing")], capsys, monkeypatch)
    assert_one_line(code, err, str(tmp_path / "nothing"), "no results store at")
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(["merge", str(shards[0]), str(shards[0])], capsys, monkeypatch)
    assert_one_line(code, err, str(shards[0]), "into itself")


def test_a_run_first_merges_what_a_killed_jobs_ranks_left(single, shards, tiny_dir, superglue_dir, tmp_path):
    """A torchrun job killed mid-run leaves its ranks' private stores in OUT/.ranks; the next run (here one process)
    merges them before it plans, runs only what is missing, and ends as an uninterrupted run."""
    out = tmp_path / "run"
    shutil.copytree(shards[1], out / RANKS_DIR / "1")
    console = io.StringIO()
    with _one_thread():
        run_eval(EvalConfig(**_fields(tiny_dir, superglue_dir, out)), Console(file=console, width=300), "resume")
    text = console.getvalue()
    assert f"{len(_units(shards[1]))} units stored by the other processes of an earlier job merged" in text
    assert f"resuming, {len(_units(shards[1]))} of {len(_units(single))} units already stored" in text
    assert not (out / RANKS_DIR).exists()
    assert _rows(out) == _rows(single)
    assert (out / "summary.csv").read_bytes() == (single / "summary.csv").read_bytes()


# A job whose units are slow to store, so that a kill lands mid-run (run as torchrun's script)
SLOW_UNITS = """
import sys, time
from harness.store import Store
put_unit = Store.put_unit
def slow_put_unit(self, *args, **kwargs):
    put_unit(self, *args, **kwargs)
    time.sleep(0.4)
Store.put_unit = slow_put_unit
from harness.cli import main
sys.argv[0] = "harness"
main()
"""


def _stored(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.Error:  # created but its tables not yet
        return 0


def _kill_tree(pid: int) -> None:
    """kill -9 a launcher and every process under it, as a scheduler ends a job (torchrun starts its workers in
    sessions of their own, so killing its process group would leave them running)."""
    launcher = psutil.Process(pid)
    for process in [*launcher.children(recursive=True), launcher]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    # --standalone: a free port on this machine, so the test never meets another job's rendezvous
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def test_torchrun_ranks_write_what_one_process_does_and_resume_after_kill_9(single, tiny_dir, env, tmp_path):
    out = tmp_path / "job"
    command = ["eval", *ARGS, "--model", str(tiny_dir), "--out", str(out)]
    script = tmp_path / "slow_units.py"
    script.write_text(SLOW_UNITS)
    job = subprocess.Popen(
        _torchrun(str(script), *command),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 400
        while not (_stored(out / "results.db") >= 2 and _stored(out / RANKS_DIR / "1" / "results.db") >= 2):
            assert job.poll() is None, job.stderr.read()
            assert time.monotonic() < deadline, "the job stored no units"
            time.sleep(0.2)
    finally:
        _kill_tree(job.pid)  # the launcher and both ranks, mid-run
        job.wait()
    left = _stored(out / RANKS_DIR / "1" / "results.db")
    assert 2 <= left and _stored(out / "results.db") + left < len(_units(single))

    env = {k: v for k, v in env.items() if k != "HARNESS_NO_PROGRESS"}  # progress lines, one set per rank
    resumed = subprocess.run(_torchrun("-m", "harness", *command), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    text = " ".join(resumed.stderr.split())
    assert "units stored by the other processes of an earlier job merged" in text
    assert "split over 2 processes" in text
    assert "[progress] rank 0 · " in text and "[progress] rank 1 · " in text
    assert text.count("report: ") == 1  # rank 0 renders it
    assert not (out / RANKS_DIR).exists()
    assert _rows(out) == _rows(single)
    assert (out / "summary.csv").read_bytes() == (single / "summary.csv").read_bytes()


def test_accelerate_launch_ranks_write_what_one_process_does(single, tiny_dir, env, tmp_path):
    """`accelerate launch --multi_gpu` starts its processes through torchrun's launcher; on a CPU machine they
    join the same gloo group."""
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate is not installed (torchrun alone is tested)")
    out = tmp_path / "job"
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    run = subprocess.run(
        [*launch, "-m", "harness", "eval", *ARGS, "--model", str(tiny_dir), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "split over 2 processes" in " ".join(run.stderr.split())
    assert (out / "summary.csv").read_bytes() == (single / "summary.csv").read_bytes()
