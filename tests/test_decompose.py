"""The guess-vs-do decomposition on hand-made records: the arithmetic, what is picked on train, undefined ratios."""

from __future__ import annotations

import math

import pytest

from harness.analysis import analyse
from harness.decompose import decompose
from harness.metrics import p_value
from harness.report import render
from harness.store import Record, Store, UnitKey, VariantRecords

N = 100
MODEL = "tiny"


def _records(n_correct: int, n: int = N) -> list[Record]:
    """RTE-like records: the first `n_correct` examples right, the rest wrong, so every pair of units is nested
    (differences are as tight as they can be) and accuracies are exact."""
    out = []
    for i in range(n):
        gold = i % 2
        pred = gold if i < n_correct else 1 - gold
        logprobs = [-3.0, -3.0]
        logprobs[pred] = -0.5
        out.append(
            Record(f"{i:03d}", f"{i:03d}", [gold], logprobs, n_chars=[3, 2], valid_mass=0.5, top1_valid=i % 4 != 0)
        )
    return out


def _prompt(store, task, variant, template, k, n_correct, train_acc=None, model=MODEL):
    info = {"variants": [variant]}
    if train_acc is not None:
        info["selection"] = {"n": 16, "acc": train_acc}
    key = UnitKey(model, task, "prompt", f"{variant}/{template}/k{k}/s0")
    store.put_unit(key, [VariantRecords(variant, template, k, 0, _records(n_correct))], info)


def _trained(store, task, method, variant, n_correct, control_correct, info, model=MODEL):
    for stored, correct in ((variant, n_correct), (variant + "-control", control_correct)):
        key = UnitKey(model, task, method, f"{stored}/lm-eval/n32/s0")
        store.put_unit(key, [VariantRecords(stored, "lm-eval", 32, 0, _records(correct))], info)


def _store(tmp_path, with_train_scores=True):
    store = Store(tmp_path)
    store.put_model(MODEL, 1_000_000, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
    store.put_task(MODEL, "rte", {"n_eval": N})
    t = with_train_scores
    _prompt(store, "rte", "control", "null", 0, 50)
    # template A is worse on eval at k=0 but better on train: the decomposition must pick A
    _prompt(store, "rte", "gold", "A", 0, 60, 0.7 if t else None)
    _prompt(store, "rte", "gold", "B", 0, 70, 0.5 if t else None)
    _prompt(store, "rte", "gold", "A", 4, 80, 0.8 if t else None)
    _prompt(store, "rte", "gold", "B", 4, 76, 0.6 if t else None)
    _prompt(store, "rte", "random_labels", "A", 4, 72)
    _prompt(store, "rte", "random_labels", "B", 4, 70)
    # prompt tuning has the better held-out accuracy, BitFit the better eval score: prompt tuning is picked
    _trained(
        store, "rte", "ptune", "prompt-tuning", 90, 55, {"holdout_acc": 0.9, "trained_params": 10, "converged": True}
    )
    _trained(store, "rte", "bitfit", "bitfit", 95, 52, {"holdout_acc": 0.6, "trained_params": 20, "converged": True})

    # wic: the demos do nothing (k=4 one point above control), so the shares are undefined, not huge
    store.put_task(MODEL, "wic", {"n_eval": N})
    _prompt(store, "wic", "control", "null", 0, 50)
    _prompt(store, "wic", "gold", "A", 0, 50, 0.5 if t else None)
    _prompt(store, "wic", "gold", "A", 4, 51, 0.5 if t else None)
    _prompt(store, "wic", "random_labels", "A", 4, 51)
    _trained(
        store,
        "wic",
        "probe",
        "probe",
        51,
        50,
        {"cv_curve": [0.5, 0.52], "eval_curve": [0.5, 0.51], "layer": 1, "layers": [0, 1]},
    )
    return store


def _decompositions(store):
    _, results = analyse(store)
    return {r.task: decompose(r) for r in results}


def test_ladder_and_derived_quantities(tmp_path):
    d = _decompositions(_store(tmp_path))["rte"]
    assert d.control.value == pytest.approx(0.50)
    assert d.constant.value == pytest.approx(0.50)  # golds alternate: any one answer is right half the time
    assert d.zero_mean.value == pytest.approx(0.65)
    assert d.few_mean.value == pytest.approx(0.78)
    assert d.random_labels_few.value == pytest.approx(0.71)
    # picked on train, never on eval
    assert d.zero_selected.label == "A, k=0" and d.zero_selected.estimate.value == pytest.approx(0.60)
    assert d.few_selected.label == "A, k=4" and d.few_selected.estimate.value == pytest.approx(0.80)
    assert d.best_prompt.label == "A, k=4"
    assert d.ecological.label == "prompt-tuning, n=32" and d.ecological.estimate.value == pytest.approx(0.90)
    assert d.ecological.train_score == pytest.approx(0.9)
    # elicitation gap = ecological - best prompt, paired over examples
    assert d.elicitation_gap.value == pytest.approx(0.10)
    lo, hi = d.elicitation_gap.ci
    assert 0 < lo <= 0.10 <= hi
    assert p_value(d.elicitation_gap) < 0.01
    assert d.guess_share.estimate.value == pytest.approx(15 / 28)
    assert d.demo_format_share.estimate.value == pytest.approx(6 / 13)
    assert d.spread_zero.value == pytest.approx(0.10)
    assert d.spread_share_of_gap.estimate.value == pytest.approx(1.0)
    rate, acc = d.attempts["zero-shot"]
    assert rate.value == pytest.approx(0.5)
    attempted = [i for i in range(N) if i % 4 != 0]
    per_template = [sum(i < correct for i in attempted) / len(attempted) for correct in (60, 70)]
    assert acc.value == pytest.approx(sum(per_template) / 2)  # mean over templates A and B
    assert "ecological (prompt-tuning, n=32)" in d.attempts


def test_undefined_ratios_are_shown_as_such(tmp_path):
    d = _decompositions(_store(tmp_path))["wic"]
    assert d.guess_share.estimate is None and "not positive and clear of 0" in d.guess_share.why_undefined
    assert d.guess_share.denominator.value == pytest.approx(0.01)  # shown with the cell, in points
    assert d.demo_format_share.estimate is None
    assert d.ecological.label == "probe, n=32" and d.ecological.train_score == pytest.approx(0.52)
    assert d.elicitation_gap.value == pytest.approx(0.01)
    assert d.spread_share_of_gap is None  # one template: no spread


def test_without_train_scores_nothing_is_picked(tmp_path):
    d = _decompositions(_store(tmp_path, with_train_scores=False))["rte"]
    assert d.zero_selected is None and d.best_prompt is None and d.elicitation_gap is None
    assert d.ecological is not None  # trained methods carry their own train-side scores
    assert d.guess_share.estimate.value == pytest.approx(15 / 28)  # means over templates need no choice


def test_report_section_and_byte_identical_rerender(tmp_path):
    _store(tmp_path).close()
    first = render(tmp_path).read_text()
    assert "### Guess vs do" in first
    assert "understates the model's capability on 1 of 2 tasks (rte)" in first
    # wic's best prompt (51) and probe (50) do not beat answering one label throughout (50): no verdict there
    assert "not significantly different on 0 (paired bootstrap, Holm-corrected" in first
    assert "Inconclusive on 1: wic (best prompt and ecological not above the best constant answer at n=100)." in first
    assert "+10.0 [" in first  # rte's gap in points
    assert "undefined (denominator +1.0 [" in first
    # wic's best prompt (51%) is one example above answering one label throughout (50%): not clear of it
    assert "On 1 task (wic) the best prompt does not significantly beat the best constant answer" in first
    csv = (tmp_path / "summary.csv").read_bytes()
    assert render(tmp_path).read_text() == first
    assert (tmp_path / "summary.csv").read_bytes() == csv


def test_p_value_of_a_difference_centred_on_zero_is_large():
    import numpy as np

    from harness.metrics import Estimate

    e = Estimate(0.0, np.linspace(-1, 1, 1001), 10)
    assert p_value(e) == pytest.approx(1.0)
    assert math.isnan(p_value(Estimate(0.0, np.full(5, np.nan), 1)))


def test_scaling_slopes_and_headline(tmp_path):
    """Three sizes a decade apart: the best prompt gains 10 points per decade, the ecological method 4."""
    from harness.scaling import family, slope, task_scaling

    store = Store(tmp_path)
    for i, (name, params) in enumerate([("fam-1m", 10**6), ("fam-10m", 10**7), ("other-100m", 10**8)]):
        info = {"source": "hand-made", "instruction_tuned": i == 2, "quantized_source": i == 0}
        store.put_model(name, params, info)
        store.put_task(name, "rte", {"n_eval": N})
        store.put_task(name, "record", {"skipped": "no val split here"})
        _prompt(store, "rte", "control", "null", 0, 50, model=name)
        _prompt(store, "rte", "gold", "A", 0, 55 + 10 * i, 0.6, model=name)
        _prompt(store, "rte", "gold", "A", 4, 60 + 10 * i, 0.7, model=name)
        _trained(store, "rte", "bitfit", "bitfit", 80 + 4 * i, 50, {"holdout_acc": 0.8, "converged": True}, model=name)
    _, results = analyse(store)
    rows = [(r.model, p, decompose(r)) for r in results for m, p, _ in store.models() if m == r.model]
    s = task_scaling("rte", rows)
    assert s.slopes["best prompt"].value == pytest.approx(0.10)
    assert s.slopes["ecological"].value == pytest.approx(0.04)
    assert s.slopes["control"].value == pytest.approx(0.0)
    assert s.headline.value == pytest.approx(0.06)
    lo, hi = s.headline.ci
    assert lo < 0.06 < hi  # two valid sizes only (fam-1m's best prompt is not above the best constant answer)
    assert slope(s.points["best prompt"][:1]) is None  # one size: no slope
    assert family("qwen2.5-coder-1.5b") == "qwen2.5-coder" and family("smollm2-135m") == "smollm2"
    store.close()

    report = render(tmp_path).read_text()
    assert report.index("## Across sizes") < report.index("## fam-1m")
    assert "Mixed families (fam, other)" in report
    assert "Instruction-tuned (other-100m) and base (fam-1m, fam-10m)" in report
    assert "de-quantized from GGUF (fam-1m)" in report
    assert "-0.0" not in report  # a flat control line reads +0.0
    assert "prompt-based scaling is off by +6.0 [" in report
    # the section opens with its summary in numbers, before any table
    summary = report[report.index("## Across sizes") :].split("\n")[2]
    assert summary.startswith("**Summary.**") and report.index(summary) < report.index("| model | params |")
    assert (
        "From the smallest model to the largest (fam-1m, fam-10m, other-100m), the best prompt significantly "
        "understates the trained ceiling on 0, 1, 1 tasks and overstates it on 0, 0, 0 (of 1, 1, 1 measured); "
        "it beats the best constant answer on 0, 1, 1, the ecological method on 1, 1, 1."
    ) in summary
    half_width = (s.headline.ci[1] - s.headline.ci[0]) * 50
    assert (
        f"Measured on {N} eval examples per task (median), one task's slope difference is known to ±{half_width:.1f} "
        in summary
    )
    assert summary.endswith("`record` is not evaluated for any model: no val split here.")
    assert "Ecological here is the best of: bitfit." in report
    # per model, smallest first: ecological 80/84/88 against the best prompt 60/70/80, each significant
    # and against answering one label throughout (50%): 80, 84, 88 clear it; a best prompt of 60 on 100 examples
    # does not (z about 1.4), 70 and 80 do
    # fam-1m's best prompt does not beat the best constant answer: inconclusive, and left out of the slopes
    assert "| fam-1m | 1.0M | 0 | 0 | 0 | 1 (rte) | +20.0 (+20.0 to +20.0) | 0 / 1 (rte) |" in report
    assert "| other-100m | 100.0M | 1 (rte) | 0 | 0 | 0 | +8.0 (+8.0 to +8.0) | 1 (rte) / 1 (rte) |" in report
    assert report.index("| fam-10m | 10.0M | 1 (rte) | 0 | 0 | 0 | +14.0") < report.index(
        "| other-100m | 100.0M | 1 (rte)"
    )
    assert s.valid_models == ["fam-10m", "other-100m"]
    assert "uses only the models whose comparison is valid on a task" in report and ": 2 of 3 (model, task)" in report
    assert (tmp_path / "plots" / "scaling.png").is_file()
    for name, alt in (
        ("attempts", "attempt rate across the ladder against size"),
        ("gap", "elicitation gap against size"),
        ("slopes", "per-task slopes, best prompt vs ecological"),
    ):
        assert f"![{alt}](plots/scaling-{name}.png)" in report
        assert (tmp_path / "plots" / f"scaling-{name}.png").stat().st_size > 1000
    assert render(tmp_path).read_text() == report


def test_a_parameter_count_off_the_model_card_is_stated(tmp_path):
    from harness.report_scaling import caveats

    models = [("qwen2.5-coder-0.5b", 630_167_424, {}), ("smollm2-135m", 134_515_008, {})]
    lines = caveats(models)
    assert any("qwen2.5-coder-0.5b runs with 630.2M parameters where its model card says 494.0M" in c for c in lines)
    assert not any("smollm2-135m runs with" in c for c in lines)


def test_a_ratio_of_a_negative_denominator_is_undefined():
    """A share of a loss reads as its opposite: demos that lower the score have no 'share that came from format'."""
    import numpy as np

    from harness.decompose import ratio
    from harness.metrics import Estimate

    loss = Estimate(-0.1, np.linspace(-0.15, -0.05, 1000), 100)
    found = ratio(Estimate(-0.05, np.linspace(-0.1, 0.0, 1000), 100), loss, "few-shot - zero-shot")
    assert found.estimate is None and found.why_undefined.startswith("few-shot - zero-shot is -10.0 [")
    gain = Estimate(0.1, np.linspace(0.05, 0.15, 1000), 100)
    assert ratio(Estimate(0.05, np.linspace(0.0, 0.1, 1000), 100), gain, "x").estimate.value == pytest.approx(0.5)
