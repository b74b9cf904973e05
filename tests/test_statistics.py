"""Honest statistics: Wilson intervals, computed chance, ties that do not depend on float noise, Holm, and the
verdict rule (a verdict only where both sides beat the best constant answer and the trained unit converged)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import analyse
from harness.decompose import decompose, holm, inconclusive_reason, verdicts
from harness.metrics import Estimate, Resampler, baselines, expected_f1, p_value, wilson
from harness.report import render
from harness.store import Record, Store, UnitKey, VariantRecords
from tests.test_decompose import MODEL, N, _prompt, _trained


def test_wilson_interval_known_values():
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(1, 1) == pytest.approx((0.2065, 1.0), abs=1e-4)
    assert wilson(81, 100) == pytest.approx((0.7222, 0.8749), abs=1e-4)


def test_a_single_proportion_has_a_wilson_interval_never_zero_width():
    rs = Resampler(["a"])
    e = rs.mean(np.array([1.0]))
    assert e.proportion and e.n == 1
    lo, hi = e.ci
    assert (lo, hi) == pytest.approx((0.2065, 1.0), abs=1e-4) and lo < hi  # the bootstrap said [100, 100]
    # grouped answers (MultiRC) are not independent: their mean keeps the bootstrap over groups
    grouped = Resampler(["q1", "q1", "q2", "q2"]).mean(np.array([1.0, 0.0, 1.0, 1.0]))
    assert not grouped.proportion


def _choice_records(golds: list[int], choices: int) -> list[Record]:
    return [Record(str(i), str(i), [g], [-1.0] * choices) for i, g in enumerate(golds)]


def test_chance_is_computed_for_two_and_three_choices():
    two = _choice_records([0, 1, 1, 0, 1], 2)
    chance = baselines("rte", two, Resampler([r.group for r in two]), 2)["chance"]["acc"]
    assert chance.value == 0.5
    three = _choice_records([0] * 16 + [1] * 28 + [2] * 12, 3)  # CB's 56 val examples, by label
    cb = baselines("cb", three, Resampler([r.group for r in three]), 3)["chance"]
    assert cb["acc"].value == pytest.approx(1 / 3)  # the sampled chance read 35.6
    # macro-F1 under uniform guessing: the mean over classes of one class's exact expected F1 with p = 1/3
    expected = np.mean([expected_f1(n, 56 - n, 1 / 3) for n in (16, 28, 12)])
    assert cb["macro_f1"].value == pytest.approx(expected)
    rng = np.random.default_rng(0)
    gold = np.array([r.gold[0] for r in three])
    simulated = []
    for _ in range(4000):
        pred = rng.integers(0, 3, len(gold))
        f1 = [2 * ((pred == c) & (gold == c)).sum() / ((pred == c).sum() + (gold == c).sum()) for c in range(3)]
        simulated.append(np.mean(f1))
    assert np.mean(simulated) == pytest.approx(expected, abs=0.005)


def test_expected_f1_small_cases():
    assert expected_f1(1, 0, 0.3) == pytest.approx(0.3)  # F1 is 1 when the one positive is found, else 0
    assert expected_f1(1, 1, 0.5) == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)
    assert expected_f1(0, 5, 0.5) == 0.0


def test_ties_do_not_depend_on_float_noise():
    exact = Estimate(0.0, np.zeros(1000), 10)
    noisy = Estimate(0.0, np.random.default_rng(1).choice([-1e-16, 1e-16], 1000), 10)
    assert p_value(exact) == p_value(noisy) == 1.0
    half = Estimate(0.1, np.r_[np.zeros(500), np.full(500, 0.2)], 10)
    assert p_value(half) == 1.0  # 500 ties count on both sides


def test_holm_adjusts_step_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def _constant_records(answer: int, n: int = N) -> list[Record]:
    """A constant predictor: the same answer to every example (golds alternate, so it is right half the time)."""
    out = []
    for i in range(n):
        logprobs = [-3.0, -3.0]
        logprobs[answer] = -0.5
        out.append(Record(f"{i:03d}", f"{i:03d}", [i % 2], logprobs, n_chars=[3, 2]))
    return out


def _verdict_store(tmp_path, task_units) -> dict:
    store = Store(tmp_path)
    store.put_model(MODEL, 1_000_000, {"source": "hand-made"})
    for task, build in task_units.items():
        store.put_task(MODEL, task, {"n_eval": N})
        build(store, task)
    _, results = analyse(store)
    store.close()
    return {r.task: decompose(r) for r in results}


def test_verdict_rule_on_hand_made_stores(tmp_path):
    def constant_prompt(store, task):  # the best prompt answers one label throughout; the probe is good
        key = UnitKey(MODEL, task, "prompt", "gold/A/k0/s0")
        store.put_unit(key, [VariantRecords("gold", "A", 0, 0, _constant_records(0))], {"selection": {"acc": 0.5}})
        _trained(store, task, "probe", "probe", 90, 50, {"cv_curve": [0.9]})

    def constant_probe(store, task):  # a good prompt against a probe that answers one label throughout
        _prompt(store, task, "gold", "A", 0, 90, 0.9)
        for variant in ("probe", "probe-control"):
            key = UnitKey(MODEL, task, "probe", f"{variant}/input-only/n32/s0")
            store.put_unit(
                key, [VariantRecords(variant, "input-only", 32, 0, _constant_records(1))], {"cv_curve": [0.6]}
            )

    def tie_with_constant(store, task):  # a prompt exactly as good as the best constant answer
        _prompt(store, task, "gold", "A", 0, 50, 0.5)
        _trained(store, task, "bitfit", "bitfit", 85, 50, {"holdout_acc": 0.8, "converged": True})

    def overstates(store, task):  # both clear of the best constant answer; the prompt is better
        _prompt(store, task, "gold", "A", 0, 90, 0.9)
        _trained(store, task, "bitfit", "bitfit", 70, 50, {"holdout_acc": 0.7, "converged": True})

    def capped(store, task):  # the same, but the trained unit stopped at its step cap
        _prompt(store, task, "gold", "A", 0, 70, 0.9)
        _trained(store, task, "bitfit", "bitfit", 90, 50, {"holdout_acc": 0.9, "converged": False})

    builds = {"rte": constant_prompt, "wic": constant_probe, "boolq": tie_with_constant, "wsc": overstates}
    builds["copa"] = capped
    d = _verdict_store(tmp_path, builds)
    found = verdicts(list(d.values()))
    assert found == {
        "rte": "inconclusive",
        "wic": "inconclusive",
        "boolq": "inconclusive",
        "wsc": "overstates",
        "copa": "inconclusive",
    }
    assert inconclusive_reason(d["rte"]) == "best prompt not above the best constant answer at n=100"
    assert inconclusive_reason(d["wic"]) == "ecological not above the best constant answer at n=100"
    assert inconclusive_reason(d["boolq"]) == "best prompt not above the best constant answer at n=100"
    assert inconclusive_reason(d["copa"]) == "ecological unit hit its step or time cap (not converged)"
    assert inconclusive_reason(d["wsc"]) is None and d["wsc"].ecological_converged is True
    report = render(tmp_path).read_text()
    assert "overstates it on 1 (wsc)" in report and "Inconclusive on 4:" in report


def test_report_is_the_same_under_perturbed_float_summation(tmp_path, monkeypatch):
    """Two constant predictors with the same score: every resampled difference is 0 in exact arithmetic. Float
    noise of either sign in the resamples must not move a p-value or a verdict."""

    def build(store, task):
        for template in ("A", "B"):
            key = UnitKey(MODEL, task, "prompt", f"gold/{template}/k0/s0")
            store.put_unit(
                key, [VariantRecords("gold", template, 0, 0, _constant_records(0))], {"selection": {"acc": 0.5}}
            )
        _trained(store, task, "probe", "probe", 50, 50, {"cv_curve": [0.5]})

    _verdict_store(tmp_path, {"rte": build})
    first = render(tmp_path).read_text()
    original = Resampler.mean
    rng = np.random.default_rng(3)

    def noisy_mean(self, x, mask=None):
        e = original(self, x, mask)
        return Estimate(e.value, e.samples + rng.choice([-1e-15, 1e-15], e.samples.shape), e.n, e.proportion)

    monkeypatch.setattr(Resampler, "mean", noisy_mean)
    assert render(tmp_path).read_text() == first
