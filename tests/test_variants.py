"""`--variants` and `--no-train-picks`: a run of exactly lm-eval's work (one template, its gold prompts only), on a
tiny random model as a user runs it; what the store and report then hold, and resuming with other variants."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd

from tests.test_cli import harness

ARGS = ["eval", "--tasks", "rte,cb", "--limit", "6", "--shots", "0,2", "--seeds", "1", "--templates", "lm-eval"]


def _units(out) -> dict[tuple[str, str], dict]:
    with sqlite3.connect(out / "results.db") as db:
        rows = db.execute("select task, unit, info from units where method = 'prompt'").fetchall()
    return {(task, unit): json.loads(info) for task, unit, info in rows}


def test_gold_only_without_train_picks_then_add_variants(tiny_dir, env, tmp_path):
    out = tmp_path / "run"
    model = ["--model", str(tiny_dir), "--out", str(out)]
    run = harness(*ARGS, *model, "--variants", "gold", "--no-train-picks", env=env)
    assert run.returncode == 0, run.stderr
    units = _units(out)
    # per task: lm-eval at k = 0 and k = 2 (one seed), no control, no random labels, no calibration, no train scores
    assert sorted(units) == [
        ("cb", "gold/lm-eval/k0/s0"),
        ("cb", "gold/lm-eval/k2/s0"),
        ("rte", "gold/lm-eval/k0/s0"),
        ("rte", "gold/lm-eval/k2/s0"),
    ]
    assert all(info["variants"] == ["gold"] and "selection" not in info for info in units.values())
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.variant) - {"chance", "majority", "constant"} == {"gold"}
    report = (out / "report.md").read_text()
    assert "| rte | acc | 6 | 50.0 | 50.0 | – | 50.0 [" in report  # chance, best constant, no control, zero-shot
    assert "– (no train scores)" in report

    # calibration is part of a gold unit: asking for it now would mix calibrated and uncalibrated templates
    mixed = harness(*ARGS, *model, "--variants", "gold,calibrated", "--no-train-picks", env=env)
    assert mixed.returncode == 2
    assert mixed.stderr.strip().count("\n") == 0
    assert "without their calibrated variant" in mixed.stderr and "--variants" in mixed.stderr

    # controls and random labels are units of their own, and train picks are added to stored gold units
    more = harness(*ARGS, *model, "--variants", "gold,control,random_labels", env=env)
    assert more.returncode == 0, more.stderr
    units = _units(out)
    assert ("rte", "random_labels/lm-eval/k2/s0") in units and ("cb", "random_labels/lm-eval/k2/s0") in units
    controls = {unit.split("/")[1] for task, unit in units if unit.startswith("control/") and task == "rte"}
    assert len(controls) == 2  # the task file's two controls
    assert all("selection" in units[(t, f"gold/lm-eval/k{k}/s0")] for t in ("rte", "cb") for k in (0, 2))
    said = " ".join(more.stderr.split())  # the console wraps lines
    assert "resuming, 4 of 10 units already stored" in said  # 2 tasks x (2 gold, 2 controls, 1 random labels)
    assert "4 stored prompt units get their train scores" in said


def test_bad_variants_are_one_line_errors(env, tmp_path):
    for value, message in [
        ("gold,calibrate", "unknown variant 'calibrate' (--variants): known are gold, calibrated"),
        ("control", "--variants must include gold"),
        (",", "--variants is empty"),
    ]:
        run = harness(*ARGS, "--variants", value, "--out", str(tmp_path / "x"), env=env)
        assert run.returncode == 2, run.stderr
        assert message in run.stderr and run.stderr.strip().count("\n") == 0, run.stderr
