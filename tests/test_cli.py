"""`harness` as a user runs it (a subprocess), on a tiny random model saved as a local folder: outputs, resume
after an interrupt or a kill, byte-identical re-rendering, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SHARED_DATA

BASE = ["eval", "--tasks", "rte,cb,copa", "--limit", "6", "--shots", "0,1", "--seeds", "2"]


def harness(*args, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_eval_writes_outputs_resumes_and_rerenders(tiny_dir, env, tmp_path):
    out = tmp_path / "run"
    first = harness(*BASE, "--model", str(tiny_dir), "--out", str(out), env=env)
    assert first.returncode == 0, first.stderr
    for name in ("results.db", "summary.csv", "report.md"):
        assert (out / name).is_file()
    plots = sorted((out / "plots").glob("*.png"))
    # one model, prompt only: the gold answer's rank per task, its attempt rate against demos, its ladder and its
    # template spread, one of each, each linked
    kinds = ("gold-rank.png", "attempts-by-shots.png", "ladder.png", "template-spread.png")
    assert sorted(next(k for k in kinds if p.name.endswith(k)) for p in plots) == sorted(kinds)
    report = (out / "report.md").read_text()
    assert all(f"plots/{p.name}" in report and p.stat().st_size > 0 for p in plots)

    summary = pd.read_csv(out / "summary.csv")
    for column in [
        "model",
        "params",
        "task",
        "method",
        "variant",
        "shots",
        "template",
        "seed",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n",
    ]:
        assert column in summary.columns
    assert set(summary.task) == {"rte", "cb", "copa"}
    assert {"gold", "random_labels", "calibrated", "control", "chance", "majority"} <= set(summary.variant)
    acc = summary[
        (summary.metric == "acc") & (summary.template == "lm-eval") & (summary.task == "rte") & (summary.shots == 0)
    ]
    assert len(acc) == 2  # gold and calibrated
    with_ci = summary.dropna(subset=["ci_low"])
    assert len(with_ci) > 0.8 * len(summary.dropna(subset=["value"]))
    assert ((with_ci.ci_low <= with_ci.value + 1e-9) & (with_ci.value <= with_ci.ci_high + 1e-9)).all()
    extremes = summary[summary.template.isin(["min", "max", "spread"])]
    assert len(extremes) > 0 and extremes.ci_low.isna().all()
    macro = summary[(summary.task == "cb") & (summary.metric == "macro_f1")]
    assert len(macro) > 0

    report = (out / "report.md").read_text()
    for task in ("rte", "cb", "copa"):
        assert f"#### {task}" in report

    units, records = _count(out / "results.db", "units"), _count(out / "results.db", "records")
    again = harness(*BASE, "--model", str(tiny_dir), "--out", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert "already stored" in again.stderr
    assert (_count(out / "results.db", "units"), _count(out / "results.db", "records")) == (units, records)

    # gold prompt units carry their train scores (template selection); a store from before they existed gets them
    gold_infos = "SELECT task, unit, info FROM units WHERE method='prompt' AND unit LIKE 'gold/%'"
    with sqlite3.connect(out / "results.db") as conn:
        infos = {(t, u): i for t, u, i in conn.execute(gold_infos)}
        assert infos and all("selection" in json.loads(i) for i in infos.values())
        for (task, unit), info in infos.items():
            stripped = {k: v for k, v in json.loads(info).items() if k != "selection"}
            conn.execute(
                "UPDATE units SET info=? WHERE task=? AND unit=?", (json.dumps(stripped, sort_keys=True), task, unit)
            )
    backfill = harness(*BASE, "--model", str(tiny_dir), "--out", str(out), env=env)
    assert backfill.returncode == 0, backfill.stderr
    assert f"{len(infos)} stored prompt units get their train scores" in " ".join(backfill.stderr.split())
    with sqlite3.connect(out / "results.db") as conn:
        assert {(t, u): i for t, u, i in conn.execute(gold_infos)} == infos
    assert _count(out / "results.db", "records") == records

    before = {p: p.read_bytes() for p in [out / "report.md", out / "summary.csv", *plots]}
    rendered = harness("report", str(out), env=env)
    assert rendered.returncode == 0, rendered.stderr
    for path, content in before.items():
        assert path.read_bytes() == content, path
    assert report.count("Produced by:") == 1 and "--limit 6" in report  # the identical rerun is not listed twice

    # a second, different command into the same store (a subset: all resumed) is listed after the first
    subset = harness(*BASE[:2], "rte", *BASE[3:], "--model", str(tiny_dir), "--out", str(out), env=env)
    assert subset.returncode == 0, subset.stderr
    header = (out / "report.md").read_text().split("Data:")[0]
    assert "Produced by these commands, in order" in header
    assert header.index("--tasks rte,cb,copa") < header.index("--tasks rte ")


SLOW_UNITS = """
import signal, sys, time
# Ctrl-C as at a terminal: a shell starts background jobs with SIGINT ignored, and the child would inherit that
signal.signal(signal.SIGINT, signal.default_int_handler)
from harness.store import Store
put_unit = Store.put_unit
def slow_put_unit(self, *args, **kwargs):
    put_unit(self, *args, **kwargs)
    time.sleep(0.5)
Store.put_unit = slow_put_unit
from harness.cli import main
sys.argv[0] = "harness"
main()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda sig: sig.name)
def test_interrupted_run_resumes_to_the_same_results(tiny_dir, env, tmp_path, sig):
    reference = tmp_path / "reference"
    assert harness(*BASE, "--model", str(tiny_dir), "--out", str(reference), env=env).returncode == 0

    out = tmp_path / "interrupted"
    # The child pauses after each stored unit, so that a busy CPU cannot let it finish before the signal arrives.
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_UNITS, *BASE, "--model", str(tiny_dir), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        db = out / "results.db"
        if db.is_file():
            try:
                if _count(db, "units") >= 3:
                    break
            except sqlite3.OperationalError:
                pass
    assert proc.poll() is None, "the child finished before it could be interrupted"
    proc.send_signal(sig)
    # generous: on a loaded 2-core machine the child can take over a minute to reach the handler
    _, stderr = proc.communicate(timeout=300)
    stored, total = _count(out / "results.db", "units"), _count(reference / "results.db", "units")
    assert 3 <= stored < total
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # Ctrl-C, or SIGTERM as Slurm, Kubernetes and `timeout` send it: one line, no traceback, 128 + signal
        label = "interrupted" if sig == signal.SIGINT else "terminated"
        assert proc.returncode == 128 + sig, stderr
        assert "Traceback" not in stderr
        last = " ".join(stderr.strip().splitlines()[-1].split())
        assert last == (
            f"{label}: {stored} of {total} units of {tiny_dir} are stored in {out / 'results.db'}; "
            "rerun the same command to resume"
        ), stderr

    resumed = harness(*BASE, "--model", str(tiny_dir), "--out", str(out), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert (out / "summary.csv").read_bytes() == (reference / "summary.csv").read_bytes()


def _bad_prompts(tmp_path: Path, text: str, choices: str = '["True", "False"]') -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rte.yaml").write_text(f'templates:\n  - name: mine\n    text: "{text}"\n    choices: {choices}\n')
    return folder


def _bad_data(tmp_path: Path, superglue_dir: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "RTE").mkdir(parents=True)
    lines = (superglue_dir / "RTE" / "val.jsonl").read_text().splitlines()[:5]
    lines[2] = lines[2][:-5]
    (folder / "RTE" / "val.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _data_variant(tmp_path: Path, superglue_dir: Path, name: str) -> Path:
    """RTE data with one fault: a non-UTF-8 byte, a row without its hypothesis, a label outside RTE's, an empty
    val.jsonl, or a folder for it."""
    folder = tmp_path / name
    (folder / "RTE").mkdir(parents=True)
    val = folder / "RTE" / "val.jsonl"
    lines = (superglue_dir / "RTE" / "val.jsonl").read_text().splitlines()[:5]
    if name == "latin1":
        val.write_bytes("\n".join(lines).encode() + b'\n{"premise": "caf\xe9"}\n')
    elif name == "no_field":
        row = json.loads(lines[3])
        del row["hypothesis"]
        lines[3] = json.dumps(row)
        val.write_text("\n".join(lines) + "\n")
    elif name == "bad_label":
        row = json.loads(lines[1])
        row["label"] = "maybe"
        lines[1] = json.dumps(row)
        val.write_text("\n".join(lines) + "\n")
    elif name == "empty_split":
        val.write_text("\n")
    else:
        val.mkdir()
    return folder


BAD_INPUTS = {
    "unknown task": (["--tasks", "rtee"], "unknown task 'rtee'"),
    "unknown method": (["--methods", "magic"], "unknown method 'magic'"),
    "unknown model": (["--model", "nosuchmodel"], "nosuchmodel"),
    "unknown template": (["--templates", "nope"], "unknown template 'nope'"),
    "missing data folder": (["--data-dir", "/nonexistent/superglue"], "data folder not found: /nonexistent/superglue"),
    "missing split": (["--data-dir", "{empty}", "--tasks", "cb"], "cb: no val split"),
    "malformed jsonl": (["--data-dir", "{bad_data}"], "val.jsonl:3: malformed JSON line"),
    "non-UTF-8 data": (["--data-dir", "{latin1}"], "RTE/val.jsonl: not UTF-8 text (byte "),
    "row missing a field": (
        ["--data-dir", "{no_field}"],
        "undefined field ('hypothesis' is undefined) on example 3 ({no_field}/RTE/val.jsonl:4)",
    ),
    "label outside the set": (
        ["--data-dir", "{bad_label}"],
        "RTE/val.jsonl:2: label 'maybe' is not one of rte's labels (entailment, not_entailment)",
    ),
    "empty split": (["--data-dir", "{empty_split}"], "rte: the val split is empty"),
    "folder for a file": (["--data-dir", "{dir_for_file}"], "RTE/val.jsonl: a folder where a file was expected"),
    "suite not a mapping": (["--suite", "{list_suite}"], "list.yaml: a suite needs a 'tasks' list"),
    "template syntax": (["--prompts-dir", "{syntax}"], "rte.yaml: template 'mine' (text): syntax error on line 1"),
    "undefined field": (["--prompts-dir", "{undefined}"], "template 'mine': undefined field ('premis' is undefined)"),
    "empty choices": (["--prompts-dir", "{empty_choices}"], "template 'mine': empty answer choices"),
    "k above train": (["--shots", "0,64"], "--shots 64 is larger than the train set of rte (32 examples)"),
    "bad shots": (["--shots", "0,x"], "--shots expects comma-separated integers"),
    "unwritable out": (["--out", "{file}/sub"], "cannot be written (--out)"),
}


@pytest.fixture(scope="module")
def stored_run(tiny_dir, superglue_dir, tmp_path_factory) -> Path:
    """A finished small run, copied by each bad-input case: a failing rerun must leave it intact."""
    out = tmp_path_factory.mktemp("stored") / "run"
    env = {**os.environ, "HARNESS_DATA_DIR": str(superglue_dir), "HARNESS_NO_PROGRESS": "1"}
    args = ["eval", "--model", str(tiny_dir), "--tasks", "rte", "--limit", "4", "--shots", "0"]
    ok = harness(*args, "--templates", "lm-eval", "--out", str(out), env=env)
    assert ok.returncode == 0, ok.stderr
    return out


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(case, tiny_dir, env, tmp_path, superglue_dir, stored_run):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    records_before = _count(out / "results.db", "records")

    (tmp_path / "a-file").write_text("")
    (tmp_path / "list.yaml").write_text("- rte\n")
    (tmp_path / "empty").mkdir()
    places = {
        "empty": tmp_path / "empty",
        "bad_data": _bad_data(tmp_path, superglue_dir),
        **{
            name: _data_variant(tmp_path, superglue_dir, name)
            for name in ("latin1", "no_field", "bad_label", "empty_split", "dir_for_file")
        },
        "list_suite": tmp_path / "list.yaml",
        "syntax": _bad_prompts(tmp_path / "s", "{{ premise "),
        "undefined": _bad_prompts(tmp_path / "u", "{{ premis }}"),
        "empty_choices": _bad_prompts(tmp_path / "e", "{{ premise }}", "[]"),
        "file": tmp_path / "a-file",
    }
    args, message = BAD_INPUTS[case]
    args, message = [a.format(**places) for a in args], message.format(**places)
    if "--model" not in args:
        args += ["--model", str(tiny_dir)]
    if "--tasks" not in args and "--suite" not in args:
        args += ["--tasks", "rte"]
    if "--out" not in args:
        args += ["--out", str(out)]
    result = harness("eval", "--limit", "4", *args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in " ".join(lines[0].split()), lines[0]
    assert "Traceback" not in result.stderr
    assert _count(out / "results.db", "records") == records_before


STORE_FAULTS = {
    "corrupt record": ("UPDATE records SET payload = '{not json' WHERE rowid = 1", "corrupt stored data in record "),
    "newer schema": (
        "INSERT OR REPLACE INTO meta VALUES ('schema_version', '99')",
        "was written by a newer harness (store schema 99; this version reads up to 1)",
    ),
}


@pytest.mark.parametrize("command", ["report", "eval"])
@pytest.mark.parametrize("fault", sorted(STORE_FAULTS))
def test_bad_store_is_one_line_exit_2_and_left_as_it_was(fault, command, tiny_dir, env, tmp_path, stored_run):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    statement, message = STORE_FAULTS[fault]
    with sqlite3.connect(out / "results.db") as conn:
        conn.execute(statement)
    conn.close()
    before = (out / "results.db").read_bytes()
    args = ["report", str(out)]
    if command == "eval":  # the same command as the stored run: it resumes, and renders the report at the end
        args = ["eval", "--model", str(tiny_dir), "--tasks", "rte", "--limit", "4", "--shots", "0"]
        args += ["--templates", "lm-eval", "--out", str(out)]
    result = harness(*args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    # eval may first say that every unit is stored (the corrupt record is met when the report reads it)
    lines = [" ".join(line.split()) for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and str(out / "results.db") in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    if fault == "newer schema" or command == "report":  # refused before anything is written
        assert (out / "results.db").read_bytes() == before


def test_report_without_store_and_other_commands(env, tmp_path):
    missing = harness("report", str(tmp_path / "nothing"), env=env)
    assert missing.returncode == 2 and "no results store" in missing.stderr
    tasks = harness("tasks", env=env)
    assert tasks.returncode == 0 and "multirc" in tasks.stdout
    shown = harness("prompts", "rte", env=env)
    assert shown.returncode == 0 and "lm-eval" in shown.stdout and "True or False?" in shown.stdout
    models = harness("models", env=env)
    assert models.returncode == 0 and "smollm2-135m" in models.stdout


def test_another_eval_set_in_the_same_folder_is_refused(tiny_dir, env, tmp_path):
    out = tmp_path / "run"
    common = [
        "eval",
        "--model",
        str(tiny_dir),
        "--tasks",
        "rte",
        "--shots",
        "0",
        "--templates",
        "lm-eval",
        "--out",
        str(out),
    ]
    assert harness(*common, "--limit", "4", env=env).returncode == 0
    other = harness(*common, "--limit", "5", env=env)
    assert other.returncode == 2 and "another eval set" in other.stderr
    meta = json.loads(
        sqlite3.connect(out / "results.db").execute("SELECT value FROM meta WHERE key='eval_set'").fetchone()[0]
    )
    assert meta["limit"] == 4
    shutil.rmtree(out)


def test_capability_suites_run_end_to_end_and_rerender(tiny_dir, env, tmp_path):
    """Generated answers (prompt and trained methods), a GPT-3 file and the presidents probe in one store."""
    out = tmp_path / "capability"
    tasks = "add-1d,add-1d-parity,sort-3,presidents" + (
        ",gpt3-two-digit-addition" if (SHARED_DATA / "gpt3-arithmetic").is_dir() else ""
    )
    args = ["eval", "--suite", "arithmetic,sorting,presidents", "--tasks", tasks, "--model", str(tiny_dir)]
    args += ["--methods", "prompt,bitfit,probe", "--limit", "4", "--shots", "0,2", "--seeds", "1"]
    args += ["--set", "bitfit.steps=2", "--set", "bitfit.eval_every=2", "--out", str(out)]
    run = harness(*args, env=env)
    assert run.returncode == 0, run.stderr
    summary = pd.read_csv(out / "summary.csv")
    add = summary[(summary.task == "add-1d") & (summary.template == "mean")]
    assert {"em", "attempt_rate", "gold_logprob"} <= set(add.metric)
    assert set(summary[summary.task == "add-1d"].method) == {"prompt", "bitfit", "baseline"}
    # the parity of the same problems is a class label: there the probe runs, and chance is 50%
    assert set(summary[summary.task == "add-1d-parity"].method) == {"prompt", "bitfit", "probe", "baseline"}
    parity_chance = summary[(summary.task == "add-1d-parity") & (summary.variant == "chance")]
    assert parity_chance[parity_chance.metric == "acc"].value.item() == pytest.approx(0.5, abs=0.05)
    chance = summary[(summary.task == "add-1d") & (summary.variant == "chance")]
    assert list(chance.metric) == ["em"] and list(chance.value) == [0.0]
    with sqlite3.connect(out / "results.db") as conn:
        payloads = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM records WHERE task='sort-3'")]
        presidents = [
            json.loads(p)
            for (p,) in conn.execute("SELECT payload FROM records WHERE task='presidents' ORDER BY example_id")
        ]
    ranks = [p["gold_rank"] for p in presidents]
    names = [p["gold_texts"][0] for p in presidents[:2]]
    assert payloads and all("generated" in p and p["gold_texts"][0][-2:].strip("]").isdigit() for p in payloads)
    assert len(ranks) == 46 and all(r >= 1 for r in ranks)
    report = (out / "report.md").read_text()
    assert "## Presidents" in report and "probe not applicable" in report and "(plots/presidents.png)" in report
    assert (out / "plots" / "presidents.png").is_file()
    # the generated answers' first-token ranks and add-1d-parity's among its two choices, in one figure
    assert "(plots/gold-rank.png)" in report and (out / "plots" / "gold-rank.png").stat().st_size > 1000
    # new stores keep each president's name, for the figure's axis
    assert names == ["George Washington", "John Adams"]
    again = harness("report", str(out), env=env)
    assert again.returncode == 0 and (out / "report.md").read_text() == report
