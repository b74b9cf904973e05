"""`harness eval --design sampled` on a tiny random model: each gold unit scores its template's share of the eval
set, controls score every example, the summary and report carry the design's estimates and say so, and a store
refuses to mix designs."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pandas as pd
import pytest

from tests.test_cli import harness

ARGS = ["eval", "--tasks", "rte", "--limit", "12", "--shots", "0", "--seeds", "1", "--no-train-picks"]
ARGS += ["--variants", "gold,calibrated,control"]


def test_sampled_design_scores_a_share_and_says_so(tiny_dir, env, tmp_path):
    out = tmp_path / "run"
    model = ["--model", str(tiny_dir), "--out", str(out)]
    run = harness(*ARGS, *model, "--design", "sampled", "--template-share", "0.25", env=env)
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(out / "results.db") as db:
        rows = db.execute("select variant, template, example_id from records where method = 'prompt'").fetchall()
    gold = [(t, e) for v, t, e in rows if v == "gold"]
    templates = {t for t, _ in gold}
    per_example = Counter(e for _, e in gold)
    assert len(per_example) == 12  # every example is scored under some template
    assert len(gold) == round(0.25 * 12 * len(templates))  # a quarter of the grid's forward passes
    assert max(per_example.values()) - min(per_example.values()) <= 1
    per_template = Counter(t for t, _ in gold)
    assert max(per_template.values()) - min(per_template.values()) <= 1
    assert sorted(gold) == sorted((t, e) for v, t, e in rows if v == "calibrated")
    controls = Counter(t for v, t, _ in rows if v == "control")
    assert controls and set(controls.values()) == {12}

    summary = pd.read_csv(out / "summary.csv")
    gold_rows = summary[(summary.variant == "gold") & (summary.metric == "acc")]
    aggregate = gold_rows.set_index("template")
    assert {"mean", "median", "best"} <= set(aggregate.index)
    assert (aggregate.loc[["mean", "median", "best"], "n"] == 12).all()
    assert aggregate.loc["mean", "ci_low"] <= aggregate.loc["mean", "value"] <= aggregate.loc["mean", "ci_high"]
    per_template_means = aggregate.drop(["mean", "median", "best", "min", "max", "spread"]).value
    assert aggregate.loc["mean", "value"] == pytest.approx(per_template_means.mean(), abs=1e-5)  # csv rounds
    report = " ".join((out / "report.md").read_text().split())
    assert "Prompt design: sampled (--template-share 0.25)" in report
    assert "| rte | acc | 12 |" in report  # the task's numbers are over every example, not a template's share

    # a store keeps one design: the full grid is refused here, in one line
    mixed = harness(*ARGS, *model, env=env)
    assert mixed.returncode == 2
    assert "another prompt design (sampled --template-share 0.25)" in mixed.stderr
    assert mixed.stderr.strip().count("\n") == 0
    # re-rendering reproduces the report
    before = (out / "report.md").read_bytes()
    assert harness("report", str(out), env=env).returncode == 0
    assert (out / "report.md").read_bytes() == before


def test_bad_design_options_are_one_line_errors(env, tmp_path):
    for extra, message in [
        (["--design", "half"], "--design must be full or sampled, not 'half'"),
        (["--design", "sampled", "--template-share", "0"], "--template-share must be in (0, 1], not 0.0"),
        (["--design", "sampled", "--template-share", "1.5"], "--template-share must be in (0, 1], not 1.5"),
    ]:
        run = harness(*ARGS, *extra, "--out", str(tmp_path / "x"), env=env)
        assert run.returncode == 2, run.stderr
        assert message in run.stderr and run.stderr.strip().count("\n") == 0, run.stderr
