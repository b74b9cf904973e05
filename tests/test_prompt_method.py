"""The prompt method: unit planning, fixed demo sets, random labels, calibration, records."""

from __future__ import annotations

import math

import pytest

from harness.catalog import get_task
from harness.engine import Engine
from harness.errors import HarnessError
from harness.loaders import DataSource, load_train, resolve_train_source
from harness.methods.prompt import (
    PromptUnit,
    build_prefix,
    calibrate,
    draw_demos,
    plan_units,
    random_label_seed,
    run_unit,
    score_selection,
    selection_examples,
)
from harness.prompts import load_prompts
from harness.store import Record
from harness.tasks import stratified_subset


@pytest.fixture(scope="module")
def rte(superglue_dir):
    data = DataSource(superglue_dir)
    spec = get_task("rte")
    train = load_train(spec, resolve_train_source("auto", data), data)
    return spec, load_prompts("rte"), stratified_subset(data.load(spec, "val"), 8, 0), train


def test_plan_units_counts(rte):
    spec, prompts, _, train = rte
    units = plan_units(prompts, [0, 1, 4], 3, None, "random", len(train), random_label_shots=[4])
    n_templates, n_controls = len(prompts.templates), len(prompts.controls)
    assert len(units) == n_templates * (1 + 3 + 3 + 3) + n_controls
    assert len(set(u.key for u in units)) == len(units)
    first = plan_units(prompts, [0, 4], 3, ["lm-eval"], "first", len(train), random_label_shots=[4])
    assert [u.key for u in first] == [
        "gold/lm-eval/k0/s0",
        "gold/lm-eval/k4/s0",
        "random_labels/lm-eval/k4/s0",
        "control/input-only/k0/s0",
        "control/content-free/k0/s0",
    ]


def test_k_larger_than_train_is_an_error(rte):
    _, prompts, _, train = rte
    with pytest.raises(HarnessError, match="--shots 64 is larger than the train set of rte \\(32 examples\\)"):
        plan_units(prompts, [0, 64], 1, None, "random", len(train))


def test_demo_sets_are_fixed_per_k_and_seed(rte):
    _, _, _, train = rte
    a = draw_demos(train, 4, 0, "random", "rte")
    assert [d.id for d in a] == [d.id for d in draw_demos(train, 4, 0, "random", "rte")]
    assert [d.id for d in a] != [d.id for d in draw_demos(train, 4, 1, "random", "rte")]
    assert draw_demos(train, 3, 5, "first", "rte") == train[:3]


def test_random_label_prefix_keeps_inputs_and_changes_labels(rte):
    spec, prompts, _, train = rte
    template = prompts.get("lm-eval")
    demos = draw_demos(train, 16, 0, "random", "rte")
    gold = build_prefix(template, prompts, demos, None, spec)
    shuffled = build_prefix(template, prompts, demos, "seed", spec)
    assert gold != shuffled
    strip = [line for line in gold.splitlines() if not line.startswith("Answer:")]
    assert strip == [line for line in shuffled.splitlines() if not line.startswith("Answer:")]
    assert gold.endswith("\n\n") and gold.count("\n\n") == 16


def test_calibration_divides_by_the_content_free_probabilities():
    record = Record("0", "0", [1], [math.log(0.6), math.log(0.2)], n_chars=[4, 5])
    calibrated = calibrate(record, [math.log(0.9), math.log(0.05)])
    probs = [math.exp(x) for x in calibrated.logprobs]
    expected = [0.75 / 0.9, 0.25 / 0.05]  # renormalised p / p_cf
    assert probs == pytest.approx([e / sum(expected) for e in expected])
    assert calibrated.logprobs[1] > calibrated.logprobs[0]


def test_run_unit_on_a_tiny_model(rte, tiny_lm):
    spec, prompts, examples, train = rte
    engine = Engine(*tiny_lm)
    outputs = run_unit(PromptUnit("lm-eval", 4, 0), spec, prompts, engine, examples, train, "random")
    outputs += run_unit(
        PromptUnit("lm-eval", 4, 0, kind="random_labels"), spec, prompts, engine, examples, train, "random"
    )
    assert [o.variant for o in outputs] == ["gold", "calibrated", "random_labels"]
    for out in outputs:
        assert [r.example_id for r in out.records] == [e.id for e in examples]
        assert all(len(r.logprobs) == 2 and r.gold == [e.label] for r, e in zip(out.records, examples))
    gold = outputs[0].records[0]
    assert 0 <= gold.valid_mass <= 1 and gold.gold_rank >= 1 and min(gold.n_tokens) >= 1
    demos = draw_demos(train, 4, 0, "random", "rte")
    label_seed = random_label_seed("rte", 4, 0)
    assert build_prefix(prompts.get("lm-eval"), prompts, demos, None, spec) != build_prefix(
        prompts.get("lm-eval"), prompts, demos, label_seed, spec
    )
    assert outputs[0].records[0].logprobs != outputs[2].records[0].logprobs  # other demo labels, other scores
    control = run_unit(
        PromptUnit("content-free", 0, 0, kind="control"), spec, prompts, engine, examples, None, "random"
    )
    assert [o.variant for o in control] == ["control"]
    first = control[0].records[0].logprobs
    assert all(r.logprobs == pytest.approx(first) for r in control[0].records)  # the same prompt for every example


def test_selection_scores_train_examples_outside_the_demos(rte, tiny_lm):
    spec, prompts, examples, train = rte
    engine = Engine(*tiny_lm)
    unit = PromptUnit("lm-eval", 4, 0)
    demos = draw_demos(train, 4, 0, "random", "rte")
    chosen = selection_examples(train, demos, "rte")
    assert len(chosen) == 16 and not {e.id for e in chosen} & {d.id for d in demos}
    assert chosen == selection_examples(train, demos, "rte")  # seeded
    selection = score_selection(unit, spec, prompts, engine, examples[0], train, "random")
    # the same numbers as scoring those train examples as if they were the eval set
    gold, calibrated = run_unit(unit, spec, prompts, engine, chosen, train, "random")

    def accuracy(records):
        return sum(max(range(2), key=r.logprobs.__getitem__) in r.gold for r in records) / len(records)

    assert selection["n"] == 16
    assert selection["acc"] == pytest.approx(accuracy(gold.records))
    assert selection["calibrated_acc"] == pytest.approx(accuracy(calibrated.records))
    assert (
        score_selection(
            PromptUnit("lm-eval", 4, 0, "random_labels"), spec, prompts, engine, examples[0], train, "random"
        )
        is None
    )
    assert score_selection(unit, spec, prompts, engine, examples[0], None, "random") is None
