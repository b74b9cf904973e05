"""The report's first screen (about.md, then the answer per model and task) and the learning-curve figure, on
hand-made stores."""

from __future__ import annotations

from harness.analysis import analyse
from harness.report import render
from harness.report_curves import curves
from harness.store import Store, UnitKey, VariantRecords
from tests.test_decompose import MODEL, N, _prompt, _records, _store


def _probe(store, task, variant, n, n_correct, cv):
    key = UnitKey(MODEL, task, "probe", f"{variant}/input-only/n{n}/s0")
    store.put_unit(key, [VariantRecords(variant, "input-only", n, 0, _records(n_correct))], {"cv_curve": [cv]})


def test_first_screen_gives_about_then_each_tasks_answer(tmp_path):
    store = _store(tmp_path)  # rte: prompt tuning 90 vs best prompt 80, converged; wic: nothing beats constant
    store.close()
    (tmp_path / "about.md").write_text("**Pipeline demo**: supports no claim.\n", encoding="utf-8")
    text = render(tmp_path).read_text(encoding="utf-8")
    head = text[: text.index("Produced by") if "Produced by" in text else text.index("## tiny")]
    assert head.startswith("# harness report\n\n**Pipeline demo**: supports no claim.\n\n## What the evidence")
    head = head[head.index("## The answer") :]  # after the first screen (tests/test_report_screen.py)
    assert "**tiny**: a verdict on 1 of 2 tasks; ecological read at the largest train size run (n=32)." in head
    rows = {line.split(" | ")[0].strip("| "): line for line in head.splitlines() if line.startswith("| ")}
    rte, wic = rows["rte"].split(" | "), rows["wic"].split(" | ")
    assert rte[1] == str(N) and rte[2] == "50.0"  # n, best constant
    assert rte[3].startswith("80.0 [") and "(A, k=4)" in rte[3]
    assert rte[4].startswith("90.0 [") and "(prompt-tuning, n=32)" in rte[4]
    assert rte[5].startswith("+10.0 [") and "p<0.001" in rte[5]
    assert rte[6] == "prompting **understates** |"
    assert wic[6].startswith("inconclusive: best prompt and ecological not above the best constant answer at n=100")


def test_no_about_file_no_preamble(tmp_path):
    _store(tmp_path).close()
    assert (
        render(tmp_path).read_text(encoding="utf-8").startswith("# harness report\n\n## What the evidence supports\n")
    )


def test_learning_curves_and_the_rung_read_at_the_largest_size(tmp_path):
    store = Store(tmp_path)
    store.put_model(MODEL, 1_000_000, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
    store.put_task(MODEL, "rte", {"n_eval": N})
    _prompt(store, "rte", "gold", "A", 0, 60, 0.6)
    # the probe improves with train size; at n=8 its CV score is the best, but the rung is read at n=128
    for n, correct, cv in ((8, 55, 0.95), (32, 70, 0.7), (128, 85, 0.8)):
        _probe(store, "rte", "probe", n, correct, cv)
        _probe(store, "rte", "probe-random-init", n, 52, 0.5)
        _probe(store, "rte", "probe-control", n, 50, 0.5)
    store.close()
    _, results = analyse(Store(tmp_path, create=False))
    found = curves(results[0])
    assert set(found) == {("probe", "probe"), ("probe", "probe-random-init")}  # the permuted-label check is not a curve
    assert [(n, round(v, 1)) for n, v, _, _ in found[("probe", "probe")]] == [(8, 55.0), (32, 70.0), (128, 85.0)]
    for _, value, lo, hi in found[("probe", "probe")]:
        assert lo < value < hi
    text = render(tmp_path).read_text(encoding="utf-8")
    assert (tmp_path / "plots" / "tiny-learning-curves.png").stat().st_size > 10_000
    assert "![learning curves](plots/tiny-learning-curves.png)" in text
    assert "ecological read at the largest train size run (n=128)" in text
    row = next(line for line in text.splitlines() if line.startswith("| rte | 100 |"))
    assert "85.0 [" in row and "(probe, n=128)" in row


def test_one_train_size_draws_no_curve(tmp_path):
    _store(tmp_path).close()
    render(tmp_path)
    assert not (tmp_path / "plots" / "tiny-learning-curves.png").exists()


def test_about_is_an_input_not_an_output(tmp_path):
    """Re-rendering keeps about.md as written (it is the store's reader-facing statement, never overwritten)."""
    _store(tmp_path).close()
    (tmp_path / "about.md").write_text("Evidence at n=100.\n", encoding="utf-8")
    first = render(tmp_path).read_bytes()
    assert b"\n\nEvidence at n=100.\n\n## What the evidence supports" in first
    assert (tmp_path / "about.md").read_text(encoding="utf-8") == "Evidence at n=100.\n"
    assert render(tmp_path).read_bytes() == first
