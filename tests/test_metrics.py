"""Metrics against scikit-learn and hand computations; bootstrap intervals that behave."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from harness.metrics import Resampler, baselines, exact_match, predictions, task_metrics, token_f1, unit_metrics
from harness.store import Record


def _records(golds, preds, n_choices=2, groups=None):
    out = []
    for i, (g, p) in enumerate(zip(golds, preds)):
        logprobs = [-5.0] * n_choices
        logprobs[p] = -1.0
        out.append(Record(str(i), groups[i] if groups else str(i), [g], logprobs, n_chars=[3] * n_choices))
    return out


def test_accuracy_and_interval():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.7, gold, 1 - gold)
    records = _records(gold, pred)
    rs = Resampler([r.group for r in records])
    acc = task_metrics("rte", records, predictions(records), rs, 2)["acc"]
    assert acc.value == pytest.approx((gold == pred).mean())
    lo, hi = acc.ci
    assert lo < acc.value < hi
    # the normal-approximation half-width is about 1.96 * sqrt(p(1-p)/n) = 6.4 points
    assert 0.045 < (hi - lo) / 2 < 0.085


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 60)
    pred = rng.integers(0, 3, 60)
    records = _records(gold, pred, n_choices=3)
    rs = Resampler([r.group for r in records])
    got = task_metrics("cb", records, predictions(records), rs, 3)["macro_f1"].value
    assert got == pytest.approx(f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0))


def test_multirc_f1a_and_em():
    gold = [1, 0, 1, 1, 0, 0]
    pred = [1, 0, 0, 1, 1, 0]
    groups = ["q1", "q1", "q2", "q2", "q3", "q3"]
    records = _records(gold, pred, groups=groups)
    rs = Resampler(groups)
    m = task_metrics("multirc", records, predictions(records), rs, 2)
    assert m["f1a"].value == pytest.approx(f1_score(gold, pred))
    assert m["em"].value == pytest.approx(1 / 3)  # only q1 is all right
    assert m["em"].n == 3


def test_record_token_f1_and_em():
    assert token_f1("the Barack Obama", "Obama") == pytest.approx(2 / 3)
    assert exact_match("The Obama!", "obama") == 1.0
    record = Record(
        "q", "q", [1], [-3.0, -1.0], choice_texts=["Paris", "Barack Obama"], gold_texts=["Obama", "Barack Obama"]
    )
    rs = Resampler(["q"])
    m = task_metrics("record", [record], predictions([record]), rs, 0)
    assert m["f1"].value == 1.0 and m["em"].value == 1.0


def test_acc_norm_divides_by_characters():
    r = Record("0", "0", [1], [-4.0, -6.0], n_chars=[2, 12])
    assert predictions([r])[0] == 0
    assert predictions([r], normalise=True)[0] == 1


def test_diagnostics():
    records = [
        Record("0", "0", [0], [-1.0, -2.0], valid_mass=0.9, top1_valid=True, gold_rank=1, n_chars=[1, 1]),
        Record("1", "1", [0], [-2.0, -1.0], valid_mass=0.1, top1_valid=False, gold_rank=40, n_chars=[1, 1]),
        Record("2", "2", [1], [-2.0, -1.0], valid_mass=0.5, top1_valid=True, gold_rank=3, n_chars=[1, 1]),
    ]
    rs = Resampler([r.group for r in records])
    m = unit_metrics("rte", "gold", records, rs, 2)
    assert m["attempt_rate"].value == pytest.approx(0.5)
    assert m["top1_valid"].value == pytest.approx(2 / 3)
    assert m["acc_when_attempted"].value == pytest.approx(1.0)  # both attempted ones are right
    assert m["acc"].value == pytest.approx(2 / 3)
    assert m["median_gold_rank"].value == 3


def test_weighted_median_samples_are_medians_of_resamples():
    x = np.array([1.0, 5.0, 9.0, 2.0, 7.0])
    rs = Resampler([str(i) for i in range(5)], n=50)
    est = rs.median(x)
    for b in range(50):
        drawn = np.repeat(x, rs.example_weights[b].astype(int))
        assert est.samples[b] == np.sort(drawn)[(len(drawn) - 1) // 2]


def test_chance_and_majority():
    gold = [0] * 30 + [1] * 10
    records = _records(gold, gold)
    rs = Resampler([r.group for r in records])
    base = baselines("rte", records, rs, 2)
    assert base["majority"]["acc"].value == pytest.approx(0.75)
    assert base["chance"]["acc"].value == pytest.approx(0.5, abs=0.02)
    assert base["constant"]["acc"].value == pytest.approx(0.75)  # for accuracy, the majority label


def test_best_constant_answer_for_multirc_is_yes_to_everything():
    gold = [1, 0, 0, 1, 0, 0, 1, 0]  # "no" is the majority, whose F1 on "yes" is 0
    groups = ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"]
    records = _records(gold, gold, groups=groups)
    base = baselines("multirc", records, Resampler(groups), 2)
    assert base["majority"]["f1a"].value == 0.0
    assert base["constant"]["f1a"].value == pytest.approx(f1_score(gold, [1] * 8))  # 2 * 3/8 / (1 + 3/8)
