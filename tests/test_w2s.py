"""Weak-to-strong (`harness w2s`): PGR and its verdicts on hand-made arrays, the confidence loss on synthetic data,
an end-to-end run with two tiny random models on a tiny task file that resumes without recomputing, and one-line
errors for bad flags."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from harness.catalog import use_task_dirs
from harness.methods.confidence_loss import confidence_fit_predict, harden
from harness.metrics import Resampler
from harness.w2s_analysis import gap_recovered, verdict
from tests.conftest import make_tiny_lm
from tests.test_misuse import assert_one_line, run_cli
from tests.test_task_files import _write_tasks

N = 200


def _hits(first: int) -> np.ndarray:
    """0/1 correctness: the first `first` of N examples right. Nested sets make paired differences tight."""
    return (np.arange(N) < first).astype(float)


def _gap(weak: int, w2s: int, ceiling: int, gold: np.ndarray | None = None):
    gold = np.arange(N) % 2 if gold is None else gold  # balanced: the best constant answer scores 50%
    return gap_recovered(_hits(weak), _hits(w2s), _hits(ceiling), gold, Resampler([f"e{i}" for i in range(N)]))


def test_pgr_is_the_share_of_the_gap_with_a_paired_interval():
    gap = _gap(weak=120, w2s=160, ceiling=180)  # 60%, 80%, 90%
    assert gap.pgr is not None and gap.why_undefined == ""
    assert gap.pgr.estimate.value == pytest.approx(2 / 3)
    lo, hi = gap.pgr.estimate.ci
    assert 0.5 < lo < 2 / 3 < hi < 0.85  # the 60 gap examples, 40 of them recovered, resampled
    assert gap.constant.value == pytest.approx(0.5) and gap.n == N
    line = verdict(gap)
    assert line.startswith("weak-to-strong recovers 67% [") and "significantly above the weak model" in line
    assert "significantly below the strong ceiling" in line and line.endswith(f"n={N}")


def test_pgr_is_undefined_when_the_ceiling_does_not_beat_the_weak_model_or_the_best_constant():
    same = _gap(weak=150, w2s=170, ceiling=150)
    assert same.pgr is None
    assert "strong ceiling (75.0%) is not significantly above the weak model (75.0%" in same.why_undefined
    assert verdict(same).startswith("PGR undefined: the strong ceiling")
    skewed = (np.arange(N) >= 180).astype(int)  # 90% label 0: answering 0 everywhere scores 90%
    low = _gap(weak=100, w2s=150, ceiling=182, gold=skewed)  # 91% beats the weak model, not the constant
    assert low.pgr is None and "not significantly above the best constant answer (90.0%" in low.why_undefined


def test_pgr_is_negative_when_weak_to_strong_is_worse_than_the_weak_model():
    gap = _gap(weak=120, w2s=100, ceiling=180)
    assert gap.pgr.estimate.value == pytest.approx(-1 / 3)
    assert gap.pgr.estimate.ci[1] < 0
    assert "significantly below the weak model" in verdict(gap)


def test_the_first_screen_counts_tasks_by_whether_pgr_is_defined_and_w2s_beats_the_weak_model(tmp_path):
    from harness.report_w2s import W2SContext, _screen
    from harness.w2s_analysis import TaskW2S

    results = [
        TaskW2S("up", gaps={"w2s": _gap(weak=120, w2s=160, ceiling=180)}),  # +20 points over the weak model
        TaskW2S("flat", gaps={"w2s": _gap(weak=150, w2s=170, ceiling=150)}),  # ceiling = weak: PGR undefined
        TaskW2S("down", gaps={"w2s": _gap(weak=120, w2s=100, ceiling=180)}),  # -10 points
    ]
    screen = _screen(W2SContext(tmp_path, results, {}, [], {}))
    assert screen[0] == "## What the evidence supports"
    row = next(line for line in screen if line.startswith("| w2s |"))
    cells = row.split(" | ")
    assert cells[1] == "3 (n = 200)" and cells[2] == "yes on 2 (up, down); no on 1 (flat)"
    assert cells[3].startswith("yes on 1 (up +20.0 [+") and "; no on 1 (down -10.0 [-" in cells[3]
    assert cells[4].startswith("up 67 [") and ", down -33 [" in cells[4]
    assert _screen(W2SContext(tmp_path, [], {}, [], {})) == []  # nothing stored yet: no screen


def _noisy(seed: int, n: int = 80, width: int = 6, flip: float = 0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width))
    gold = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    weak = np.where(rng.random(n) < flip, 1 - gold, gold)
    return x, weak, rng.normal(size=(40, width))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_confidence_loss_with_alpha_0_is_plain_logistic_regression(n_classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, weak, x_eval = _noisy(n_classes)
    if n_classes == 3:
        weak = np.digitize(x[:, 0] + x[:, 2], [-0.5, 0.5])
    fit = confidence_fit_predict(x, weak, x_eval, n_classes, alpha=0.0, C=0.5)
    plain = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)).fit(x, weak)
    np.testing.assert_allclose(fit.log_proba, plain.predict_log_proba(x_eval), atol=2e-4)
    assert fit.rounds == 0 and fit.converged


def test_confidence_loss_sharpens_the_probe_towards_its_own_predictions():
    x, weak, _ = _noisy(0)  # 30% of the weak labels flipped at random
    plain = confidence_fit_predict(x, weak, x, 2, alpha=0.0)
    confident = confidence_fit_predict(x, weak, x, 2, alpha=0.75)
    assert confident.rounds >= 2 and confident.overruled > 0
    certainty = lambda fit: np.exp(fit.log_proba).max(1).mean()  # noqa: E731
    assert certainty(plain) < 0.7 < 0.8 < certainty(confident)  # trained towards its own hard labels, not the noise


def test_confidence_loss_overrules_weak_labels_a_probe_could_memorise():
    """More features than examples: plain logistic regression reproduces every weak label, so its own in-sample
    predictions would be the weak labels; cross-fitted ones still disagree where the other examples say so."""
    x, weak, _ = _noisy(1, n=60, width=80)
    plain = confidence_fit_predict(x, weak, x, 2, alpha=0.0)
    confident = confidence_fit_predict(x, weak, x, 2, alpha=0.75)
    assert (plain.log_proba.argmax(1) == weak).all()
    assert confident.overruled > 0 and (confident.log_proba.argmax(1) != weak).sum() > 0
    hard = harden(confident.log_proba, weak)
    assert hard.sum() == weak.sum()  # the adaptive threshold keeps the weak labels' class balance
    assert harden(np.log([[0.15, 0.8, 0.05], [0.5, 0.2, 0.3]]), weak[:2]).tolist() == [1, 0]  # more classes: argmax


@pytest.fixture()
def two_tiny_models(tmp_path_factory):
    folders = []
    for seed in (3, 4):
        folder = tmp_path_factory.mktemp(f"tiny-{seed}")
        model, tokenizer = make_tiny_lm(seed=seed)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(str(folder))
    return folders


def _rows(db) -> dict:
    with sqlite3.connect(db) as conn:
        return {r[:-1]: r[-1] for r in conn.execute("SELECT model, variant, seed, example_id, payload FROM records")}


def test_w2s_runs_end_to_end_and_resumes_without_recomputing(two_tiny_models, tmp_path, capsys, monkeypatch):
    from harness import w2s
    from harness.report_w2s import render
    from harness.store import Store

    monkeypatch.setenv("HARNESS_FEATURES_DIR", str(tmp_path / "features"))
    monkeypatch.setenv("HARNESS_NO_PROGRESS", "1")
    tasks = _write_tasks(tmp_path / "tasks")  # sentiment: 32 train, 16 val rows
    weak, strong = two_tiny_models
    out = tmp_path / "run"
    args = ["w2s", "--weak", weak, "--strong", strong, "--tasks-dir", str(tasks), "--tasks", "sentiment"]
    args += ["--weak-n", "12", "--strong-n", "16", "--confidence-loss", "0.5", "--out", str(out)]
    try:
        code, _, err = run_cli(args, capsys, monkeypatch)
        assert code == 0, err
        store = Store(out, create=False)
        infos = {**store.unit_infos(weak, "sentiment"), **store.unit_infos(strong, "sentiment")}
        store.close()
        assert sorted(infos) == [
            ("probe", "ceiling/input-only/n16/s0"), ("probe", "w2s-conf0.5/input-only/n16/s0"),
            ("probe", "w2s/input-only/n16/s0"), ("probe", "weak/input-only/n12/s0"),
        ]  # fmt: skip
        rows = _rows(out / "results.db")
        labelled = sorted(i for (m, v, _, i) in rows if v == "weak-labels")
        val = sorted(i for (m, v, _, i) in rows if v == "weak")
        assert len(labelled) == 16 and len(val) == 16 and not set(labelled) & set(val)
        a, b = w2s.W2STask(*_task(tasks)).samples(12, 16, 0)
        assert sorted(e.id for e in b) == labelled and not {e.id for e in a} & set(labelled)  # B: unseen by weak
        assert infos[("probe", "w2s/input-only/n16/s0")]["labels"] == f"{weak}'s predictions"
        assert infos[("probe", "w2s-conf0.5/input-only/n16/s0")]["confidence_loss"] == 0.5

        csv = pd.read_csv(out / "w2s.csv").set_index(["supervision", "quantity"])
        for side, model in (("weak", weak), ("w2s", strong), ("ceiling", strong)):
            hits = [np.argmax(_logprobs(rows, model, side, i)) == _gold(rows, model, side, i) for i in val]
            assert csv.loc[("w2s", side), "value"] == pytest.approx(np.mean(hits))
            assert csv.loc[("w2s", side), "n"] == 16
        report = (out / "report.md").read_text()
        assert "| sentiment | w2s | 16 | 1 |" in report and "| sentiment | w2s, confidence loss alpha=0.5 |" in report
        assert report.count("- sentiment, w2s") == 2  # a verdict line per supervision: recovers ... or undefined

        ran, loaded = [], []
        monkeypatch.setattr(w2s.Runner, "run_unit", lambda self, *a: ran.append(a))
        monkeypatch.setattr("harness.models.load_model", lambda *a, **k: loaded.append(a))
        code, _, err = run_cli(args, capsys, monkeypatch)  # the same command again
        assert code == 0, err
        assert "all 4 w2s units already stored" in err and ran == [] and loaded == []
        assert _rows(out / "results.db") == rows
        assert (out / "report.md").read_text() == report
        page = (out / "report.html").read_bytes()
        render(out)
        assert (out / "report.md").read_text() == report  # `harness report` re-renders it byte for byte
        assert (out / "report.html").read_bytes() == page
        code, _, err = run_cli([*args[:-2], "--strong-n", "14", "--out", str(out)], capsys, monkeypatch)
        assert "holds w2s results made with other settings (strong_n differ)" in err and code == 2
    finally:
        use_task_dirs([])


def _task(tasks):
    """(spec, template, val, train) of the tiny sentiment task, as the run plans it."""
    from harness.catalog import get_task
    from harness.loaders import DataSource
    from harness.prompts import load_prompts

    use_task_dirs([str(tasks)])
    spec = get_task("sentiment")
    data = DataSource(None)
    return spec, load_prompts(spec).get("input-only"), data.load(spec, "val"), data.load(spec, "train")


def _logprobs(rows, model, variant, example_id):
    import json

    return json.loads(rows[(model, variant, 0, example_id)])["logprobs"]


def _gold(rows, model, variant, example_id):
    import json

    return json.loads(rows[(model, variant, 0, example_id)])["gold"][0]


@pytest.mark.parametrize(
    "extra, flag, message",
    [
        (["--weak", "no-such-model", "--strong", "smollm2-135m"], "--weak", "unknown model 'no-such-model' (--weak)"),
        (["--weak", "smollm2-135m", "--strong", "smollm2-135m"], "--weak", "name the same model (smollm2-135m)"),
        (["--weak", "gemma3-270m", "--strong", "x.gguf"], "--strong", "GGUF file not found: x.gguf (--strong)"),
        (["--weak", " ", "--strong", "smollm2-135m"], "--weak", "--weak is empty"),
        (["--weak", "a/b", "--strong", "c/d", "--method", "bitfit"], "--method", "w2s trains probe"),
        (["--weak", "a/b", "--strong", "c/d", "--confidence-loss", "1.5"], "--confidence-loss", "must be in (0, 1)"),
    ],
)
def test_bad_flags_are_one_line_errors(extra, flag, message, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["w2s", *extra, "--out", str(tmp_path)], capsys, monkeypatch)
    assert message in assert_one_line(code, err, flag, message)
    assert not (tmp_path / "results.db").exists()  # refused before any store is made
